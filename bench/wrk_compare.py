"""LLM Edge (and optionally another checkout of it) beside Portkey, measured from outside with `wrk` in front
of an nginx upstream that answers a chat completion after a fixed delay, each gateway pinned to one core.

    .venv/bin/python bench/wrk_compare.py --out bench-results/wrk [--baseline CHECKOUT] [--rounds 3]

- The upstream is nginx with the echo module (`echo_sleep`, a timer in nginx's event loop: a true 50 ms,
  no Python in the way), answering every POST with one fixed OpenAI chat completion (`echo_exec` to a
  `return 200`, so the answer has a Content-Length as an API's does, not the echo module's chunks).
- Gateways run under `taskset -c 1` (every process they start inherits it: for LLM Edge the nats-server
  and the four services, for Portkey its one node process); wrk and nginx under `taskset -c 0`.
- All systems are started once and measured in interleaved rounds (for each round, each concurrency,
  each system in turn, in reverse order every other round), so a comparison is made in the same minutes
  on a machine whose load varies.
- A point: `wrk -t1 -cC` for `--warmup` s (not counted), then for `--duration` s. Misses are unique prompts
  with `Cache-Control: no-store`, as `bench/compare.py` sends them; hits repeat one primed prompt. The
  gateway's CPU per request is its process tree's utime + stime over the measured run divided by the
  requests wrk completed. Any socket error or non-2xx answer is reported beside the point.
- Added latency = the system's p50 minus the upstream's own (`direct`) p50 at the same concurrency in
  the same round. The tables give the median over the rounds, and each round's values.

Needs `wrk`, `nginx` with the echo module (Debian: `make bench-tools`), and node + npm for Portkey
(installed into bench/.venvs/portkey on first use, pinned to `PORTKEY_VERSION`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `bench` is then importable from the repository root
# importable only once the path above is set
from bench.compare import RUNNING, Portkey, Service, Unavailable, clean_env, http_ok  # noqa: E402
from bench.procs import free_port, process_tree  # noqa: E402
from bench.summary import machine  # noqa: E402

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
TICK = os.sysconf("SC_CLK_TCK")
UPSTREAM_MODEL = "gpt-4o-mini"
# One answer, in the shape of OpenAI's documented chat completion object.
COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": UPSTREAM_MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    "system_fingerprint": "fp_bench",
}, separators=(",", ":"))

NGINX_CONF = """\
load_module {module};
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location = /answer {{
            internal;
            default_type application/json;
            return 200 '{body}';
        }}
        location / {{
            echo_read_request_body;
            echo_sleep {seconds};
            echo_exec /answer;
        }}
    }}
}}
"""

# wrk's Lua: the request (unique prompts when asked), and the figures printed as one JSON line at the end.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{headers}
local n = 0
local fixed = '{{"model":"{model}","messages":[{{"role":"user","content":"bench fixed prompt"}}],"max_tokens":16}}'
request = function()
  if not {unique} then return wrk.format(nil, nil, nil, fixed) end
  n = n + 1
  return wrk.format(nil, nil, nil,
    '{{"model":"{model}","messages":[{{"role":"user","content":"bench {run} ' .. n .. '"}}],"max_tokens":16}}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\\n', summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


@dataclass
class Target:
    """One row of the tables: a URL, the model and headers it takes, and the process tree that serves it."""

    label: str
    url: str
    model: str
    headers: list[str]
    unique: bool = True
    service: Service | None = None
    version: str = ""


def cpu_seconds(root: int) -> float:
    total = 0.0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return total


def start_nginx(out: Path, latency_ms: float) -> tuple[Service, str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not ECHO_MODULE.exists():
        raise Unavailable("nginx with the echo module is needed: make bench-tools")
    port = free_port()
    home = out / "nginx"
    (home / "body").mkdir(parents=True, exist_ok=True)
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(module=ECHO_MODULE, dir=home, port=port, seconds=f"{latency_ms / 1000:g}",
                                      body=COMPLETION))
    service = Service("nginx", ["taskset", "-c", "0", nginx, "-c", str(conf), "-p", str(home)], clean_env(),
                      out / "nginx.log")
    url = f"http://127.0.0.1:{port}"
    service.wait_for("an answer", lambda: _post_ok(f"{url}/v1/chat/completions"), 20)
    return service, url


def _post_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_llm_edge(label: str, upstream: str, out: Path, checkout: Path | None, python: str | None = None) -> Target:
    """`llm-edge up` of this checkout, or of `checkout` run with this checkout's virtualenv (its code first on
    the path: the dependencies of the two must match, true of two commits with one pyproject.toml). `python`:
    another virtualenv's interpreter to run it with (one with the project's dependencies installed)."""
    home = out / label
    home.mkdir(parents=True, exist_ok=True)
    config = home / "llm-edge.yaml"
    config.write_text(
        "providers:\n"
        f"  up: {{adapter: openai_compatible, base_url: '{upstream}/v1', api_key: x}}\n"
        "models:\n"
        f"  - {{name: bench-model, targets: [{{provider: up, model: {UPSTREAM_MODEL}}}]}}\n"
    )
    port = free_port()
    env = clean_env(PORT=str(port), NATS_URL=f"nats://127.0.0.1:{free_port()}", NATS_MONITOR_PORT=str(free_port()))
    source = checkout or ROOT
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    # Before the launcher moved to `llm_edge/` (issue #11), it was `services/cli.py`: older baselines run too.
    cli = "llm_edge.cli" if (source / "llm_edge").is_dir() else "services.cli"
    python = python or sys.executable
    argv = ["taskset", "-c", "1", python, "-m", cli, "-c", str(config), "up"]
    service = Service(label, argv, env, home / "llm-edge.log", cwd=source)
    service.wait_for("'LLM Edge ready'", lambda: "LLM Edge ready in" in service.log_text(), 90)
    rev = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False).stdout.strip()
    return Target(label, f"http://127.0.0.1:{port}/v1/chat/completions", "bench-model", ["Cache-Control: no-store"],
                  service=service, version=f"{rev}, {interpreter(python)}")


def interpreter(python: str) -> str:
    """Which Python runs a stack: its version and the real executable (a virtualenv's `python` links to it).
    The interpreter's build moves these figures: see docs/PERFORMANCE.md, "The interpreter"."""
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=False).stdout.strip()
    return f"Python {version} ({os.path.realpath(python)})"


def start_portkey(upstream: str, out: Path) -> Target:
    portkey = Portkey()
    portkey.install(out)
    port = free_port()
    argv = ["taskset", "-c", "1", shutil.which("node") or "node", str(portkey.entry), f"--port={port}", "--headless"]
    service = Service("portkey", argv, clean_env(), out / "portkey.log", cwd=portkey.home)
    service.wait_for("an answer on /", lambda: http_ok(f"http://127.0.0.1:{port}/"), 60)
    headers = ["x-portkey-provider: openai", f"x-portkey-custom-host: {upstream}/v1", "Authorization: Bearer x",
               "Cache-Control: no-store"]
    return Target("portkey", f"http://127.0.0.1:{port}/v1/chat/completions", UPSTREAM_MODEL, headers,
                  service=service, version=portkey.version)


def wrk(target: Target, concurrency: int, seconds: float, out: Path) -> dict[str, Any]:
    script = out / f"{target.label}-{'miss' if target.unique else 'hit'}.lua"
    headers = "\n".join(f'wrk.headers["{name.strip()}"] = "{value.strip()}"'
                        for name, value in (h.split(":", 1) for h in target.headers))
    unique = "true" if target.unique else "false"
    script.write_text(WRK_SCRIPT.format(headers=headers, model=target.model, unique=unique, run=uuid.uuid4().hex[:12]))
    argv = ["taskset", "-c", "0", "wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "30s",
            "-s", str(script), target.url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    found = re.search(r"^WRKJSON (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        return {"failed": f"wrk exited with {done.returncode}: {done.stderr.strip()[-300:]}"}
    figures: dict[str, Any] = json.loads(found.group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    figures["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    return figures


def measure(target: Target, concurrency: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    wrk(target, concurrency, args.warmup, out)
    root = target.service.proc.pid if target.service is not None else None
    cpu = cpu_seconds(root) if root is not None else 0.0
    load = Path("/proc/loadavg").read_text().split()[0]
    result = wrk(target, concurrency, args.duration, out)
    if "failed" in result:
        return result
    requests = result["requests"]
    seconds = result["duration_us"] / 1e6
    point = {
        "rps": requests / seconds, "p50_ms": result["p50"] / 1000, "p90_ms": result["p90"] / 1000,
        "p99_ms": result["p99"] / 1000, "requests": requests, "loadavg": float(load),
        "errors": {k: result[k] for k in ("connect", "read", "write", "timeout", "non_2xx") if result[k]},
    }
    if root is not None and requests:
        point["cpu_us_per_request"] = (cpu_seconds(root) - cpu) / requests * 1e6
    return point


@dataclass
class Results:
    args: argparse.Namespace
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, round_: int, target: Target, concurrency: int, point: dict[str, Any]) -> None:
        self.data["points"].append({"round": round_, "system": target.label, "concurrency": concurrency} | point)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def render(data: dict[str, Any]) -> str:
    """The tables: per system and concurrency, medians over the rounds (and each round's value)."""
    points = [p for p in data["points"] if "failed" not in p]
    floor = {(p["round"], p["concurrency"]): p["p50_ms"] for p in points if p["system"] == "direct"}
    for p in points:
        hit = p["system"].endswith(" hit")  # no upstream call: nothing to add to
        if (base := floor.get((p["round"], p["concurrency"]))) is not None and p["system"] != "direct" and not hit:
            p["added_p50_ms"] = p["p50_ms"] - base
    lines = [f"# wrk against a {data['method']['upstream_ms']:g} ms nginx upstream", "",
             f"- Date: {data['date']}", f"- Command: `{data['command']}`",
             f"- Machine: {data['machine']['nproc']} CPUs ({data['machine']['cpu']}), load average "
             f"{' '.join(data['machine']['loadavg_at_start'])} at the start, "
             f"{' '.join(data['machine'].get('loadavg_at_end', ['?']))} at the end",
             f"- Systems: {', '.join(f'{k} {v}' for k, v in data['versions'].items())}",
             f"- Method: {data['method']['rounds']} interleaved rounds, wrk -t1, {data['method']['warmup']:g} s "
             f"warm-up + {data['method']['duration']:g} s per point; gateways on core 1, wrk and nginx on core 0",
             "", "| system | c | req/s | p50 ms | added p50 ms (each round) | p99 ms | CPU µs/request | errors |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(p["system"], p["concurrency"]) for p in points}, key=lambda k: (k[1], k[0]))
    for system, c in keys:
        mine = [p for p in points if (p["system"], p["concurrency"]) == (system, c)]
        added = [p["added_p50_ms"] for p in mine if "added_p50_ms" in p]
        cpu = [p["cpu_us_per_request"] for p in mine if "cpu_us_per_request" in p]
        errors = sum(sum(p["errors"].values()) for p in mine)
        median_added = _median(added)
        rps, p50 = _median([p["rps"] for p in mine]), _median([p["p50_ms"] for p in mine])
        lines.append(
            f"| {system} | {c} | {rps:,.0f} | {p50:.2f} | "
            + ("–" if median_added is None else f"+{median_added:.2f} ({', '.join(f'{a:+.2f}' for a in added)})")
            + f" | {_median([p['p99_ms'] for p in mine]):.2f} | "
            + ("–" if not cpu else f"{_median(cpu):,.0f}") + f" | {errors} |")
    failed = [p for p in data["points"] if "failed" in p]
    lines += [f"- failed: {p['system']} c={p['concurrency']} round {p['round']}: {p['failed']}" for p in failed]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "bench-results" / "wrk")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per point")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of uncounted load before each point")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64])
    p.add_argument("--upstream-ms", type=float, default=50.0)
    p.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                   help="also measure another checkout's LLM Edge (run with this checkout's virtualenv, or "
                        "--baseline-python's)")
    p.add_argument("--python", metavar="EXE",
                   help="run LLM Edge with this interpreter (a virtualenv's, with the project installed); default: "
                        "the one running this script")
    p.add_argument("--baseline-python", metavar="EXE", help="the baseline's interpreter (default: --python's)")
    p.add_argument("--no-portkey", action="store_true")
    p.add_argument("--hits", action="store_true", help="also measure LLM Edge's cache hits")
    return p.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up exactly like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("wrk and taskset are needed: make bench-tools", file=sys.stderr)
        return 2
    data: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.executable, ROOT), "bench/wrk_compare.py", *(argv or sys.argv[1:])]),
        "machine": machine(), "versions": {}, "points": [],
        "method": {"rounds": args.rounds, "duration": args.duration, "warmup": args.warmup,
                   "upstream_ms": args.upstream_ms, "concurrency": args.concurrency},
    }
    results = Results(args, data)
    code = 0
    try:
        _, upstream = start_nginx(out, args.upstream_ms)  # stopped with everything else, below
        targets = [Target("direct", f"{upstream}/v1/chat/completions", UPSTREAM_MODEL, [], service=None,
                          version=subprocess.run(["nginx", "-v"], capture_output=True, text=True,
                                                 check=False).stderr.strip())]
        edge = start_llm_edge("llm-edge", upstream, out, None, args.python)
        targets.append(edge)
        if args.baseline is not None:
            baseline = args.baseline.resolve()
            targets.append(start_llm_edge("llm-edge-baseline", upstream, out, None if baseline == ROOT else baseline,
                                          args.baseline_python or args.python))
        if not args.no_portkey:
            try:
                targets.append(start_portkey(upstream, out))
            except Unavailable as exc:
                print(f"portkey: unavailable: {exc}", file=sys.stderr)
                data["versions"]["portkey"] = f"unavailable: {exc}"
        if args.hits:
            for t in [t for t in targets if t.label.startswith("llm-edge")]:
                hit = Target(f"{t.label} hit", t.url, t.model, [], unique=False, service=t.service, version=t.version)
                wrk(hit, 1, 1, out)  # the fixed prompt, once: every later request is a hit
                targets.append(hit)
        data["versions"].update({t.label: t.version for t in targets})
        for round_ in range(1, args.rounds + 1):
            for c in args.concurrency:
                # Every other round in reverse: no system always follows the same one (a node process still
                # collecting garbage after its load, say, would otherwise always slow down the next one).
                for target in targets if round_ % 2 else targets[::-1]:
                    point = measure(target, c, args, out)
                    results.add(round_, target, c, point)
                    shown = point.get("failed") or (f"{point['rps']:,.0f} req/s p50 {point['p50_ms']:.2f} ms "
                                                    f"cpu {point.get('cpu_us_per_request', 0):,.0f} us "
                                                    f"errors {point['errors'] or 0}")
                    print(f"round {round_} c={c:<3} {target.label:<24} {shown}", flush=True)
                    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    except KeyboardInterrupt:
        print("interrupted; stopping everything and writing what was measured", file=sys.stderr)
        code = 130
    except Unavailable as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        code = 1
    finally:
        for service in list(RUNNING):
            service.stop(grace=10)
        data["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
        (out / "summary.md").write_text(render(data))
    print((out / "summary.md").read_text())
    return code


if __name__ == "__main__":
    sys.exit(main())

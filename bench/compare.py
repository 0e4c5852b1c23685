"""LLM Edge beside LiteLLM and Portkey: one mock upstream, one load generator, one run, one machine.

    .venv/bin/python bench/compare.py --out bench-results/ [--quick] [--stream]

Every system is started on free 127.0.0.1 ports, measured against the same mock upstream
(`python -m tests.mockupstream`) at each concurrency and upstream latency, and stopped again with its
whole process tree. A system that cannot be installed or started is reported as unavailable. Writes
results.json (every number) and summary.md (tables for docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `bench` is then importable from the repository root
# importable only once the path above is set
from bench.procs import Sampler, free_port, process_tree, started_at, tree_rss  # noqa: E402
from bench.summary import brief, machine, render  # noqa: E402

VENVS = ROOT / "bench" / ".venvs"
UPSTREAM_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"  # the upstream's embeddings model (`--workload embeddings`)
LITELLM_KEY = "sk-bench-" + "0" * 32  # LiteLLM refuses to start without a master key
NO_STORE = "Cache-Control: no-store"
PORTKEY_VERSION = "1.15.2"  # the version PERFORMANCE.md's figures were measured against
_DROPPED_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "REDIS_URL", "LLM_EDGE_CONFIG", "HOST", "PORT", "NATS_URL")


class Unavailable(Exception):
    """A system could not be installed or started; the message says why."""


# --- processes ---------------------------------------------------------------------------------------


RUNNING: set[Service] = set()


class Service:
    """A started process with its log; `stop` ends it and every descendant it left."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()
        RUNNING.add(self)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float) -> float:
        """Poll `ready` until true; the seconds since the start. Raise Unavailable on exit or timeout."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if ready():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise Unavailable(f"{self.name} exited with {self.proc.returncode} before {what}: "
                                  f"{_tail(self.log_text())}")
            time.sleep(0.02)
        raise Unavailable(f"{self.name}: no {what} within {timeout:.0f}s: {_tail(self.log_text())}")

    def stop(self, grace: float = 40.0) -> None:
        RUNNING.discard(self)
        tree = {pid: started_at(pid) for pid in process_tree(self.proc.pid)}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # each system drains and stops its own children
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        for pid, started in tree.items():  # whatever is left, including orphans of the tree
            if started is not None and started_at(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait()


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())[-800:]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    return env | extra


def run(argv: list[str], timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


# --- the systems ---------------------------------------------------------------------------------------


@dataclass
class Scenario:
    label: str  # a table row
    url: str
    model: str
    headers: list[str]
    unique: bool = True  # unique prompts: every request misses any cache
    prime: bool = False  # send the fixed prompt once first, so that the run measures cache hits
    api: str = "chat"  # `llm-edge bench --api`: chat completions, the Responses API, or embeddings


@dataclass
class System:
    name: str
    version: str = ""
    service: Service | None = None
    port: int = 0
    reported_ready: float | None = None

    def install(self, out: Path) -> None:
        """Make the system runnable (or raise Unavailable); set `version`."""

    def start(self, upstream: str, out: Path) -> float | None:
        """Start it; the seconds until it answered (None for a system without a process)."""
        return None

    def scenarios(self, upstream: str) -> list[Scenario]:
        raise NotImplementedError

    def embedding_scenarios(self, upstream: str) -> list[Scenario]:
        """The `--workload embeddings` rows; none for a system without an embeddings route."""
        return []

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None


class Direct(System):
    def install(self, out: Path) -> None:
        self.version = "mock upstream"

    def scenarios(self, upstream: str) -> list[Scenario]:
        return [Scenario("direct (floor)", f"{upstream}/v1", UPSTREAM_MODEL, [NO_STORE, "Authorization: Bearer x"])]

    def embedding_scenarios(self, upstream: str) -> list[Scenario]:
        return [Scenario("direct embeddings (floor)", f"{upstream}/v1", EMBED_MODEL, ["Authorization: Bearer x"],
                         api="embeddings")]


class LLMEdge(System):
    """This checkout, or with `checkout` another one (its own `.venv`, e.g. a worktree of an older commit),
    so that a change is measured before and after in one run, on one machine, against one upstream."""

    def __init__(self, name: str, checkout: Path | None = None) -> None:
        super().__init__(name)
        self.checkout = checkout

    def install(self, out: Path) -> None:
        from importlib.metadata import version

        where = ["git", "-C", str(self.checkout or ROOT), "rev-parse", "--short", "HEAD"]
        rev = run(where, 10).stdout.strip()  # read-only
        self.version = f"{version('llm-edge') if self.checkout is None else 'baseline'} ({rev or 'no git'})"

    def start(self, upstream: str, out: Path) -> float | None:
        config = out / "llm-edge.yaml"
        config.write_text(
            "providers:\n"
            f"  up: {{adapter: openai_compatible, base_url: '{upstream}/v1', api_key: x}}\n"
            "models:\n"
            f"  - {{name: bench-model, targets: [{{provider: up, model: {UPSTREAM_MODEL}}}]}}\n"
            f"  - {{name: bench-embed, targets: [{{provider: up, model: {EMBED_MODEL}}}]}}\n"
        )
        self.port = free_port()
        env = clean_env(PORT=str(self.port), NATS_URL=f"nats://127.0.0.1:{free_port()}",
                        NATS_MONITOR_PORT=str(free_port()))
        if self.checkout is not None:
            argv = [str(self.checkout / ".venv" / "bin" / "llm-edge")]
        else:
            cli = Path(sys.executable).parent / "llm-edge"
            argv = [str(cli)] if cli.exists() else [sys.executable, "-m", "llm_edge.cli"]
        service = self.service = Service(self.name, [*argv, "-c", str(config), "up"], env,
                                         out / f"{self.name}.log", cwd=self.checkout or ROOT)
        wall = service.wait_for("'LLM Edge ready'", lambda: "LLM Edge ready in" in service.log_text(), 60)
        line = service.log_text().split("LLM Edge ready in", 1)[1]
        self.reported_ready = float(line.split("s", 1)[0])
        return wall

    def scenarios(self, upstream: str) -> list[Scenario]:
        url = f"http://127.0.0.1:{self.port}/v1"
        if self.checkout is not None:  # an older checkout may not serve the Responses API
            return [Scenario(f"{self.name} miss (no-store)", url, "bench-model", [NO_STORE]),
                    Scenario(f"{self.name} cache hit", url, "bench-model", [], unique=False, prime=True)]
        return [Scenario("llm-edge miss (no-store)", url, "bench-model", [NO_STORE]),
                Scenario("llm-edge cache hit", url, "bench-model", [], unique=False, prime=True),
                # The same misses over OpenAI's Responses API (`store: false`, as Codex sends it).
                Scenario("llm-edge responses miss (no-store)", url, "bench-model", [NO_STORE], api="responses")]

    def embedding_scenarios(self, upstream: str) -> list[Scenario]:
        url = f"http://127.0.0.1:{self.port}/v1"
        return [Scenario(f"{self.name} embeddings miss (no-store)", url, "bench-embed", [NO_STORE], api="embeddings"),
                Scenario(f"{self.name} embeddings cache hit", url, "bench-embed", [], unique=False, prime=True,
                         api="embeddings")]


class LiteLLM(System):
    def __init__(self, workers: int) -> None:
        super().__init__(f"litellm-{workers}w")
        self.workers = workers
        self.home = VENVS / "litellm"

    def install(self, out: Path) -> None:
        python, cli = self.home / "bin" / "python", self.home / "bin" / "litellm"
        if not cli.exists():
            print("  installing litellm[proxy] into bench/.venvs/litellm (takes minutes)", flush=True)
            for argv in ([sys.executable, "-m", "venv", str(self.home)],
                         [str(python), "-m", "pip", "install", "-q", "litellm[proxy]"]):
                done = run(argv, 1800)
                if done.returncode != 0:
                    raise Unavailable(f"install failed: {' '.join(argv[-2:])}: {_tail(done.stderr)}")
        probe = run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"], 60)
        if probe.returncode != 0:
            raise Unavailable(f"litellm is not importable: {_tail(probe.stderr)}")
        self.version = probe.stdout.strip()

    def start(self, upstream: str, out: Path) -> float | None:
        config = out / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: bench-model\n"
            f"    litellm_params: {{model: 'openai/{UPSTREAM_MODEL}', api_base: '{upstream}/v1', api_key: x}}\n"
            "  - model_name: bench-embed\n"
            f"    litellm_params: {{model: 'openai/{EMBED_MODEL}', api_base: '{upstream}/v1', api_key: x}}\n"
            "litellm_settings: {telemetry: false, cache: false}\n"
            f"general_settings: {{master_key: {LITELLM_KEY}}}\n"
        )
        self.port = free_port()
        # No telemetry, and the bundled model price map instead of fetching one at start.
        env = clean_env(LITELLM_TELEMETRY="False", LITELLM_LOCAL_MODEL_COST_MAP="True")
        argv = [str(self.home / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                "--port", str(self.port), "--num_workers", str(self.workers)]
        service = self.service = Service(self.name, argv, env, out / f"{self.name}.log", cwd=out)
        wall = service.wait_for("readiness", lambda: http_ok(f"http://127.0.0.1:{self.port}/health/readiness"),
                                240)
        # Readiness answers once one worker is up; measure and load only when every worker is.
        service.wait_for(f"{self.workers} workers",
                         lambda: service.log_text().count("Application startup complete") >= self.workers,
                              240)
        return wall

    def scenarios(self, upstream: str) -> list[Scenario]:
        return [Scenario(self.name, f"http://127.0.0.1:{self.port}/v1", "bench-model",
                         [f"Authorization: Bearer {LITELLM_KEY}", NO_STORE])]

    def embedding_scenarios(self, upstream: str) -> list[Scenario]:
        return [Scenario(f"{self.name} embeddings", f"http://127.0.0.1:{self.port}/v1", "bench-embed",
                         [f"Authorization: Bearer {LITELLM_KEY}", NO_STORE], api="embeddings")]


class Portkey(System):
    def __init__(self) -> None:
        super().__init__("portkey")
        self.home = VENVS / "portkey"
        self.entry = self.home / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"

    def install(self, out: Path) -> None:
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            raise Unavailable("node and npm are not on PATH")
        installed = self.entry.parents[1] / "package.json"
        if not self.entry.exists() or json.loads(installed.read_text())["version"] != PORTKEY_VERSION:
            print(f"  installing @portkey-ai/gateway@{PORTKEY_VERSION} into bench/.venvs/portkey", flush=True)
            self.home.mkdir(parents=True, exist_ok=True)
            package = self.home / "package.json"
            if not package.exists():
                package.write_text('{"name": "portkey-bench", "private": true}\n')
            done = run([npm, "install", "--no-audit", "--no-fund", f"@portkey-ai/gateway@{PORTKEY_VERSION}"], 900,
                       cwd=self.home)
            if done.returncode != 0 or not self.entry.exists():
                raise Unavailable(f"npm install @portkey-ai/gateway failed: {_tail(done.stderr)}")
        meta = json.loads((self.entry.parents[1] / "package.json").read_text())
        self.version = f"{meta['version']} (node {run([node, '--version'], 30).stdout.strip()})"

    def start(self, upstream: str, out: Path) -> float | None:
        self.port = free_port()
        argv = [shutil.which("node") or "node", str(self.entry), f"--port={self.port}", "--headless"]
        self.service = Service(self.name, argv, clean_env(), out / "portkey.log", cwd=self.home)
        return self.service.wait_for("an answer on /", lambda: http_ok(f"http://127.0.0.1:{self.port}/"), 60)

    def scenarios(self, upstream: str) -> list[Scenario]:
        headers = ["x-portkey-provider: openai", f"x-portkey-custom-host: {upstream}/v1",
                   "Authorization: Bearer x", NO_STORE]
        return [Scenario("portkey", f"http://127.0.0.1:{self.port}/v1", UPSTREAM_MODEL, headers)]


SYSTEMS: dict[str, Callable[[], list[System]]] = {
    "direct": lambda: [Direct("direct")],
    "llm-edge": lambda: [LLMEdge("llm-edge")],
    "litellm": lambda: [LiteLLM(1), LiteLLM(2)],
    "portkey": lambda: [Portkey()],
}


# --- one run ------------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    out: Path
    data: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.data, indent=2) + "\n")

    def bench(self, scenario: Scenario, concurrency: int, stream: bool, tag: str) -> dict[str, Any]:
        path = self.out / "points" / f"{tag}.json"
        path.parent.mkdir(exist_ok=True)
        path.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "llm_edge.bench", "--url", scenario.url, "--model", scenario.model,
                "--concurrency", str(concurrency), "--duration", str(self.args.duration),
                "--warmup", str(self.args.warmup), "--timeout", "30", "--json", str(path)]
        argv += ["--unique-prompts"] * scenario.unique + ["--stream"] * stream + ["--api", scenario.api]
        if scenario.api == "embeddings":
            argv += ["--batch", str(self.args.batch), "--dimensions", str(self.args.dimensions)]
        for header in scenario.headers:
            argv += ["--header", header]
        try:
            done = run(argv, self.args.warmup + self.args.duration + 120)
        except subprocess.TimeoutExpired:
            return {"failed": "the load generator did not finish in time"}
        if done.returncode != 0 or not path.exists():
            return {"failed": f"bench exited with {done.returncode}: {_tail(done.stderr)}"}
        return dict(json.loads(path.read_text()))

    def prime(self, scenario: Scenario) -> None:
        argv = [sys.executable, "-m", "llm_edge.bench", "--url", scenario.url, "--model", scenario.model,
                "--concurrency", "1", "--requests", "1", "--warmup", "0", "--api", scenario.api,
                "--batch", str(self.args.batch), "--dimensions", str(self.args.dimensions)]
        for header in scenario.headers:
            argv += ["--header", header]
        run(argv, 60)

    def measure(self, system: System, upstream: str, latency: float) -> None:
        record = self.data["systems"][system.name]
        files = self.out / f"upstream-{latency:g}ms"  # each start's configuration and log
        files.mkdir(exist_ok=True)
        wall = system.start(upstream, files)
        start: dict[str, Any] = {"upstream_latency_ms": latency, "ready_s": wall and round(wall, 3),
                                 "reported_ready_s": system.reported_ready}
        if system.service is not None:
            time.sleep(1.0)  # settle: what a freshly started, idle instance holds
            start["rss_idle"] = tree_rss(system.service.proc.pid)
        record["starts"].append(start)
        top = max(self.args.concurrency)
        embeddings = self.args.workload == "embeddings"
        for scenario in system.embedding_scenarios(upstream) if embeddings else system.scenarios(upstream):
            if scenario.prime:
                self.prime(scenario)
            for stream in (False, True) if self.args.stream and not embeddings else (False,):
                for c in self.args.concurrency:
                    sampler = None
                    if c == top and system.service is not None:
                        sampler = Sampler(system.service.proc.pid)
                        sampler.start()
                    tag = f"{scenario.label}-{latency:g}ms-c{c}{'-stream' if stream else ''}".replace(" ", "_")
                    print(f"  {scenario.label:<26} upstream {latency:g} ms  c={c:<3} {'stream' if stream else ''}",
                          end="", flush=True)
                    result = self.bench(scenario, c, stream, tag.replace("(", "").replace(")", ""))
                    if sampler is not None:
                        sampler.halt.set()
                        sampler.join()
                        loaded = record.setdefault("rss_loaded", {})
                        if sampler.peak["mib"] > loaded.get("mib", 0.0):
                            record["rss_loaded"] = sampler.peak | {"concurrency": c, "scenario": scenario.label}
                    print(f"  -> {brief(result)}", flush=True)
                    self.data["points"].append({"system": system.name, "scenario": scenario.label,
                                                "upstream_latency_ms": latency, "concurrency": c,
                                                "stream": stream, "result": result})
                    self.save()


def start_upstream(port: int, latency: float, out: Path) -> Service:
    argv = [sys.executable, "-m", "tests.mockupstream", "--port", str(port), "--latency-ms", f"{latency:g}"]
    upstream = Service(f"mock upstream ({latency:g} ms)", argv, clean_env(), out / f"upstream-{latency:g}ms.log")
    upstream.wait_for("its stats", lambda: http_ok(f"http://127.0.0.1:{port}/_mock/stats"), 30)
    return upstream


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "bench-results")
    p.add_argument("--quick", action="store_true", help="3 s per point instead of 10")
    p.add_argument("--duration", type=float, help="seconds measured per point (default 10, --quick 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of uncounted load per point")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    p.add_argument("--latencies", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 50.0],
                   help="upstream latencies in ms (default 0,50)")
    p.add_argument("--systems", type=lambda s: s.split(","), default=list(SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--stream", action="store_true", help="also measure SSE streams at every point")
    p.add_argument("--workload", choices=("chat", "embeddings"), default="chat",
                   help="chat completions (default), or POST /v1/embeddings with --batch texts a request")
    p.add_argument("--batch", type=int, default=16, help="texts per embeddings request (default 16)")
    p.add_argument("--dimensions", type=int, default=1536,
                   help="the vectors' size the embeddings workload asks for (default 1536, text-embedding-3-small's)")
    p.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                   help="also measure the LLM Edge of another checkout (with its own .venv), as llm-edge-baseline")
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems: {', '.join(sorted(unknown))}")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up exactly like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/compare.py", *sys.argv[1:]])
    runner = Run(args, out)
    runner.data = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "command": command,
                   "machine": machine(), "method": {"duration_s": args.duration, "warmup_s": args.warmup,
                   "concurrency": args.concurrency, "upstream_latencies_ms": args.latencies, "stream": args.stream,
                   "workload": args.workload, "batch": args.batch, "dimensions": args.dimensions},
                   "systems": {}, "points": []}
    systems = [s for name in args.systems for s in SYSTEMS[name]()]
    if args.baseline is not None:
        systems.append(LLMEdge("llm-edge-baseline", args.baseline.resolve()))
    available: list[System] = []
    for system in systems:
        record = runner.data["systems"][system.name] = {"status": "ok", "starts": []}
        try:
            system.install(out)
            record["version"] = system.version
            available.append(system)
        except (Unavailable, OSError, subprocess.SubprocessError) as exc:
            record.update(status="unavailable", reason=str(exc))
            print(f"{system.name}: unavailable: {exc}", file=sys.stderr)
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    try:
        for latency in args.latencies:
            upstream = start_upstream(upstream_port, latency, out)
            try:
                for system in available:
                    print(f"{system.name} (upstream {latency:g} ms)", flush=True)
                    try:
                        runner.measure(system, upstream_url, latency)
                    except (Unavailable, OSError, subprocess.SubprocessError) as exc:
                        record = runner.data["systems"][system.name]
                        record.update(status="unavailable", reason=f"at {latency:g} ms: {exc}")
                        print(f"  unavailable: {exc}", file=sys.stderr)
                    finally:
                        system.stop()
            finally:
                upstream.stop()
    except KeyboardInterrupt:
        print("interrupted; stopping everything and writing what was measured", file=sys.stderr)
        runner.data["interrupted"] = True
        return_code = 130
    else:
        return_code = 0
    finally:
        for service in list(RUNNING):
            service.stop(grace=5)
        runner.data["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        runner.save()
        (out / "summary.md").write_text(render(runner.data))
    print(f"wrote {out / 'results.json'} and {out / 'summary.md'}")
    return return_code


if __name__ == "__main__":
    sys.exit(main())

"""Where the time goes on the miss path: CPU per request in each process under load, and the wall time
of each bus hop at concurrency 1, from the gateway's own metrics.

    .venv/bin/python bench/hops.py            # starts a mock upstream and `llm-edge up`, ~30 s
    .venv/bin/python bench/hops.py --api responses   # the same over the Responses API (`store: false`)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, ".")
from llm_edge.launcher import free_port

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tree(pid: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                name = "nats-server" if "nats-server" in cmd else cmd.split("llm_edge.cli ")[-1].strip()
                found[int(entry.name)] = name
    return found


API = sys.argv[sys.argv.index("--api") + 1] if "--api" in sys.argv else "chat"


def bench(url: str, concurrency: int, seconds: int) -> dict[str, object]:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    subprocess.run([sys.executable, "-m", "llm_edge.cli", "bench", "--url", f"{url}/v1", "--model", "bench-model",
                    "--api", API,
                    "--concurrency", str(concurrency), "--duration", str(seconds), "--unique-prompts",
                    "--header", "Cache-Control: no-store", "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
    result: dict[str, object] = json.loads(out.read_text())
    return result


def metric_sums(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    sums = {}
    for line in text.splitlines():
        match = re.match(r"(llm_edge_(?:bus_request|gateway_overhead|request)_duration_seconds|"
                         r"llm_edge_gateway_overhead_seconds)_(sum|count)(\{[^}]*\})? (\S+)", line)
        if match:
            sums[f"{match.group(1)}_{match.group(2)}{match.group(3) or ''}"] = float(match.group(4))
    return sums


def main() -> None:
    upstream_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.mockupstream", "--port", str(upstream_port)],
                                stdout=subprocess.PIPE, text=True)
    assert upstream.stdout is not None and "listening" in upstream.stdout.readline()
    config = Path(tempfile.mkdtemp()) / "edge.yaml"
    config.write_text(
        "log_level: WARNING\nproviders:\n"
        f"  up: {{adapter: openai_compatible, base_url: 'http://127.0.0.1:{upstream_port}/v1', api_key: x}}\n"
        "models:\n  - {name: bench-model, targets: [{provider: up, model: gpt-4o-mini}]}\n")
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{free_port()}",
               NATS_MONITOR_PORT=str(free_port()))
    gateway = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "-c", str(config), "up"], env=env,
                               stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert gateway.stdout is not None
        while "Ctrl-C" not in gateway.stdout.readline():
            pass
        bench(url, 8, 2)  # warm-up
        procs = tree(gateway.pid)
        before = {pid: cpu_seconds(pid) for pid in procs}
        load = bench(url, 64, 10)
        ok = load["ok"]
        print(f"c=64, upstream 0 ms: {load['throughput_rps']:.0f} ok req/s; CPU per request by process:")
        total = 0.0
        for pid, name in sorted(procs.items(), key=lambda p: p[1]):
            micro = (cpu_seconds(pid) - before[pid]) / ok * 1e6  # type: ignore[operator]
            total += micro
            print(f"  {name:<16} {micro:7.0f} us")
        print(f"  {'all':<16} {total:7.0f} us")

        first = metric_sums(url)
        quiet = bench(url, 1, 10)
        second = metric_sums(url)
        n = quiet["ok"]
        print(f"c=1, upstream 0 ms: p50 {quiet['latency_ms']['p50']:.2f} ms; mean wall time per request:")  # type: ignore[index]
        for key in sorted(second):
            if key.endswith("_sum") or "_sum{" in key:
                spent = second[key] - first.get(key, 0.0)
                print(f"  {key.replace('llm_edge_', ''):<70} {spent / n * 1e6:7.0f} us")  # type: ignore[operator]
    finally:
        gateway.send_signal(signal.SIGINT)
        gateway.wait(40)
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()

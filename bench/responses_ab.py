"""The Responses API beside chat completions on one running gateway, as an interleaved A/B: the same misses
(unique prompts, `Cache-Control: no-store`) over both endpoints, alternating which goes first each round,
so that load from elsewhere on a shared machine falls on both alike. Medians over the rounds.

    .venv/bin/python bench/responses_ab.py [--rounds 5] [--duration 5] [--concurrency 1,64] [--latencies 0,50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `bench` is then importable from the repository root
from bench.compare import NO_STORE, RUNNING, LLMEdge, start_upstream  # noqa: E402
from bench.procs import free_port  # noqa: E402


def bench(url: str, api: str, concurrency: int, duration: float, stream: bool, out: Path) -> dict[str, Any]:
    path = out / f"{api}-c{concurrency}-{'stream' if stream else 'json'}.json"
    direct = api == "direct"  # the mock upstream itself, the floor that "added" latency is measured from
    argv = [sys.executable, "-m", "llm_edge.bench", "--url", url, "--model", "gpt-4o-mini" if direct else "bench-model",
            "--api", "chat" if direct else api,
            "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", "1", "--unique-prompts",
            "--header", NO_STORE, "--json", str(path)] + ["--stream"] * stream
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench failed: {done.stderr[-500:]}")
    return dict(json.loads(path.read_text()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64])
    p.add_argument("--latencies", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 50.0])
    p.add_argument("--stream", action="store_true", help="measure SSE streams instead of JSON answers")
    args = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="responses-ab-"))
    port = free_port()
    print("| upstream | c | direct p50 ms | chat p50 (added) ms | responses p50 (added) ms | added Δ "
          "| chat req/s | responses req/s | req/s Δ |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for latency in args.latencies:
            upstream = start_upstream(port, latency, out)
            edge = LLMEdge("llm-edge")
            try:
                edge.start(f"http://127.0.0.1:{port}", out)
                url = f"http://127.0.0.1:{edge.port}/v1"
                for c in args.concurrency:
                    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "chat": [], "responses": []}
                    for r in range(args.rounds):
                        for api in ("direct", "chat", "responses") if r % 2 == 0 else ("responses", "chat", "direct"):
                            target = f"http://127.0.0.1:{port}/v1" if api == "direct" else url
                            runs[api].append(bench(target, api, c, args.duration, args.stream, out))
                    p50 = {api: statistics.median(x["latency_ms"]["p50"] for x in rs) for api, rs in runs.items()}
                    rps = {api: statistics.median(x["throughput_rps"] for x in rs) for api, rs in runs.items()}
                    added = {api: p50[api] - p50["direct"] for api in ("chat", "responses")}
                    errors = sum(x["errors"] for rs in runs.values() for x in rs)
                    print(f"| {latency:g} ms | {c} | {p50['direct']:.2f} | {p50['chat']:.2f} ({added['chat']:+.2f}) | "
                          f"{p50['responses']:.2f} ({added['responses']:+.2f}) | "
                          f"{(added['responses'] / added['chat'] - 1) * 100:+.1f} % | {rps['chat']:,.0f} | "
                          f"{rps['responses']:,.0f} | {(rps['responses'] / rps['chat'] - 1) * 100:+.1f} % |"
                          + (f" {errors} errors" if errors else ""), flush=True)
            finally:
                edge.stop()
                upstream.stop()
    finally:
        for service in list(RUNNING):
            service.stop(grace=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

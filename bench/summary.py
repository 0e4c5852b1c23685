"""The summary of a bench/compare.py run: one-line results, the machine description and summary.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def brief(result: dict[str, Any]) -> str:
    if "failed" in result:
        return f"FAILED: {result['failed']}"
    lat = result["latency_ms"]
    return (f"{result['throughput_rps']:.0f} ok req/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
            f"{result['errors']} errors")


# --- summary.md ----------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _errors(result: dict[str, Any]) -> str:
    if not result["errors"]:
        return "0"
    kinds = [f"{k}×{n}" for k, n in result["http_errors"].items()]
    kinds += [f"{k}×{n}" for part in ("transport_errors", "invalid_responses") for k, n in result[part].items()]
    return f"{result['errors']} ({', '.join(kinds)})"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _load_tables(points: list[dict[str, Any]], latencies: list[float], stream: bool) -> list[str]:
    out: list[str] = []
    for latency in latencies:
        rows = []
        for p in points:
            if p["upstream_latency_ms"] != latency or p["stream"] != stream:
                continue
            r = p["result"]
            if "failed" in r:
                rows.append([p["scenario"], str(p["concurrency"]), "failed: " + r["failed"][:120]] + [""] * 5)
                continue
            lat = r["latency_ms"]
            row = [p["scenario"], str(p["concurrency"]), _num(r["throughput_rps"], 0),
                   *(_num(lat[k]) for k in ("p50", "p90", "p99", "max")), _errors(r)]
            if stream:
                row[-1:-1] = [_num(r["first_chunk_ms"]["p50"]), _num(r["first_chunk_ms"]["p99"]),
                              _num(r["chunk_gap_ms"]["p99"])]
            rows.append(row)
        if rows:
            head = ["system", "c", "ok req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"]
            if stream:
                head[-1:-1] = ["1st chunk p50", "1st chunk p99", "chunk gap p99"]
            out += [f"### Upstream latency {latency:g} ms{' — SSE streams' if stream else ''}", "",
                    *_table(head, rows)]
    return out


def _added_table(points: list[dict[str, Any]]) -> list[str]:
    floor = {(p["upstream_latency_ms"], p["concurrency"], p["stream"]): p["result"]
             for p in points if p["system"] == "direct" and "failed" not in p["result"]}
    rows = []
    for p in points:
        base = floor.get((p["upstream_latency_ms"], p["concurrency"], p["stream"]))
        r = p["result"]
        if p["system"] == "direct" or base is None or "failed" in r or r["latency_ms"]["p50"] is None:
            continue
        added = [r["latency_ms"][k] - base["latency_ms"][k] for k in ("p50", "p99")]
        share = r["throughput_rps"] / base["throughput_rps"] if base["throughput_rps"] else None
        rows.append([p["scenario"] + (" (stream)" if p["stream"] else ""), f"{p['upstream_latency_ms']:g}",
                     str(p["concurrency"]), _num(added[0]), _num(added[1]),
                     "–" if share is None else f"{share:.1%}"])
    head = ["system", "upstream ms", "c", "added p50 ms", "added p99 ms", "throughput vs direct"]
    return _table(head, rows) if rows else ["(no direct baseline measured)", ""]


# What a valid answer is, by workload (`llm_edge/bench/check.py`).
_VALID = {
    "chat": "a valid chat.completion (streams: content and `data: [DONE]`)",
    "embeddings": "an embeddings list with a vector for every item (POST /v1/embeddings)",
}


def render(data: dict[str, Any]) -> str:
    m, method, points = data["machine"], data["method"], data["points"]
    systems = data["systems"]
    lines = [
        "# LLM Edge beside LiteLLM and Portkey", "",
        f"- date: {data['date']}",
        f"- command: `{data['command']}`",
        (f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
         f"Python {m['python']}; load average {' '.join(m['loadavg_at_start'])} at start, "
         f"{' '.join(m.get('loadavg_at_end', ['?']))} at end"),
        "- versions: " + "; ".join(f"{name} {rec.get('version', '?')}" for name, rec in systems.items()),
        (f"- method: per point {method['warmup_s']:g} s warm-up then {method['duration_s']:g} s measured by "
         "`llm-edge bench` (one process, one keep-alive connection per concurrent worker) against one mock "
         "upstream (`python -m tests.mockupstream`); every process shares this machine's CPUs. Misses "
         "send unique prompts with `Cache-Control: no-store`; LiteLLM and Portkey run with caching off. A "
         f"request is ok only with status 200 and {_VALID.get(method.get('workload', 'chat'), _VALID['chat'])}; "
         "latencies are of ok requests only; percentiles are nearest-rank."),
    ]
    if method.get("workload") == "embeddings":
        lines.append(f"- workload: `POST /v1/embeddings`, {method.get('batch')} texts a request, "
                     f"{method.get('dimensions')} floats a vector, `encoding_format: float`")
    if data.get("interrupted"):
        lines.append("- **interrupted**: the tables hold what was measured before the interruption")
    lines += ["", "## Throughput and latency", ""]
    lines += _load_tables(points, method["upstream_latencies_ms"], False)
    if method["stream"]:
        lines += _load_tables(points, method["upstream_latencies_ms"], True)
    lines += ["## Added latency (system minus direct, same run, concurrency and upstream latency)", "",
              *_added_table(points)]
    rss_rows, ready_rows = [], []
    for name, rec in systems.items():
        starts = [s for s in rec["starts"] if s.get("ready_s") is not None]
        if not starts:
            continue
        idle = starts[0].get("rss_idle", {})
        loaded = rec.get("rss_loaded", {})
        rss_rows.append([name, str(idle.get("processes", "–")), _num(idle.get("mib"), 1), _num(loaded.get("mib"), 1),
                         ", ".join(f"{k} {v:.0f}" for k, v in idle.get("by_name", {}).items())])
        ready_rows.append([name, ", ".join(f"{s['ready_s']:.2f}" for s in starts),
                           ", ".join(f"{s['reported_ready_s']:.2f}" for s in starts if s.get("reported_ready_s"))
                           or "–"])
    top = max(method["concurrency"])
    lines += ["## Memory (RSS of every process of the system)", "",
              *_table(["system", "processes", "idle MiB", f"peak under load (c={top}) MiB", "idle MiB by process"],
                      rss_rows),
              "## Time to ready (start command to first ready answer; one value per start)", "",
              *_table(["system", "wall clock s", "self-reported s"], ready_rows)]
    unavailable = [(n, r["reason"]) for n, r in systems.items() if r["status"] != "ok"]
    if unavailable:
        lines += ["## Unavailable", "", *(f"- {name}: unavailable: {reason}" for name, reason in unavailable), ""]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(int(mem) / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(), "loadavg_at_start": load}

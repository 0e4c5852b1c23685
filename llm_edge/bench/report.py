"""Turns a bench `Result` into numbers (percentiles in ms, throughput) as a JSON-ready dict and a table.

Percentiles are nearest-rank: the smallest sample with at least p % of the samples at or below it, so
every figure reported is a latency that some request really had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from llm_edge.bench.client import Options, Result


def percentile(samples: Sequence[float], p: float, *, presorted: bool = False) -> float | None:
    """Nearest-rank percentile of `samples` (None when there are none); p in [0, 100]."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, not {p}")
    if not samples:
        return None
    ordered = samples if presorted else sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(samples: Sequence[float], points: Sequence[float], with_max: bool = True) -> dict[str, float | None]:
    ordered = sorted(samples)
    out: dict[str, float | None] = {}
    for p in points:
        value = percentile(ordered, p, presorted=True)
        out[f"p{p:g}"] = None if value is None else round(value * 1000, 3)
    if with_max:
        out["max"] = round(ordered[-1] * 1000, 3) if ordered else None
    return out


def summarize(options: Options, result: Result) -> dict[str, Any]:
    """Everything a run measured, in ms and req/s; the shape of `--json`."""
    elapsed = result.elapsed
    summary: dict[str, Any] = {
        "url": options.url,
        "model": options.model,
        "concurrency": options.concurrency,
        "rate_rps": options.rate,  # None: closed loop
        "api": options.api,
        "store": options.store,
        "stream": options.stream,
        "unique_prompts": options.unique_prompts,
        "headers": [f"{name}: {value}" for name, value in options.headers],
        "warmup_s": options.warmup,
        "duration_s": None if options.requests is not None else options.duration,
        "requests_asked": options.requests,
        "elapsed_s": round(elapsed, 4),
        "warmup_requests": result.warmup_requests,
        "requests": result.done,
        "ok": result.ok,
        "errors": result.errors,
        "http_errors": {str(status): n for status, n in sorted(result.http_errors.items())},
        "transport_errors": dict(sorted(result.transport_errors.items())),
        "invalid_responses": dict(sorted(result.invalid.items())),
        "throughput_rps": round(result.ok / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": _ms(result.latency, (50, 90, 99)),
    }
    if options.stream:
        summary["first_chunk_ms"] = _ms(result.first_chunk, (50, 99), with_max=False)
        summary["chunk_gap_ms"] = _ms(result.chunk_gaps, (50, 99))
    return summary


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _errors_line(summary: dict[str, Any]) -> str:
    parts = [f"HTTP {status}: {n}" for status, n in summary["http_errors"].items()]
    parts += [f"transport {kind}: {n}" for kind, n in summary["transport_errors"].items()]
    parts += [f"invalid {kind}: {n}" for kind, n in summary["invalid_responses"].items()]
    return ", ".join(parts) or "none"


def table(summary: dict[str, Any]) -> str:
    """A readable block for a terminal."""
    mode = "stream" if summary["stream"] else "json"
    prompts = "unique prompts" if summary["unique_prompts"] else "fixed prompt"
    lat = summary["latency_ms"]
    rows = [
        ("target", f"{summary['url']}  model {summary['model']}  {mode}  {prompts}"),
        ("load", (f"open loop at {summary['rate_rps']:g} req/s, at most {summary['concurrency']} in flight"
                  if summary.get("rate_rps") else f"closed loop, concurrency {summary['concurrency']}")
                 + f", {summary['elapsed_s']:.2f} s measured, {summary['warmup_s']:g} s warm-up before"),
        ("requests", f"{summary['requests']}  ok {summary['ok']}  errors {summary['errors']}"),
        ("errors", _errors_line(summary)),
        ("throughput", f"{summary['throughput_rps']:.1f} ok req/s"),
        ("latency ms", "  ".join(f"{k} {_fmt(v)}" for k, v in lat.items())),
    ]
    if summary["stream"]:
        rows.append(("1st chunk ms", "  ".join(f"{k} {_fmt(v)}" for k, v in summary["first_chunk_ms"].items())))
        rows.append(("chunk gap ms", "  ".join(f"{k} {_fmt(v)}" for k, v in summary["chunk_gap_ms"].items())))
    if summary["headers"]:
        rows.insert(1, ("headers", "; ".join(summary["headers"])))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

"""The cost of one semantic-cache lookup in the index (`services/cache/semantic_index.py`) against the number
of entries of the partition searched: the matrix-vector product, the TTL mask and the arg-max, as the cache
service runs them. The embedding call that precedes a lookup is not included (it is the provider's time).

    .venv/bin/python bench/semantic_lookup.py                      # 1k, 10k, 100k entries; 256 and 1536 dims
    .venv/bin/python bench/semantic_lookup.py --entries 1000 --dims 3072 --queries 500

Every entry is in one partition (the worst case: a partition is one tenant, model, parameter set and tool
list, so real entries spread over many). Queries are random unit vectors; half are near an entry (a hit).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the cache service runs it (semantic_index.py says why)

import numpy as np

sys.path.insert(0, ".")
from services.cache.semantic_index import SemanticIndex


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(entries: int, dims: int, queries: int, rng: np.random.Generator) -> dict[str, float]:
    index = SemanticIndex(entries)
    vectors = rng.standard_normal((entries, dims), dtype=np.float32)
    started = time.perf_counter()
    for i in range(entries):
        index.add("p", f"k{i}", vectors[i], 3600.0)
    add_us = (time.perf_counter() - started) / entries * 1e6
    asks = rng.standard_normal((queries, dims), dtype=np.float32)
    asks[::2] = vectors[rng.integers(0, entries, size=(queries + 1) // 2)] + 0.05 * asks[::2]
    for query in asks[: min(20, queries)]:  # warm-up
        index.search("p", query, 0.9)
    samples = []
    hits = 0
    for query in asks:
        started = time.perf_counter()
        found = index.search("p", query, 0.9)
        samples.append(time.perf_counter() - started)
        hits += found is not None
    return {
        "entries": entries, "dims": dims, "queries": queries, "hits": hits,
        "min_us": min(samples) * 1e6, "p50_us": percentile(samples, 0.5) * 1e6,
        "p99_us": percentile(samples, 0.99) * 1e6,
        "mean_us": sum(samples) / len(samples) * 1e6, "add_us": add_us,
        "matrix_mb": index_bytes(entries, dims) / 1e6,
    }


def index_bytes(entries: int, dims: int) -> int:
    rows = 16
    while rows < entries:
        rows *= 2
    return rows * dims * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", default="1000,10000,100000")
    parser.add_argument("--dims", default="256,1536")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    load = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| entries | dims | lookup min | lookup p50 | lookup p99 | mean | add (per entry) | matrix |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dims in (int(d) for d in args.dims.split(",")):
        for entries in (int(n) for n in args.entries.split(",")):
            row = measure(entries, dims, args.queries, rng)
            print(f"| {entries:,} | {dims} | {row['min_us']:,.0f} µs | {row['p50_us']:,.0f} µs | "
                  f"{row['p99_us']:,.0f} µs | "
                  f"{row['mean_us']:,.0f} µs | {row['add_us']:.1f} µs | {row['matrix_mb']:,.0f} MB |", flush=True)


if __name__ == "__main__":
    main()

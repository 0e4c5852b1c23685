"""`python -m bench.reliability` (what `make reliability` runs): every scenario, or those named, then the
soak; results as JSON and a Markdown table (docs/RELIABILITY.md shows the last published run)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a module from anywhere in the repo

from bench.reliability import scenarios


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | sent | ok | failed (by outcome) | plain failed | truncated streams | p99 before ms "
            "| p99 during ms | recovered after s |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        failed = ", ".join(f"{k} {v}" for k, v in r["failed"].items()) or "0"
        lines.append(f"| {r['scenario']} | {r['sent']} | {r['ok']} | {failed} | {r['failed_plain']} | {r['truncated']} "
                     f"| {r['p99_before_ms']} | {r['p99_during_ms']} | {r['recovered_after_s']} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only.split(",")) if args.only else None
    rows = []
    for scenario in scenarios.SCENARIOS:
        if wanted is None or scenario.name in wanted:
            print(f"scenario {scenario.name}: {scenario.what}", file=sys.stderr, flush=True)
            rows.append(await scenarios.run(scenario, out))
    if wanted is None or "rolling-restart" in wanted:
        print("scenario rolling-restart", file=sys.stderr, flush=True)
        rows.append(await scenarios.rolling(out))
    if args.soak_seconds > 0 and (wanted is None or "soak" in wanted):
        print(f"soak: {args.soak_seconds:.0f} s", file=sys.stderr, flush=True)
        rows.append(await scenarios.soak(out, args.soak_seconds))
    (out / "results.json").write_text(json.dumps({"at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                   "rows": rows}, indent=1))
    (out / "summary.md").write_text(table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-results/reliability"))
    parser.add_argument("--only", help="comma-separated scenario names (soak and rolling-restart included)")
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    sys.exit(asyncio.run(main(parser.parse_args())))

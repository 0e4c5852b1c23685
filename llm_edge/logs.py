"""`llm-edge logs`: the request log, asked of a running logger over the bus (`llm.logs.query`), as a table
or as JSON lines. Filters: key, tenant, model, status, a time range (`--since 1h`, an ISO time, or seconds
since the epoch).

Exit code 0 with the records, 1 when NATS or the logger cannot be reached (said on stderr), 2 for a bad
argument.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

import msgspec

from shared.config import Config
from shared.errors import GatewayError
from shared.request_log import MAX_PAGE, LogQuery, RequestRecord, ask, parse_time
from shared.subjects import Subjects

QUERY_TIMEOUT_SECONDS = 10.0


def when(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", help="the key's name")
    p.add_argument("--tenant")
    p.add_argument("--model", help="the public model name the client asked for")
    p.add_argument("--status", type=int, help="the HTTP status, e.g. 200 or 429")
    p.add_argument("--since", type=when, help="from this time: 15m, 2h, 7d (ago), an ISO time or epoch seconds")
    p.add_argument("--until", type=when, help="before this time (same forms as --since)")
    p.add_argument("--limit", type=_limit, default=50, help=f"at most this many records, newest first (max {MAX_PAGE})")
    p.add_argument("--offset", type=int, default=0, help="skip this many (the next page)")
    p.add_argument("--bodies", action="store_true", help="include the stored request and response bodies")
    p.add_argument("--json", action="store_true", help="one JSON object per record, per line")
    p.add_argument("--nats-url", default=None, help="default: the configuration's (NATS_URL)")


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_PAGE}, not {text}")
    return value


def query_of(args: argparse.Namespace) -> LogQuery:
    return LogQuery(key=args.key, tenant=args.tenant, model=args.model, status=args.status, since=args.since,
                    until=args.until, limit=args.limit, offset=args.offset, bodies=args.bodies)


def table(records: list[RequestRecord]) -> str:
    header = ("time (UTC)", "status", "model", "provider", "key", "cache", "tokens in/out/cached", "cost $",
              "ms", "request id", "error")
    rows = [header] + [(
        datetime.fromtimestamp(r.time, UTC).strftime("%Y-%m-%d %H:%M:%S"), str(r.status), r.model or "-",
        r.provider or "-", r.key or "-", r.cache, f"{r.prompt_tokens}/{r.completion_tokens}/{r.cached_tokens}",
        f"{r.cost_usd:.6f}", f"{r.latency_ms:.0f}", r.request_id, r.error or "",
    ) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows) + "\n"


async def run(config: Config, args: argparse.Namespace) -> int:
    from shared import bus  # loaded by this command only: parsing the CLI's arguments stays light

    url = args.nats_url or config.nats_url
    try:
        connection = await bus.connect_once(url, "llm-edge-logs")
    except bus.Unreachable as exc:
        print(f"llm-edge logs: {exc}", file=sys.stderr)
        return 1
    try:
        found = await ask(connection, Subjects(config.prefix), query_of(args), QUERY_TIMEOUT_SECONDS)
    except bus.NoResponders:
        print("llm-edge logs: no logger is running (start one: llm-edge logger)", file=sys.stderr)
        return 1
    except GatewayError as exc:
        print(f"llm-edge logs: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await connection.close()
    if args.json:
        for record in found.records:
            print(msgspec.json.encode(record).decode())
    else:
        print(table(found.records), end="")
        if found.more:
            print(f"(more: --offset {args.offset + len(found.records)})", file=sys.stderr)
    return 0


def main(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(run(config, args))

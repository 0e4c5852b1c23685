"""`llm-edge bench`: drive an OpenAI-compatible URL at a fixed concurrency and report what came back."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import msgspec

from llm_edge.bench import report
from llm_edge.bench.client import Bench, Options


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"a header is 'Name: value', not {text!r}")
    return name.strip(), value.strip()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm-edge bench", description=__doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8080/v1", help="base URL (…/v1)")
    p.add_argument("--model", default="mock")
    p.add_argument("--concurrency", type=int, default=8,
                   help="connections (closed loop: workers, one request at a time each; open loop: the most "
                   "requests in flight)")
    p.add_argument("--rate", type=float, metavar="N",
                   help="open loop: send N requests per second on a fixed schedule and measure each latency "
                   "from its intended send time, as wrk2 does (default: closed loop)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--duration", type=float, default=10.0, help="seconds to measure (default 10)")
    amount.add_argument("--requests", type=int, help="measure exactly this many requests instead")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of uncounted load first (default 1)")
    p.add_argument("--stream", action="store_true", help="ask for SSE streams")
    p.add_argument("--api", choices=("chat", "responses", "embeddings"), default="chat",
                   help="POST …/chat/completions (default), …/responses (OpenAI's Responses API) or …/embeddings")
    p.add_argument("--batch", type=int, default=1, help="with --api embeddings: texts per request (default 1)")
    p.add_argument("--dimensions", type=int, help="with --api embeddings: the `dimensions` to ask for")
    p.add_argument("--store", action="store_true",
                   help="with --api responses: store every response (`store: true`; default `store: false`)")
    p.add_argument("--unique-prompts", action="store_true", help="a distinct prompt per request (cache misses)")
    p.add_argument("--header", action="append", type=_header, default=[], metavar="'NAME: VALUE'",
                   help="extra request header (repeatable)")
    p.add_argument("--api-key", help="send 'Authorization: Bearer KEY'")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the summary as JSON here")
    p.add_argument("--progress", action="store_true", help="show progress even when stderr is not a TTY")


def options_from(args: argparse.Namespace) -> Options:
    headers = list(args.header)
    if args.api_key:
        headers.append(("authorization", f"Bearer {args.api_key}"))
    return Options(
        url=args.url,
        model=args.model,
        concurrency=args.concurrency,
        duration=None if args.requests is not None else args.duration,
        requests=args.requests,
        warmup=args.warmup,
        stream=args.stream,
        unique_prompts=args.unique_prompts,
        headers=tuple(headers),
        timeout=args.timeout,
        rate=args.rate,
        api=args.api,
        store=args.store,
        batch=args.batch,
        dimensions=args.dimensions,
    )


async def _progress(bench: Bench, out: TextIO) -> None:
    options, width = bench.options, 30
    try:
        while True:
            await asyncio.sleep(0.2)
            if not bench.started:
                continue
            now, result = time.perf_counter(), bench.result
            if now < bench.measure_from:
                fraction, label = 0.0, "warm-up"
            elif options.requests is not None:
                fraction, label = result.done / max(1, options.requests), "measuring"
            else:
                fraction, label = (now - bench.measure_from) / (options.duration or 1.0), "measuring"
            fraction = min(1.0, fraction)
            rate = result.ok / max(1e-9, now - bench.measure_from) if now > bench.measure_from else 0.0
            bar = "#" * int(fraction * width)
            out.write(f"\r[{bar:<{width}}] {fraction:4.0%} {label}  ok {result.ok}  errors {result.errors}"
                      f"  {rate:,.0f} req/s ")
            out.flush()
    finally:
        out.write("\r\033[K")
        out.flush()


async def execute(options: Options, progress: bool = False, out: TextIO = sys.stderr) -> dict[str, object]:
    """Run once; the summary dict that `--json` writes."""
    bench = Bench(options)
    ticker = asyncio.create_task(_progress(bench, out)) if progress else None
    try:
        result = await bench.run()
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
    return report.summarize(options, result)


def main(argv: Sequence[str] | None = None) -> int:
    return run_parsed(parser().parse_args(argv))


def run_parsed(args: argparse.Namespace) -> int:
    try:
        options = options_from(args)
        bench_progress = args.progress or sys.stderr.isatty()
        summary = _run(execute(options, bench_progress))
    except ValueError as exc:
        print(f"llm-edge bench: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"llm-edge bench: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(report.table(summary))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(summary)) + b"\n")
    return 0


def _run(coro: object) -> dict[str, object]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]

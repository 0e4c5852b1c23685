"""`llm-edge status [--json] [--watch [N]] [--nats-url URL] [--monitor URL] [--timeout S]`.

Exit code 0 when NATS was reached, 1 when it was not (said on stderr within about two seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import httpx
import msgspec

from llm_edge.status.table import render
from llm_edge.status.topology import Topology, collect
from shared import bus

CONNECT_DEADLINE_SECONDS = 2.0
CLEAR_SCREEN = "\x1b[H\x1b[2J\x1b[3J"  # cursor home, clear the screen and its scrollback


async def connect(url: str) -> bus.Bus:
    """One quick attempt (and one retry): `status` is a question, so it must not wait for a server."""
    return await bus.connect_once(url, "llm-edge-status", CONNECT_DEADLINE_SECONDS)


async def run(args: argparse.Namespace) -> int:
    try:
        connection = await connect(args.nats_url)
    except bus.Unreachable as exc:
        print(f"llm-edge status: {exc}", file=sys.stderr)
        return 1
    try:
        async with httpx.AsyncClient(timeout=max(args.timeout, 1.0)) as http:
            previous: Topology | None = None
            while True:
                topology = await collect(connection, http, args.monitor or None, args.timeout, previous)
                _show(topology, args)
                if args.watch is None:
                    return 0
                previous = topology
                await asyncio.sleep(max(args.watch - args.timeout, 0.0))
    except bus.BusUnavailable:
        print(f"llm-edge status: lost the connection to NATS at {args.nats_url}", file=sys.stderr)
        return 1
    finally:
        await connection.close()


def _show(topology: Topology, args: argparse.Namespace) -> None:
    if args.json:
        encoded = msgspec.json.encode(topology)
        text = encoded.decode() if args.watch is not None else msgspec.json.format(encoded, indent=2).decode()
        print(text, flush=True)
    elif args.watch is not None:
        print(CLEAR_SCREEN + render(topology) + f"\nevery {args.watch:g}s, Ctrl-C to stop", flush=True)
    else:
        print(render(topology), end="", flush=True)


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:  # Ctrl-C is how --watch ends
        return 0

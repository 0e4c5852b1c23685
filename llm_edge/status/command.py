"""`llm-edge status [--json] [--watch [N]] [--nats-url URL] [--monitor URL] [--timeout S]`.

Exit code 0 when NATS was reached, 1 when it was not (said on stderr within about two seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import httpx
import msgspec
import nats
import nats.errors
from nats.aio.client import Client

from llm_edge.status.table import render
from llm_edge.status.topology import Topology, collect

CONNECT_DEADLINE_SECONDS = 2.0
CLEAR_SCREEN = "\x1b[H\x1b[2J\x1b[3J"  # cursor home, clear the screen and its scrollback


class NatsUnreachable(Exception):
    pass


async def connect(url: str) -> Client:
    """One quick attempt (and one retry): `status` is a question, so it must not wait for a server."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)  # nats-py would log these; the one message we print says it all

    try:
        return await asyncio.wait_for(
            nats.connect(url, name="llm-edge-status", connect_timeout=1, reconnect_time_wait=0.2,
                         max_reconnect_attempts=1, error_cb=on_error),
            CONNECT_DEADLINE_SECONDS,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        cause = errors[-1] if errors else exc
        detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        raise NatsUnreachable(f"cannot reach NATS at {url}: {detail}") from exc


async def run(args: argparse.Namespace) -> int:
    try:
        nc = await connect(args.nats_url)
    except NatsUnreachable as exc:
        print(f"llm-edge status: {exc}", file=sys.stderr)
        return 1
    try:
        async with httpx.AsyncClient(timeout=max(args.timeout, 1.0)) as http:
            previous: Topology | None = None
            while True:
                topology = await collect(nc, http, args.monitor or None, args.timeout, previous)
                _show(topology, args)
                if args.watch is None:
                    return 0
                previous = topology
                await asyncio.sleep(max(args.watch - args.timeout, 0.0))
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
        print(f"llm-edge status: lost the connection to NATS at {args.nats_url}", file=sys.stderr)
        return 1
    finally:
        if not nc.is_closed:
            await nc.close()


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

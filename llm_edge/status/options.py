"""The `llm-edge status` options, apart from the command so that parsing them loads no client library."""

from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON document (a line per refresh with --watch)")
    p.add_argument("--watch", nargs="?", type=_seconds, const=2.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) until Ctrl-C")
    p.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
                   help="default: NATS_URL or nats://127.0.0.1:4222")
    p.add_argument("--monitor", default=os.environ.get("NATS_MONITOR_URL", "http://127.0.0.1:8222"),
                   help="nats-server monitoring URL ('' to skip); default: NATS_MONITOR_URL or "
                   "http://127.0.0.1:8222")
    p.add_argument("--timeout", type=_seconds, default=0.5, metavar="SECONDS",
                   help="how long to collect $SRV replies (default 0.5)")


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"needs a positive number of seconds, not {text}")
    return value

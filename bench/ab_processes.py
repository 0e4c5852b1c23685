"""Two (or more) checkouts' CPU per request, process by process, one stack at a time, alternating.

    .venv/bin/python bench/ab_processes.py /path/to/before . --rounds 3 [--hits] [--concurrency 64] [--python EXE]
    .venv/bin/python bench/ab_processes.py . .,LOG_LEVEL=WARNING      # the same checkout, one setting changed

A stack is a checkout, optionally followed by `,NAME=VALUE` pairs: environment variables for that stack's
processes alone. That measures what something costs by taking it away: `LOG_LEVEL=WARNING` (no per-request
line), or `PYTHONPATH=DIR` with a `sitecustomize.py` in DIR that replaces a function by a no-op.

Each round starts each checkout's `llm-edge up` in turn (under `taskset -c 1`, run with this checkout's
virtualenv, as `wrk_compare.py --baseline` does), loads it with wrk (`-t1`, on core 0) against a 50 ms nginx
upstream (misses: unique prompts, `Cache-Control: no-store`; `--hits`: one fixed prompt) for a warm-up and
then the measured seconds, and stops it. Printed per round and checkout: requests per second, p50, and the
utime + stime of each process of the stack over the measured run divided by the requests completed. Only one
stack runs at a time, so an idle stack never competes with the measured one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.procs import process_tree
from bench.wrk_compare import start_llm_edge, start_nginx, wrk


def ticks_by_process(root: int) -> dict[str, int]:
    """Clock ticks (utime + stime) of each process in `root`'s tree, by its role (`ingress`, `router`...)."""
    found: dict[str, int] = {}
    for pid in process_tree(root):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue
        cli = next((i for i, arg in enumerate(argv[:-1]) if arg in ("llm_edge.cli", "services.cli")), None)
        role = argv[cli + 1] if cli is not None else Path(argv[0]).name
        if role == "-c":
            role = "launcher"
        found[role] = found.get(role, 0) + int(stat[11]) + int(stat[12])
    return found


@contextlib.contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    """`settings` in this process's environment while a stack starts (its processes inherit them)."""
    saved = dict(os.environ)
    os.environ.update(settings)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stacks", nargs="+", metavar="CHECKOUT[,NAME=VALUE...]")
    parser.add_argument("--python", metavar="EXE", help="the interpreter to run the stacks with (a virtualenv's "
                        "python with the project installed; default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--hits", action="store_true")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="ab-processes-"))
    here = Path(__file__).resolve().parents[1]
    hz = 100  # USER_HZ, the unit of /proc/PID/stat's times on Linux
    nginx, upstream = start_nginx(out, 50)
    try:
        for round_ in range(1, args.rounds + 1):
            for index, stack in enumerate(args.stacks):
                path, *settings = stack.split(",")
                checkout = Path(path).resolve()
                with environment(dict(setting.split("=", 1) for setting in settings)):
                    target = start_llm_edge(f"s{index}", upstream, out, None if checkout == here else checkout,
                                            args.python)
                if args.hits:
                    target.unique, target.headers = False, []
                assert target.service is not None
                try:
                    wrk(target, args.concurrency, args.warmup, out)
                    before = ticks_by_process(target.service.proc.pid)
                    result = wrk(target, args.concurrency, args.duration, out)
                    after = ticks_by_process(target.service.proc.pid)
                finally:
                    target.service.stop()
                if "failed" in result:
                    print(f"round {round_} {stack}: {result['failed']}")
                    continue
                requests = result["requests"]
                per = {role: (after[role] - before.get(role, 0)) / hz / requests * 1e6 for role in after}
                errors = {k: result[k] for k in ("connect", "read", "write", "timeout", "non_2xx") if result[k]}
                rate = requests / (result["duration_us"] / 1e6)
                print(f"round {round_} {stack} ({target.version.split(',')[0]}) {rate:6.0f} req/s "
                      f"p50 {result['p50'] / 1000:6.1f} ms  CPU per request {sum(per.values()):5.0f} µs: "
                      + " ".join(f"{role} {us:.0f}" for role, us in sorted(per.items()) if us >= 0.5)
                      + (f"  errors {errors}" if errors else ""), flush=True)
    finally:
        nginx.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

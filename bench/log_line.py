"""What one per-request log line costs the ingress: `log.info` of its completion line, through the handler
and JSON formatter `shared.logs.setup` installs, written to a file. Median of `--rounds` of `--lines`.

    .venv/bin/python bench/log_line.py [--lines 20000] [--rounds 7]
    PYTHONPATH=OTHER_CHECKOUT .venv/bin/python bench/log_line.py   # the same for another checkout's code
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    from shared import logs  # after the path is set: PYTHONPATH picks the checkout measured

    with tempfile.TemporaryFile("w") as sink:
        sys.stderr = sink  # the handler writes (and flushes) to stderr, as in a service
        try:
            logs.setup("ingress", "INFO")
            log = logging.getLogger("llm_edge.ingress")
            logs.request_id.set("5f3c2a9b1e7d000000002a")
            rounds = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                for _ in range(args.lines):
                    log.info("request done: %d%s model=%s cache=%s provider=%s in %.1f ms", 200, "", "bench-model",
                             "miss", "up", 3.14159)
                rounds.append((time.perf_counter() - started) / args.lines * 1e6)
        finally:
            sys.stderr = sys.__stderr__
    print(f"{logs.__file__}: {statistics.median(rounds):.1f} us a line (median of {args.rounds} rounds; "
          f"{min(rounds):.1f} to {max(rounds):.1f})")


if __name__ == "__main__":
    main()

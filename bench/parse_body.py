"""What decoding a chat completions body costs the ingress: `parse_chat_request` on the body `llm-edge bench`
sends (no vendor extras) and on one with a vendor extra. Median of `--rounds` of `--bodies`.

    .venv/bin/python bench/parse_body.py
    PYTHONPATH=OTHER_CHECKOUT .venv/bin/python bench/parse_body.py   # the same for another checkout's code
"""

from __future__ import annotations

import argparse
import statistics
import time

PLAIN = (b'{"model":"bench-model","messages":[{"role":"user","content":"bench 5f3c2a9b 12345: tell me something"}],'
         b'"max_tokens":16}')
EXTRA = PLAIN[:-1] + b',"vendor_knob":{"level":3}}'


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bodies", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    from services.ingress import parse  # after the path is set: PYTHONPATH picks the checkout measured

    for name, body in (("no extras", PLAIN), ("a vendor extra", EXTRA)):
        rounds = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            for _ in range(args.bodies):
                parse.parse_chat_request(body)
            rounds.append((time.perf_counter() - started) / args.bodies * 1e6)
        print(f"{parse.__file__}, {name}: {statistics.median(rounds):.2f} us a body (median of {args.rounds} "
              f"rounds; {min(rounds):.2f} to {max(rounds):.2f})")


if __name__ == "__main__":
    main()

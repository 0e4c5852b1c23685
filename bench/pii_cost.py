"""What PII redaction costs the ingress per request, in microseconds of one core: the policy's whole step
(detect, redact the unified request and any native body) on a ~1 KB and a ~20 KB prompt, with and without
personal data in it, beside what the ingress does to every request anyway (decode its JSON, encode it for the
bus), and the restoration of an answer.

    .venv/bin/python bench/pii_cost.py [--repeat 7]

Each figure is CPU time (`time.process_time`, so other processes' load adds nothing but cache misses), the
best of `--repeat` runs of a timeit loop.
"""

from __future__ import annotations

import argparse
import os
import time
import timeit
from collections.abc import Callable

import msgspec

from services.ingress import anthropic_dialect
from services.ingress.parse import bus_payload, parse_chat_request
from services.ingress.pii import Policy
from services.providers.settings import SETTINGS
from shared.config import build
from shared.messages import ChatResult, Choice, ResponseMessage, Usage

# Ordinary support-ticket prose; the personal data sits where a user would put it.
_PROSE = (
    "Hello, I am writing about order 58213 which arrived on 2026-03-14 with a damaged box. The invoice lists "
    "three items but only two were inside, and the tracking page still says the parcel is in transit. I tried "
    "the chat on your website twice, at 10:30 and at 16:45, and both times the session closed before anyone "
    "answered. Could you check what happened and either send the missing item or refund it? I would also like "
    "to know whether the replacement can be shipped to my office instead of my home address, since I am away "
    "during the week. Thank you for looking into this; the rest of the order was fine. "
)
_PERSONAL = ("You can reach me at jane.doe@example.com or (415) 555-2671; the card I paid with is "
             "4111 1111 1111 1111. ")


def prompt(size: int, personal: bool) -> str:
    unit = _PROSE + (_PERSONAL if personal else "")
    return (unit * (size // len(unit) + 1))[:size].rsplit(" ", 1)[0]


def per_call_us(fn: Callable[[], object], repeat: int) -> float:
    timer = timeit.Timer(fn, timer=time.process_time)
    loops, _ = timer.autorange()
    return min(timer.repeat(number=loops, repeat=repeat)) / loops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    policy = Policy(build({"providers": {"mock": {}}, "pii": {"mode": "redact"}}, SETTINGS))
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print("| prompt | JSON decode + bus encode | redact, chat | redact, Messages (+ native body) | restore answer |")
    print("|---|---|---|---|---|")
    for size in (1024, 20 * 1024):
        for personal in (False, True):
            text = prompt(size, personal)
            body = msgspec.json.encode({"model": "mock", "messages": [{"role": "user", "content": text}]})
            messages = msgspec.json.encode(
                {"model": "mock", "max_tokens": 100, "messages": [{"role": "user", "content": text}]})
            chat = parse_chat_request(body)
            native = anthropic_dialect.parse_messages_request(messages, {}, False)
            baseline = per_call_us(lambda: bus_payload(parse_chat_request(body)), args.repeat)  # noqa: B023
            redact = per_call_us(lambda: policy.apply(chat, None), args.repeat)  # noqa: B023
            redact_native = per_call_us(lambda: policy.apply(native, None), args.repeat)  # noqa: B023
            _, restorer = Policy(build({"providers": {"mock": {}}, "pii": {"mode": "redact_restore"}}, SETTINGS)
                                 ).apply(chat, None)
            answer = ChatResult(id="x", created=0, model="m", provider="p", target_model="m", usage=Usage(),
                                choices=[Choice(index=0, message=ResponseMessage(
                                    content=policy.apply(chat, None)[0].messages[0].text()))])
            restore = per_call_us(lambda: restorer.result(answer), args.repeat) if restorer else 0.0  # noqa: B023
            label = f"{len(text.encode()) / 1024:.0f} KB, {'with' if personal else 'no'} personal data"
            print(f"| {label} | {baseline:.0f} µs | {redact:.0f} µs | {redact_native:.0f} µs | "
                  f"{f'{restore:.0f} µs' if restorer else '—'} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""What the request log costs one request at the ingress (the tap on its ASGI messages, the record built
and encoded, queued for the publishing task), in microseconds of CPU: the same loop with and without it.
No bus: records stay queued, so the publishing task's own cost (one publish per batch) is not in it.

    .venv/bin/python bench/request_log_cost.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from services.ingress.context import Call
from services.ingress.gateway import Gateway
from services.ingress.request_log import RequestLog
from services.providers.settings import SETTINGS
from shared.config import build
from shared.messages import Usage


async def main(bodies: bool) -> None:
    config = build({"request_log": {"enabled": True, "bodies": bodies, "queue_size": 10**7}}, SETTINGS)
    log = RequestLog(config, lambda: None)  # no bus: records stay queued (what is measured is the request's share)
    gateway = Gateway(config)
    body = b'{"model":"mock","messages":[{"role":"user","content":"' + b"x" * 500 + b'"}]}'

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        pass

    start_msg = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    body_msg = {"type": "http.response.body", "body": b"y" * 700}
    n = 50000
    t = time.perf_counter()
    for _ in range(n):
        call = Call(gateway)
        call.rid, call.key, call.model, call.provider = "abc", "k", "mock", "mock"
        call.usage = Usage(prompt_tokens=10, completion_tokens=5)
        tap = log.tap({"type": "http", "path": "/v1/chat/completions"}, receive, send)
        await tap.receive()
        await tap.send(start_msg)
        await tap.send(body_msg)
        tap.done(call)
    per = (time.perf_counter() - t) / n * 1e6
    base = time.perf_counter()
    for _ in range(n):
        call = Call(gateway)
        call.rid, call.key, call.model, call.provider = "abc", "k", "mock", "mock"
        call.usage = Usage(prompt_tokens=10, completion_tokens=5)
        await receive()
        await send(start_msg)
        await send(body_msg)
    per_base = (time.perf_counter() - base) / n * 1e6
    print(f"bodies={bodies}: {per - per_base:.1f} us per request on the request path (tap + record + encode + queue)")

if __name__ == "__main__":
    for bodies in (False, True):
        asyncio.run(main(bodies))

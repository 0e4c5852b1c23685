"""What the admission queue (JetStream work queue, `max_in_flight`) adds per request, beside the direct
request-reply path: the real services in one process against a real nats-server with JetStream.

    .venv/bin/python bench/admission.py          # ~15 s
"""

from __future__ import annotations

import sys
import time

import uvloop

sys.path.insert(0, ".")
from tests.infra import NatsServer
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

N = 400
FRESH = {"cache-control": "no-cache, no-store"}


async def main() -> None:
    nats = NatsServer()
    nats.start()
    upstream = MockUpstream()
    await upstream.start()
    config = make_config(nats.url, providers={
        "queued": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "max_in_flight": 64},
        "direct": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1"}})
    stack = await Stack(config).start()
    try:
        for name in ("direct", "queued", "direct", "queued"):
            samples = []
            for i in range(N):
                body = {"model": f"{name}/gpt-4o", "messages": [{"role": "user", "content": f"{name} {i}"}]}
                started = time.perf_counter()
                response = await stack.http.post("/v1/chat/completions", json=body, headers=FRESH)
                samples.append(time.perf_counter() - started)
                assert response.status_code == 200
            samples.sort()
            print(f"{name:<7} p50 {samples[N // 2] * 1e3:.2f} ms  p99 {samples[int(N * 0.99)] * 1e3:.2f} ms")
    finally:
        await stack.close()
        await upstream.stop()
        nats.stop()


if __name__ == "__main__":
    uvloop.run(main())

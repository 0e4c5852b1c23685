"""httpx against aiohttp as the provider workers' upstream client: CPU per request at 64 in flight.

    .venv/bin/python bench/http_clients.py      # starts the mock upstream in-process; ~10 s
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import uvloop

sys.path.insert(0, ".")
from tests.mockupstream.server import MockUpstream

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
HEADERS = {"content-type": "application/json", "authorization": "Bearer x"}
N, CONCURRENCY = 3000, 64


async def run(call: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(CPU µs per request in this process, requests per second); the upstream shares the process."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with slots:
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(N)))
    return (time.process_time() - cpu) / N * 1e6, N / (time.perf_counter() - wall)


async def main() -> None:
    upstream = MockUpstream()
    await upstream.start()
    url = f"{upstream.url}/v1/chat/completions"
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits) as client:
        async def with_httpx() -> None:
            (await client.post(url, content=BODY, headers=HEADERS)).read()

        await run(with_httpx)  # warm the pool
        print("httpx:   %.0f us CPU per request (client + upstream), %.0f req/s" % await run(with_httpx))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        async def with_aiohttp() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()

        await run(with_aiohttp)
        print("aiohttp: %.0f us CPU per request (client + upstream), %.0f req/s" % await run(with_aiohttp))
    await upstream.stop()


if __name__ == "__main__":
    uvloop.run(main())

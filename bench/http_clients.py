"""The provider workers' HTTP client against httpx and aiohttp: CPU per request at 64 in flight.

    make bench-tools                          # nginx with the echo module (Debian), as for wrk_compare.py
    taskset -c 1 .venv/bin/python bench/http_clients.py

The upstream is nginx answering one fixed chat completion at once, in its own process (on core 0), so the
CPU measured (this process's, `time.process_time`) is the client's alone. Each client sends the same POST
N times, 64 at a time, after a warm-up; the clients take turns, twice.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop

sys.path.insert(0, ".")
from bench.wrk_compare import start_nginx
from services.providers.h1 import Pool

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer x"}
N, CONCURRENCY = 6000, 64


async def run(call: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(CPU µs per request in this process, requests per second)."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with slots:
            await call()

    await asyncio.gather(*(one() for _ in range(300)))  # warm the connections
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(N)))
    return (time.process_time() - cpu) / N * 1e6, N / (time.perf_counter() - wall)


async def main() -> None:
    nginx, upstream = start_nginx(Path(tempfile.mkdtemp(prefix="http-clients-")), 0.0)
    url = f"{upstream}/v1/chat/completions"
    try:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(limits=limits) as client, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            pool = Pool(256)

            async def with_httpx() -> None:
                (await client.post(url, content=BODY, headers=HEADERS)).read()

            async def with_aiohttp() -> None:
                async with session.post(url, data=BODY, headers=HEADERS) as response:
                    await response.read()

            async def with_h1() -> None:  # as services/providers/http.py uses it
                response = await pool.request("POST", url, HEADERS, BODY, 10.0)
                try:
                    if response.whole() is None:
                        while await response.next():
                            pass
                finally:
                    response.release()

            for _ in range(2):
                for name, call in (("httpx", with_httpx), ("aiohttp", with_aiohttp), ("h1 (ours)", with_h1)):
                    cpu, rate = await run(call)
                    print(f"{name:10} {cpu:5.0f} µs CPU per request, {rate:6.0f} req/s", flush=True)
            pool.close()
    finally:
        nginx.stop()


if __name__ == "__main__":
    uvloop.run(main())

"""CPU per streamed chunk in the provider workers' HTTP client: `Upstream.open` and `Body.chunks`, the path every
chunk of an upstream SSE stream takes before the adapter parses it.

    taskset -c 1 .venv/bin/python bench/stream_chunks.py            # in each checkout to compare

The upstream is a plain asyncio server in another process that answers each request with `CHUNKS`
chunked-encoding chunks (one SSE event each) in one write, so the CPU measured (this process's,
`time.process_time`) is the client's alone. Twenty streams a pass, seven passes; the best pass is printed.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import os
import socket
import sys
import time

import uvloop

sys.path.insert(0, os.getcwd())  # the checkout it runs in, as bench/bus_cpu.py
from services.providers.base import HttpCall
from services.providers.http import Upstream

CHUNKS = 2000
STREAMS, PASSES = 20, 7
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


def serve(port: int, ready: multiprocessing.synchronize.Event) -> None:
    one = b"%x\r\n%b\r\n" % (len(EVENT), EVENT)
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
              + one * CHUNKS + b"0\r\n\r\n")

    class Answering(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:  # a request without a body: its head is all of it
                _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                self.transport.write(answer)

    async def main() -> None:
        await asyncio.get_running_loop().create_server(Answering, "127.0.0.1", port)
        ready.set()
        await asyncio.Event().wait()

    uvloop.run(main())


async def measure(port: int) -> float:
    upstream = Upstream("bench", 8)
    call = HttpCall("GET", f"http://127.0.0.1:{port}/", {"Accept": "text/event-stream"}, b"")
    best = float("inf")
    for _ in range(PASSES):
        size = 0
        started = time.process_time()
        for _ in range(STREAMS):
            async with upstream.open(call, 60) as body:
                async for piece in body.chunks():  # a chunk, or part of one split across two reads
                    size += len(piece)
        assert size == STREAMS * CHUNKS * len(EVENT), size
        best = min(best, (time.process_time() - started) / (STREAMS * CHUNKS) * 1e6)
    await upstream.close()
    return best


def main() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(10):
            raise SystemExit("the upstream did not start")
        best = uvloop.run(measure(port))
    finally:
        server.kill()
    print(f"{os.getcwd()}: {best:.2f} µs of CPU per chunk (best of {PASSES} passes of {STREAMS} streams of "
          f"{CHUNKS} chunks)")


if __name__ == "__main__":
    main()

"""One NATS request-reply between two processes, measured: the price of every hop on the bus.

    .venv/bin/python bench/bus_rtt.py            # starts its own nats-server; 3,000 sequential 1 KB requests
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import nats
import uvloop
from nats.aio.msg import Msg

sys.path.insert(0, ".")
from tests.infra import NatsServer

N = 3000


async def echo(url: str) -> None:
    nc = await nats.connect(url)

    async def reply(msg: Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe("bench.echo", cb=reply)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def measure(url: str) -> None:
    nc = await nats.connect(url)
    payload = b"x" * 1000
    for _ in range(200):  # warm-up
        await nc.request("bench.echo", payload, timeout=1)
    samples = []
    for _ in range(N):
        started = time.perf_counter()
        await nc.request("bench.echo", payload, timeout=1)
        samples.append(time.perf_counter() - started)
    samples.sort()
    print(f"request-reply over NATS, 1 KB, {N} sequential: p50 {samples[N // 2] * 1e6:.0f} us, "
          f"p90 {samples[int(N * 0.9)] * 1e6:.0f} us, p99 {samples[int(N * 0.99)] * 1e6:.0f} us")
    await nc.close()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "echo":
        uvloop.run(echo(sys.argv[2]))
        return
    server = NatsServer()
    server.start()
    child = subprocess.Popen([sys.executable, __file__, "echo", server.url], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        uvloop.run(measure(server.url))
    finally:
        child.terminate()
        child.wait()
        server.stop()


if __name__ == "__main__":
    main()

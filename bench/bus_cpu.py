"""CPU per request-reply through `shared.bus`: a `Server` endpoint answering `Bus.ask`, both sides in this
one process, against a real nats-server on another core, with the headers a routed request carries.

    taskset -c 1 .venv/bin/python bench/bus_cpu.py [REQUESTS] [PASSES]     # 20,000 and 3 by default

What one request costs the bus's own code and nats-py on both sides: two publishes, two deliveries, the
endpoint's task, the reply multiplexer's waiter, the heartbeat arrangement. Run it in two checkouts
(`cd CHECKOUT && .../python bench/bus_cpu.py`) to compare them; the process's CPU time (user + system)
divided by the requests, not throughput, so other load on the machine moves it less.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import uvloop

sys.path.insert(0, os.getcwd())  # the checkout this runs in, whichever virtualenv runs it
from shared.bus.connection import connect
from shared.bus.context import Context, Raw
from shared.bus.serving import Endpoint, Server, raw
from tests.infra import NatsServer

CONCURRENCY = 32
HEADERS = {"Llm-Request-Id": "abcdef0123456789", "Llm-Deadline": "1790000000000", "Llm-Namespace": "default",
           "Llm-Cache-Control": "no-store", "Llm-Target-Model": "bench-model"}


async def measure(url: str, requests: int) -> None:
    serving = await connect(url, "bus-cpu-server")
    server = Server(serving, "bus-cpu", "0.0.1", "bus CPU benchmark")
    await server.start()

    async def echo(request: bytes, ctx: Context) -> Raw:
        return Raw(request)

    await server.endpoint("echo", "bench.bus-cpu", "bench", Endpoint(raw, echo))
    client = await connect(url, "bus-cpu-client")
    payload = b"x" * 600

    async def asking(count: int) -> None:
        for _ in range(count):
            await client.ask("bench.bus-cpu", payload, HEADERS, 10.0, heartbeat=1.0)

    await asyncio.gather(*(asking(200 // CONCURRENCY) for _ in range(CONCURRENCY)))  # warm-up
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(asking(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    done = requests // CONCURRENCY * CONCURRENCY
    print(f"{used / done * 1e6:.1f} µs CPU per request-reply ({done / elapsed:,.0f} a second, {CONCURRENCY} in flight)",
          flush=True)
    await client.close()
    await serving.close()


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    passes = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    nats = NatsServer()
    nats.start()
    assert nats.process is not None
    # nats-server on the other core: its CPU is not this process's, and it does not compete for it.
    other = "0" if os.sched_getaffinity(0) != {0} else "1"
    subprocess.run(["taskset", "-apc", other, str(nats.process.pid)], stdout=subprocess.DEVNULL, check=False)
    try:
        for _ in range(passes):
            uvloop.run(measure(nats.url, requests))
    finally:
        nats.stop()


if __name__ == "__main__":
    main()

"""What bounding one await costs, by way: nothing, `asyncio.timeout`, a uvloop timer (`call_later` + `cancel`),
and a deadline on the shared timer of `shared/deadlines.py` (`Deadlines.at` + `cancel`, and `within`).

    taskset -c 1 .venv/bin/python bench/timers.py

Each way bounds N awaits of a future that `call_soon` resolves (the await itself is the "bare" figure), with
a deadline 600 s away, as a request's are: set, never due, cancelled. Two passes; CPU µs per await
(`time.process_time`), then each way's cost over the bare await.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable

import uvloop

sys.path.insert(0, os.getcwd())  # the checkout this runs in
from shared import deadlines

N = 200_000


async def main() -> None:
    loop = asyncio.get_running_loop()
    timers = deadlines.current()

    async def answered() -> None:
        future = loop.create_future()
        loop.call_soon(future.set_result, None)
        await future

    async def bare() -> None:
        await answered()

    async def with_asyncio_timeout() -> None:
        async with asyncio.timeout(600):
            await answered()

    async def with_call_later() -> None:
        handle = loop.call_later(600, lambda: None)
        await answered()
        handle.cancel()

    async def with_deadline() -> None:
        due = timers.at(time.monotonic() + 600, lambda: None)
        await answered()
        timers.cancel(due)

    async def with_within() -> None:
        with timers.within(600):
            await answered()

    ways: list[Callable[[], Awaitable[None]]] = [bare, with_asyncio_timeout, with_call_later, with_deadline,
                                                 with_within]
    for pass_ in (1, 2):
        costs: dict[str, float] = {}
        for way in ways:
            started = time.process_time()
            for _ in range(N):
                await way()
            costs[way.__name__] = (time.process_time() - started) / N * 1e6
        print(f"pass {pass_}: " + ", ".join(
            f"{name} {us:.2f} µs" + ("" if name == "bare" else f" (+{us - costs['bare']:.2f})")
            for name, us in costs.items()))


if __name__ == "__main__":
    uvloop.run(main())

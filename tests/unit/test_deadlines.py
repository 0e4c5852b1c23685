"""shared/deadlines.py: many deadlines on one loop timer, and `within`, asyncio.timeout's contract on it."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared import deadlines
from shared.deadlines import Deadlines


async def test_deadlines_fire_in_order_no_earlier_than_due_and_cancelled_ones_never() -> None:
    timers = Deadlines(asyncio.get_running_loop())
    fired: list[tuple[str, float]] = []
    done = asyncio.Event()
    start = time.monotonic()

    def note(name: str) -> None:
        fired.append((name, time.monotonic()))
        if name == "last":
            done.set()

    timers.at(start + 0.06, note, "second")
    dropped = timers.at(start + 0.03, note, "never")
    timers.at(start + 0.02, note, "first")
    timers.at(start + 0.09, note, "last")
    timers.cancel(dropped)
    assert len(timers) == 3
    await asyncio.wait_for(done.wait(), 5)
    assert [name for name, _ in fired] == ["first", "second", "last"]
    for (name, at), due in zip(fired, (0.02, 0.06, 0.09), strict=True):
        assert at >= start + due, f"{name} fired {start + due - at:.4f}s early"
    assert len(timers) == 0


async def test_a_deadline_earlier_than_every_other_rearms_the_timer() -> None:
    timers = Deadlines(asyncio.get_running_loop())
    late = timers.at(time.monotonic() + 600, lambda: None)
    soon = asyncio.Event()
    timers.at(time.monotonic() + 0.01, soon.set)
    await asyncio.wait_for(soon.wait(), 5)  # not 600 s: the timer moved to the new earliest
    timers.cancel(late)


async def test_cancelled_deadlines_do_not_pile_up() -> None:
    """The point of the heap: a wait that ends long before its deadline leaves nothing behind for long."""
    timers = Deadlines(asyncio.get_running_loop())
    now = time.monotonic()
    for i in range(10_000):
        timers.cancel(timers.at(now + 600 + i, lambda: None))
    assert len(timers) == 0
    assert len(timers._heap) <= 2 * 64 + 2  # rebuilt whenever more than half of it was cancelled


async def test_a_failing_callback_is_reported_and_the_others_still_fire() -> None:
    loop = asyncio.get_running_loop()
    timers = Deadlines(loop)
    reported: list[BaseException] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
    try:
        after = asyncio.Event()
        due = time.monotonic() + 0.01

        def fail() -> None:
            raise ValueError("boom")

        timers.at(due, fail)
        timers.at(due, after.set)
        await asyncio.wait_for(after.wait(), 5)
    finally:
        loop.set_exception_handler(previous)
    assert [type(exc) for exc in reported] == [ValueError]


async def test_within_raises_timeout_error_when_the_wait_outlasts_it() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    with pytest.raises(TimeoutError), deadlines.current().within(0.05) as bound:
        await never
    assert bound.expired
    assert time.monotonic() - started >= 0.05
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # the cancel it made is taken back


async def test_within_lets_an_early_answer_through_and_leaves_no_deadline_behind() -> None:
    timers = deadlines.current()
    before = len(timers)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    loop.call_soon(answer.set_result, "done")
    with timers.within(600) as bound:
        assert await answer == "done"
    assert not bound.expired
    assert len(timers) == before


async def test_a_cancel_from_elsewhere_passes_through_as_a_cancel() -> None:
    entered = asyncio.Event()

    async def waits() -> None:
        with deadlines.current().within(600):
            entered.set()
            await asyncio.get_running_loop().create_future()

    task = asyncio.create_task(waits())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_nested_the_earlier_bound_is_the_one_that_fires() -> None:
    timers = deadlines.current()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError), timers.within(600) as outer, timers.within(0.02) as inner:
        await loop.create_future()
    assert inner.expired and not outer.expired

    # the outer's cancel passes through the inner block untouched
    with pytest.raises(TimeoutError), timers.within(0.02) as outer, timers.within(600) as inner:
        await loop.create_future()
    assert outer.expired and not inner.expired

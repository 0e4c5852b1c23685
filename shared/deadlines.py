"""Many deadlines on one event-loop timer: the per-request waits of the miss path.

Every request on the miss path is bounded more than once: a provider worker bounds its upstream call (and
each chunk of a body) with `within`, the bus's reply waiters bound their wait with `at`, and a handler that
was asked for heartbeats holds a deadline for its first beat (`serving.Heartbeat`). Nearly all of those are
cancelled long before they are due (an answer takes 50 ms where the wait allows minutes), so what matters is
what setting and cancelling one costs. `taskset -c 1 /work/venv-opt/bin/python bench/timers.py` (Debian's
PGO+LTO Python 3.11, uvloop; a deadline 600 s away around each of 200,000 awaits; two runs of two passes,
2026-11-30), over the bare await's 2.5-3.8 µs: `asyncio.timeout` +5.4 to +7.6 µs (a Python class, an async
context manager, a uvloop timer), `within` +2.4 to +3.1; a uvloop `call_later` + `cancel` +2.1 to +2.2 (one
pass +0.3), `at` + `cancel` +1.3 to +1.7 (one pass +0.0). Hence this: a heap per event loop and one loop
timer, armed for the earliest deadline only. A cancelled deadline is only marked; the heap is rebuilt from
the live ones when more than half of it is cancelled, so it stays about twice the number of waits in flight.

`Deadlines.within(seconds)` is `asyncio.timeout(seconds)` on that timer, as a plain context manager: the same
cancel-and-`TimeoutError` semantics (`Task.cancel` when due, `Task.uncancel` on the way out, a cancel from
elsewhere passes through). A deadline never fires before it is due; a timer that uvloop (which counts whole
milliseconds) fires early is armed again at least a millisecond ahead."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

# [when, sequence, callback, args]: a list, so that `cancel` can clear its callback in place; the sequence
# number keeps two equal times from ever comparing callbacks.
Deadline = list[Any]

_COMPACT_AFTER = 64  # cancelled entries tolerated before a rebuild is considered at all
_LATE = 0.001  # a timer that fires early is armed again at least this far ahead (uvloop counts milliseconds)


class Deadlines:
    """The deadlines of one event loop (`current()`)."""

    __slots__ = ("_armed_at", "_cancelled", "_heap", "_seq", "_timer", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[Deadline] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")

    def at(self, when: float, callback: Callable[..., object], *args: Any) -> Deadline:
        """Call `callback(*args)` at `when` (`time.monotonic()`), unless cancelled first."""
        entry: Deadline = [when, next(self._seq), callback, args]
        heapq.heappush(self._heap, entry)
        if when < self._armed_at:
            self._arm(when, 0.0)
        return entry

    def cancel(self, entry: Deadline) -> None:
        if entry[2] is None:  # fired or cancelled already
            return
        entry[2] = None
        entry[3] = ()
        self._cancelled += 1
        if self._cancelled > _COMPACT_AFTER and self._cancelled * 2 > len(self._heap):
            self._heap[:] = [e for e in self._heap if e[2] is not None]  # in place: `_fire` may hold it
            heapq.heapify(self._heap)
            self._cancelled = 0

    def within(self, seconds: float) -> Bound:
        """`asyncio.timeout(seconds)` on this timer, for the running task."""
        return Bound(self, time.monotonic() + seconds)

    def __len__(self) -> int:
        """Deadlines still to come (cancelled ones not counted)."""
        return len(self._heap) - self._cancelled

    def _arm(self, when: float, least: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = self.loop.call_later(max(least, when - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = float("inf")
        heap = self._heap
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            callback, args = entry[2], entry[3]
            if callback is None:
                self._cancelled -= 1
                continue
            entry[2] = None
            try:
                callback(*args)
            except Exception as exc:  # as the loop does for a callback of its own: reported, not fatal
                self.loop.call_exception_handler({"message": "a deadline's callback failed", "exception": exc})
        while heap and heap[0][2] is None:  # cancelled ones on top: dropped now rather than woken for
            heapq.heappop(heap)
            self._cancelled -= 1
        if heap:
            self._arm(heap[0][0], _LATE)


class Bound:
    """The running task cancelled at `when`, and that cancel raised as `TimeoutError` at the block's end:
    `asyncio.timeout`'s contract (3.11), without its timer per use."""

    __slots__ = ("_cancelling", "_deadlines", "_entry", "_task", "expired", "when")

    def __init__(self, deadlines: Deadlines, when: float) -> None:
        self._deadlines = deadlines
        self.when = when
        self.expired = False
        self._entry: Deadline | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0

    def __enter__(self) -> Bound:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Bound must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._entry = self._deadlines.at(self.when, self._expire)
        return self

    def _expire(self) -> None:
        assert self._task is not None
        self.expired = True
        self._task.cancel()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._entry is not None:
            self._deadlines.cancel(self._entry)
            self._entry = None
        if self.expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc  # no other cancel is pending: it was ours
        return None


_local = threading.local()


def current() -> Deadlines:
    """The running event loop's deadlines (one per loop; a thread runs one loop at a time)."""
    loop = asyncio.get_running_loop()
    found: Deadlines | None = getattr(_local, "deadlines", None)
    if found is None or found.loop is not loop:
        found = _local.deadlines = Deadlines(loop)
    return found

"""The requester's side of a stream (the ingress): frames in order from one token of the reply
multiplexer, heartbeats skipped, silence noticed, and the cancel notice when the client goes away.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from shared.bus.errors import BusUnavailable, Lost, NoResponders
from shared.bus.replies import TimedOut, Waiter
from shared.errors import DeadlineExceeded, Unavailable
from shared.messages import Reply, reply_decoder
from shared.subjects import Headers

if TYPE_CHECKING:
    from shared.bus.connection import Bus


class Stream:
    """The requester's side of a stream: frames in order, heartbeats skipped, silence noticed."""

    def __init__(self, bus: Bus, waiter: Waiter, cancel: str) -> None:
        self.bus = bus
        self.waiter = waiter
        self.cancel = cancel
        self.finished = False  # the stream ended properly or with an error frame: nothing to cancel

    @property
    def id(self) -> str:
        return self.waiter.token

    async def next(self, timeout: float, what: str) -> Reply:
        """The next frame within `timeout`; `Unavailable` when nothing at all (no frame, no heartbeat)
        arrived for `LOST_AFTER` heartbeats: whoever was serving the stream died."""
        if timeout <= 0:
            raise DeadlineExceeded("The request deadline passed during the stream.")
        try:
            msg = await self.waiter.next(time.monotonic() + timeout)
        except TimedOut:
            raise DeadlineExceeded(f"No {what} within {timeout:.3g}s.", code="stream_timeout") from None
        except Lost:
            raise Unavailable("The gateway lost the service that was handling this stream.",
                              code="stream_lost") from None
        except NoResponders:
            raise Unavailable("No router instance is running.", code="no_router") from None
        return reply_decoder.decode(msg.data)

    async def close(self) -> None:
        self.bus.replies.close(self.waiter)
        if not self.finished and self.bus.connected:
            with contextlib.suppress(BusUnavailable):
                await self.bus.publish(self.cancel, b"", headers={Headers.BUS_ID: self.waiter.token})

"""A journal on the bus: a JetStream stream with limits (age, bytes) that publishers append to without
waiting, and a durable pull consumer that readers share (each message goes to one reader, which acks it
once it has dealt with it; what is not acked comes back). The request log is its one use.

Publishing never blocks its caller: `Appender.append` puts an item in a bounded in-process queue and a
task publishes what is queued as one message (a msgpack array of the items; the JetStream ack awaited
there). While the bus is down the queue holds what it can; beyond `queue_size` new items are dropped and
counted (`on_drop`). A message carries a batch id as `Nats-Msg-Id`, so a publish retried after a lost ack
is stored once (the stream's duplicate window).

Like the rest of `shared/bus/`, nats exceptions stop here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from shared.bus.connection import Bus
from shared.config import Config
from shared.errors import Unavailable
from shared.subjects import Subjects

log = logging.getLogger("llm_edge.bus.journal")

_STORAGE = {"file": StorageType.FILE, "memory": StorageType.MEMORY}
_FAILURES = (nats.errors.Error, nats.js.errors.Error, TimeoutError)
_RETRY_SECONDS = 0.5
_encoder = msgspec.msgpack.Encoder()
_ACK_SECONDS = 5.0
# What a reader that dies (SIGKILL) held comes back to another after this; a reader still working on a
# batch (a slow database) says so every half of it (`working`), so a live one keeps its batch.
READ_ACK_WAIT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Journal:
    """Where a journal lives and how long it keeps what it holds."""

    stream: str
    subject: str
    max_age: float
    max_bytes: int
    storage: str = "file"
    replicas: int = 1

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.stream, subjects=[self.subject], retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD, max_age=self.max_age or None, max_bytes=self.max_bytes or None,
            storage=_STORAGE[self.storage], num_replicas=self.replicas,
        )

    async def ensure(self, js: JetStreamContext) -> None:
        """Create the stream, or bring an existing one to these limits."""
        config = self.config()
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.update_stream(config)


def request_log(config: Config) -> Journal:
    """The request log's stream, as every ingress and logger sees it (the same settings: the same stream)."""
    settings, subjects = config.request_log, Subjects(config.prefix)
    return Journal(subjects.request_log_stream, subjects.request_log, settings.stream_max_age_seconds,
                   settings.stream_max_bytes, settings.storage, config.jetstream_replicas)


class Appender:
    """The publishing side: `append` never waits; a task publishes in the background.

    What is queued when the task comes round leaves as one message (a msgpack array of the appended
    items, each already encoded), its store awaited before the next: one publish and one ack per batch,
    not per item, which is most of the cost on a busy ingress. A batch that fails is tried again whole,
    under the same `Nats-Msg-Id`, so a retry after a lost ack is stored once."""

    def __init__(self, bus: Callable[[], Bus | None], journal: Journal, queue_size: int,
                 on_drop: Callable[[int], None] | None = None, max_batch_bytes: int = 256 * 1024) -> None:
        self.bus = bus  # the connection, once there is one
        self.journal = journal
        self.queue_size = queue_size
        self.on_drop = on_drop
        self.max_batch_bytes = max_batch_bytes
        self.queue: collections.deque[bytes] = collections.deque()
        self.retrying: tuple[str, bytes, int] | None = None  # a batch not stored yet: its id, bytes, items
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()  # set while nothing waits to be published
        self.idle.set()
        self.task: asyncio.Task[None] | None = None
        self.ready = False  # the stream is known to exist
        self.dropped = 0
        self._last_warning = 0.0
        self._batches = itertools.count(1)
        self._prefix = os.urandom(6).hex()

    def append(self, item: bytes) -> None:
        """`item` (an encoded message) will be published; never waits."""
        if self.pending >= self.queue_size:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(1)
            if (now := time.monotonic()) - self._last_warning > 10:
                self._last_warning = now
                log.warning("journal %s: %d items queued, the bus does not take them; dropping new ones "
                            "(%d so far)", self.journal.stream, self.pending, self.dropped)
            return
        self.queue.append(item)
        if self.idle.is_set():
            self.idle.clear()
            if self.task is None:
                self.task = asyncio.get_running_loop().create_task(self._run())
            self.wake.set()

    @property
    def pending(self) -> int:
        return len(self.queue) + (self.retrying[2] if self.retrying is not None else 0)

    async def close(self, grace: float = 5.0) -> None:
        """Publish what is queued (for up to `grace` seconds), then stop."""
        if self.task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), grace)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.pending:
            log.warning("journal %s: %d items not published before shutdown", self.journal.stream, self.pending)

    async def flushed(self) -> None:
        """Until everything appended so far is stored (tests, and shutdown)."""
        await self.idle.wait()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                if not await self._publish_batch():
                    await asyncio.sleep(_RETRY_SECONDS)  # the bus is down or slow: try again shortly
            self.idle.set()

    def _next_batch(self) -> tuple[str, bytes, int]:
        if self.retrying is not None:
            return self.retrying
        items: list[msgspec.Raw] = []
        size = 0
        while self.queue and (not items or size + len(self.queue[0]) <= self.max_batch_bytes):
            item = self.queue.popleft()
            items.append(msgspec.Raw(item))
            size += len(item)
        self.retrying = (f"{self._prefix}-{next(self._batches)}", _encoder.encode(items), len(items))
        return self.retrying

    async def _publish_batch(self) -> bool:
        bus = self.bus()
        if bus is None or not bus.connected:
            return False
        js = bus.nc.jetstream(timeout=_ACK_SECONDS)
        if not self.ready:
            try:
                await self.journal.ensure(js)
                self.ready = True
            except _FAILURES as exc:
                log.warning("journal %s: cannot create the stream (%r)", self.journal.stream, exc)
                return False
        msg_id, data, count = self._next_batch()
        try:
            await js.publish(self.journal.subject, data, headers={"Nats-Msg-Id": msg_id})
        except _FAILURES as exc:
            if isinstance(exc, nats.js.errors.NoStreamResponseError):
                self.ready = False  # deleted under us: create it again
            log.warning("journal %s: %d items not stored yet (%r); retrying", self.journal.stream, count, exc)
            return False
        self.retrying = None
        return True


class Delivered:
    """One message as a reader got it: its bytes, and the handle to ack it with."""

    __slots__ = ("_msg", "data")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.data = msg.data


class Reader:
    """One reader of the journal's durable consumer (every replica of a reader service shares it)."""

    def __init__(self, bus: Bus, journal: Journal, durable: str, max_pending: int) -> None:
        self.bus = bus
        self.journal = journal
        self.durable = durable
        self.max_pending = max_pending

    async def start(self, ready_within: float = 30.0) -> None:
        self.js = self.bus.nc.jetstream(timeout=_ACK_SECONDS)
        give_up = time.monotonic() + ready_within
        while True:
            try:
                await self.journal.ensure(self.js)
                self.sub = await self.js.pull_subscribe(
                    self.journal.subject, durable=self.durable, stream=self.journal.stream,
                    config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                          ack_wait=READ_ACK_WAIT_SECONDS, max_deliver=-1,
                                          max_ack_pending=self.max_pending))
                return
            except _FAILURES as exc:
                if time.monotonic() > give_up:
                    raise Unavailable(f"JetStream cannot serve the journal {self.journal.stream}: {exc!r}",
                                      code="journal_unavailable") from exc
                log.warning("JetStream cannot open the journal %s yet (%r); trying again", self.journal.stream, exc)
                await asyncio.sleep(0.5)  # a starting cluster elects its leader: nothing to wait on but time

    async def fetch(self, batch: int, wait: float) -> list[Delivered]:
        """Up to `batch` messages: what is there at once, else whatever arrives within `wait` seconds."""
        try:
            return [Delivered(msg) for msg in await self.sub.fetch(batch, timeout=wait)]
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except _FAILURES as exc:
            log.warning("reading the journal %s failed (%r)", self.journal.stream, exc)
            await asyncio.sleep(_RETRY_SECONDS)  # the bus is away: try again shortly
            return []

    @staticmethod
    async def done(msgs: list[Delivered]) -> None:
        """Dealt with: the server forgets them for this consumer."""
        for msg in msgs:
            with contextlib.suppress(*_FAILURES):
                await msg._msg.ack()

    @staticmethod
    @contextlib.asynccontextmanager
    async def working(msgs: list[Delivered]) -> AsyncIterator[None]:
        """While the body runs, the server is told every few seconds that `msgs` are still being dealt with."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(READ_ACK_WAIT_SECONDS / 2)  # the in-progress ack's period
                for msg in msgs:
                    with contextlib.suppress(*_FAILURES):
                        await msg._msg.in_progress()

        beating = asyncio.create_task(beat())
        try:
            yield
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    @staticmethod
    async def retry(msgs: list[Delivered], delay: float) -> None:
        """Not dealt with: delivered again (to any reader) after `delay` seconds."""
        for msg in msgs:
            with contextlib.suppress(*_FAILURES):
                await msg._msg.nak(delay=delay)

    @staticmethod
    async def reject(msg: Delivered) -> None:
        """Never to be delivered again (it cannot be read)."""
        with contextlib.suppress(*_FAILURES):
            await msg._msg.term()

    async def pending(self) -> int:
        """Messages not yet delivered to any reader, plus those delivered and not acked."""
        try:
            info = await self.js.consumer_info(self.journal.stream, self.durable)
        except _FAILURES:
            return -1
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def close(self) -> None:
        with contextlib.suppress(*_FAILURES):
            await self.sub.unsubscribe()

"""Admission: a provider's concurrency cap that holds across all its worker replicas, as a JetStream
work queue.

Requests for a capped provider go into a work-queue stream; its one consumer has `max_ack_pending` = the
cap, so the server never hands out more than that many unfinished requests in total, however many workers
pull. The rest wait in the stream, in order, until their deadline. The answer goes to the requester's
reply token (`Llm-Reply-To`) in the one reply multiplexer, like any other reply.

Heartbeats, and why `ack_wait` is short and a redelivery is the retry: the worker that takes a request
beats to the reply token at once and every `HEARTBEAT_SECONDS`, and acks the message *in progress* with
each beat, so `ack_wait` (`LOST_AFTER` beats) never runs out while it lives. When it dies (SIGKILL, OOM,
a lost node), its beats and in-progress acks stop; after `ack_wait` the server redelivers the very same
message to a live worker, which beats to the same token. The requester, disarmed when the silence began,
just keeps waiting on that token. So the retry is the redelivery: one message, one answer awaited, never
a second copy queued beside a redelivered one (the duplicate upstream call re-publishing would cause).
It also covers a worker killed between taking a message and its first beat. `max_deliver` bounds the
retries (`QUEUE_DELIVERIES`); the requester gives up with `Lost` after as many silences. The price is
at-least-once: a worker whose event loop stalls past `ack_wait` may see its request redelivered and run
twice; the requester takes the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from shared.bus.connection import QUEUE_DELIVERIES
from shared.bus.context import Context
from shared.bus.replies import HEARTBEAT_SECONDS, LOST_AFTER
from shared.bus.serving import Endpoint, Heartbeat, Server
from shared.subjects import Headers

log = logging.getLogger("llm_edge.bus.workqueue")

CONSUMER = "workers"
FETCH_SECONDS = 1.0
ACK_WAIT_SECONDS = HEARTBEAT_SECONDS * LOST_AFTER
# How long a starting worker waits for JetStream to be able to create its queue: a cluster that has just
# started (or lost a node) elects its meta leader first.
JETSTREAM_READY_SECONDS = 30.0
_PULL_RETRY_SECONDS = 0.2
_NOT_READY = (nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError, nats.errors.NoRespondersError)


async def ensure_queue(js: JetStreamContext, stream: str, subject: str, cap: int, max_age: float,
                       replicas: int = 1) -> None:
    """Create (or update) the work-queue stream and its single capped consumer. With `replicas` > 1 (a
    cluster), the stream and its consumer live on that many nodes and survive the loss of one."""
    config = StreamConfig(
        name=stream, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.MEMORY, max_age=max_age, num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)
    await js.add_consumer(stream, ConsumerConfig(
        durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=cap,
        ack_wait=ACK_WAIT_SECONDS, max_deliver=QUEUE_DELIVERIES, filter_subject=subject,
    ))


class QueueConsumer:
    """The worker side: pull requests while this process has room, answer each like any other request
    (heartbeats and in-progress acks while it runs), ack it when answered (which frees a slot of the cap)."""

    def __init__(self, server: Server, endpoint: Endpoint[Any], stream: str, subject: str, cap: int,
                 max_age: float, concurrency: int, on_taken: Callable[[float], None] | None = None,
                 on_depth: Callable[[int, int], None] | None = None, replicas: int = 1) -> None:
        self.server = server
        self.endpoint = endpoint
        self.stream = stream
        self.subject = subject
        self.cap = cap
        self.max_age = max_age
        self.replicas = replicas
        self.slots = asyncio.Semaphore(concurrency)
        self.on_taken = on_taken  # with the seconds a request waited in the queue
        self.on_depth = on_depth  # every second, with the requests queued and those in flight
        self.stopping = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.pending = 0  # queued, not yet taken (read every second)
        self.in_flight = 0

    async def start(self) -> None:
        self.js = self.server.bus.nc.jetstream()
        give_up = time.monotonic() + JETSTREAM_READY_SECONDS
        while True:
            try:
                await ensure_queue(self.js, self.stream, self.subject, self.cap, self.max_age, self.replicas)
                break
            except _NOT_READY as exc:
                if time.monotonic() > give_up:
                    raise
                log.warning("JetStream cannot create the queue %s yet (%r); trying again", self.stream, exc)
                await asyncio.sleep(0.5)  # the cluster's election: nothing to wait on but time
        self.sub = await self.js.pull_subscribe(self.subject, durable=CONSUMER, stream=self.stream)
        self.loop_task = asyncio.create_task(self._pull())
        self.depth_task = asyncio.create_task(self._watch_depth())

    async def stop(self) -> None:
        """Stop pulling; finish what was taken."""
        self.stopping = True
        self.loop_task.cancel()
        self.depth_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.loop_task
        with contextlib.suppress(nats.errors.Error):
            await self.sub.unsubscribe()
        if self.tasks:
            await asyncio.wait(set(self.tasks))

    async def _pull(self) -> None:
        while not self.stopping:
            # One message per pull: a pull for more waits until that many arrive or it expires.
            await self.slots.acquire()
            try:
                msgs = await self.sub.fetch(1, timeout=FETCH_SECONDS)
            except nats.errors.TimeoutError:
                msgs = []
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                msgs = []
                self.stopping = True
            except nats.errors.Error as exc:
                # The consumer has no leader for a moment (a cluster node died: 503 while the others elect
                # one), or the connection is between servers: pull again shortly, never stop pulling.
                log.warning("pulling from %s failed (%r); pulling again", self.stream, exc)
                msgs = []
                await asyncio.sleep(_PULL_RETRY_SECONDS)  # the election's pace: nothing to wait on
            if not msgs:
                self.slots.release()
            for msg in msgs:
                task = asyncio.create_task(self._run(msg))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _run(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        reply = headers.pop(Headers.REPLY_TO, "")
        ctx = Context(msg.data, headers, reply)
        beat = None
        if reply:
            try:
                every = max(0.05, float(headers.get(Headers.HEARTBEAT, HEARTBEAT_SECONDS)))
            except ValueError:
                every = HEARTBEAT_SECONDS
            beat = Heartbeat(self.server.bus, reply, every, also=msg.in_progress, now=True)
        try:
            if self.on_taken is not None:
                self.on_taken(max(0.0, time.time() - msg.metadata.timestamp.timestamp()))
            await self.server.answer(self.endpoint, ctx, beat)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await msg.ack()
            self.slots.release()

    async def _watch_depth(self) -> None:
        while not self.stopping:
            try:
                info = await self.js.consumer_info(self.stream, CONSUMER)
                self.pending, self.in_flight = info.num_pending, info.num_ack_pending
                if self.on_depth is not None:
                    self.on_depth(self.pending, self.in_flight)
            except (nats.errors.Error, nats.js.errors.Error):
                pass
            await asyncio.sleep(1.0)  # the sampling period of a gauge

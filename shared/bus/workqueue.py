"""Admission: a provider's concurrency cap that holds across all its worker replicas.

Requests for a capped provider go into a JetStream work-queue stream; its one consumer has
`max_ack_pending` = the cap, so the server never hands out more than that many unfinished requests in
total, however many workers pull. The rest wait in the stream, in order, until their deadline. A worker
acks a request when it has answered it. The answer goes to the `Llm-Reply-To` inbox of the router.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from shared.bus import NoResponders
from shared.errors import DeadlineExceeded, Unavailable
from shared.messages import Reply, reply_decoder
from shared.subjects import Headers, Subjects

CONSUMER = "workers"


async def ensure_queue(js: JetStreamContext, subjects: Subjects, provider: str, cap: int, max_age: float) -> None:
    """Create (or update) the provider's work-queue stream and its single capped consumer."""
    stream = subjects.admission_stream(provider)
    config = StreamConfig(
        name=stream, subjects=[subjects.admission(provider)], retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.MEMORY, max_age=max_age,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)
    await js.add_consumer(stream, ConsumerConfig(
        durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=cap, ack_wait=max_age,
        filter_subject=subjects.admission(provider),
    ))


class ReplyInbox:
    """One wildcard inbox per router process; each queued request waits on its own token."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self._ids = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}

    async def start(self) -> None:
        await self.nc.subscribe(f"{self.prefix}.*", cb=self._deliver)

    async def _deliver(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject)
        if future is not None and not future.done():
            future.set_result(msg)

    async def request(
        self, js: JetStreamContext, subject: str, payload: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[Reply, Msg]:
        if timeout <= 0:
            raise DeadlineExceeded("the request deadline passed before it was queued", where=subject)
        inbox = f"{self.prefix}.{next(self._ids)}"
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[inbox] = future
        started = time.monotonic()
        try:
            try:
                await js.publish(subject, payload, headers={**headers, Headers.REPLY_TO: inbox},
                                 timeout=min(timeout, 5.0))
            except nats.js.errors.NoStreamResponseError as exc:
                raise NoResponders(f"no admission queue for {subject}: no worker has started",
                                   where=subject) from exc
            except nats.errors.TimeoutError as exc:
                raise Unavailable("the admission queue did not accept the request", code="queue_unavailable",
                                  where=subject) from exc
            try:
                msg = await asyncio.wait_for(future, timeout - (time.monotonic() - started))
            except TimeoutError as exc:
                raise DeadlineExceeded("the request deadline passed while queued or in flight",
                                       where=subject) from exc
        finally:
            self._waiting.pop(inbox, None)
        return reply_decoder.decode(msg.data), msg

"""The worker side of admission: pull requests from the provider's work queue while this process has
room, answer them like any other request, ack each when answered (which frees a slot of the cap).
Queue wait and depth are measured here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from shared import bus, metrics
from shared.bus.workqueue import CONSUMER, ensure_queue
from shared.errors import GatewayError, InternalError
from shared.subjects import Headers

if TYPE_CHECKING:
    from services.providers.worker import ProviderWorker

log = logging.getLogger("llm_edge.provider.admission")

FETCH_SECONDS = 1.0
DEPTH_EVERY_SECONDS = 1.0


@dataclass
class Queued:
    """A queued request seen as an ordinary one: its reply subject is the router's inbox."""

    subject: str
    reply: str
    data: bytes
    headers: dict[str, str]


class QueueConsumer:
    def __init__(self, worker: ProviderWorker, cap: int, max_age: float) -> None:
        self.worker = worker
        self.cap = cap
        self.max_age = max_age
        self.slots = asyncio.Semaphore(worker.settings.max_concurrency)
        self.stopping = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.depth = 0

    async def start(self) -> None:
        nc = self.worker.server.nc
        js = nc.jetstream()
        subjects = self.worker.subjects
        await ensure_queue(js, subjects, self.worker.name, self.cap, self.max_age)
        self.sub = await js.pull_subscribe(
            subjects.admission(self.worker.name), durable=CONSUMER,
            stream=subjects.admission_stream(self.worker.name))
        self.js = js
        self.loop_task = asyncio.create_task(self._pull())
        self.depth_task = asyncio.create_task(self._watch_depth())

    async def stop(self) -> None:
        """Stop pulling; finish what was taken (the server redelivers nothing we acked)."""
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
            if not msgs:
                self.slots.release()
            for msg in msgs:
                task = asyncio.create_task(self._run(msg))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _run(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        reply = headers.pop(Headers.REPLY_TO, "")
        try:
            waited = time.time() - msg.metadata.timestamp.timestamp()
            metrics.QUEUE_WAIT.labels(self.worker.name).observe(max(0.0, waited))
            await self.worker.handle(Queued(msg.subject, reply, msg.data, headers))  # type: ignore[arg-type]
        except GatewayError as exc:
            await bus.reply_error(self.worker.server.nc, reply, exc)
        except Exception:  # like the bus glue: a request never goes unanswered
            log.exception("queued request failed")
            await bus.reply_error(self.worker.server.nc, reply, InternalError("internal error"))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await msg.ack()
            self.slots.release()

    async def _watch_depth(self) -> None:
        stream = self.worker.subjects.admission_stream(self.worker.name)
        while not self.stopping:
            try:
                info = await self.js.consumer_info(stream, CONSUMER)
                self.depth = info.num_pending
                metrics.QUEUE_DEPTH.labels(self.worker.name).set(info.num_pending)
                metrics.IN_FLIGHT.labels(self.worker.name).set(info.num_ack_pending)
            except (nats.errors.Error, nats.js.errors.Error):
                pass
            await asyncio.sleep(DEPTH_EVERY_SECONDS)

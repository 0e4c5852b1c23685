"""Registration with the NATS services framework (`nats.micro`), so `nats micro ls/info/stats` and
`$SRV.PING` see every instance, with endpoints whose handlers run concurrently.

micro runs one handler at a time per subscription and has no public hook for a custom endpoint, so this
module subclasses its `Endpoint` and reaches into its private attributes. That use is confined to this
module, and `tests/integration/test_bus.py` fails if a nats-py release changes what it relies on
(nats-py is pinned to a tested range in pyproject.toml).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.service import (
    INFO_RESPONSE_TYPE,
    PING_RESPONSE_TYPE,
    STATS_RESPONSE_TYPE,
    Endpoint,
    EndpointConfig,
    Service,
    ServiceVerb,
    control_subject,
)

from shared.bus import wire

log = logging.getLogger("llm_edge.bus")
WAITING_MAX = 65536  # requests an instance holds beyond its `limit` (nats-py's own default is 512Ki messages)

# What discovery (`llm-edge status`) asks and how the answers are tagged (io.nats.micro.v1.*).
PING_TYPE, INFO_TYPE, STATS_TYPE = PING_RESPONSE_TYPE, INFO_RESPONSE_TYPE, STATS_RESPONSE_TYPE
DISCOVERY_SUBJECTS = [control_subject(verb) for verb in (ServiceVerb.PING, ServiceVerb.INFO, ServiceVerb.STATS)]

Run = Callable[[Msg], Awaitable[Exception | None]]  # handles one request; the error it answered with


class TaskEndpoint(Endpoint):
    """An endpoint whose requests each run as their own task, at most `limit` at a time; the others wait in
    the order they came. Delivered by `wire.sink` (no queue or task of nats-py's per message). Stats time
    the whole task."""

    def __init__(self, service: Service, name: str, subject: str, queue: str, run: Run,
                 spawn: Callable[[Awaitable[None]], None], limit: int) -> None:
        super().__init__(service, EndpointConfig(name=name, subject=subject, queue_group=queue,
                                                 handler=_unused))
        self._run_one = run
        self._spawn = spawn
        self._free = limit
        self._waiting: deque[Msg] = deque()

    async def _start(self) -> None:
        assert not self._subscription
        self._subscription = await wire.sink(self._service._client, self._subject, self._arrived,
                                             self._queue_group)

    def _arrived(self, msg: Msg) -> None:
        if self._free:
            self._free -= 1
            self._spawn(self._timed(msg))
        elif len(self._waiting) < WAITING_MAX:
            self._waiting.append(msg)
        else:  # as nats-py's own slow-consumer limit would: the requester's deadline or silence tells it
            log.warning("endpoint %s: %d requests waiting; dropping one", self._name, len(self._waiting))

    async def _timed(self, msg: Msg) -> None:
        start = time.perf_counter_ns()
        self._num_requests += 1
        try:
            error = await self._run_one(msg)
            if error is not None:
                self._num_errors += 1
                self._last_error = f"{type(error).__name__}: {error}"  # type: ignore[assignment]
        finally:
            if self._waiting:  # the slot passes to the next waiting request (a drain waits for it too)
                self._spawn(self._timed(self._waiting.popleft()))
            else:
                self._free += 1
            self._processing_time += time.perf_counter_ns() - start
            self._average_processing_time = int(self._processing_time / self._num_requests)


async def _unused(request: object) -> None:  # micro requires a handler; TaskEndpoint never calls it
    raise AssertionError("TaskEndpoint handles its own requests")


async def register(nc: Client, name: str, version: str, description: str) -> Service:
    return await add_service(nc, name=name, version=version, description=description)


async def add_endpoint(service: Service, endpoint: TaskEndpoint) -> None:
    service._endpoints.append(endpoint)  # so INFO and STATS list it
    await endpoint._start()


async def stop_taking(service: Service) -> None:
    """Unsubscribe every endpoint, letting messages already delivered to us be handled (drain)."""
    for endpoint in list(service._endpoints):
        if endpoint._subscription is not None:
            await endpoint._subscription.drain()
            endpoint._subscription = None


async def stop(service: Service) -> None:
    service._endpoints = []  # already drained: micro's own stop would unsubscribe them again
    await service.stop()

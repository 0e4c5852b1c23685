"""The provider workers' HTTP client: one connection pool per worker (`h1.py`), and the one place where
transport exceptions become our errors (timeouts -> 504, connection trouble -> 502, both retryable).

Three waits bound a call, none of them its whole length: connect (`connect_timeout_seconds`), the first
byte (`timeout_seconds`: the response head, then a stream's first chunk) and the silence between two
chunks of the body (`idle_timeout_seconds`). The request's deadline, passed in by the caller, is the only
total, so a stream that sends a chunk every few seconds runs for as long as the client is willing to wait.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from services.providers.base import HttpCall
from services.providers.h1 import BadResponse, ConnectTimedOut, Disconnected, HttpError, Pool, Response
from shared import deadlines
from shared.config import ProviderSettings
from shared.errors import DeadlineExceeded, ProviderError


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Waits:
    connect: float
    first_byte: float
    idle: float

    @classmethod
    def of(cls, settings: ProviderSettings) -> Waits:
        return cls(settings.connect_timeout_seconds, settings.timeout_seconds, settings.idle_timeout_seconds)


class Body:
    """A response body read chunk by chunk, each read bounded by the idle wait and the request's deadline;
    the first chunk of a stream by what is left of the first-byte wait."""

    def __init__(self, upstream: Upstream, response: Response, first_by: float, deadline: float) -> None:
        self.upstream, self.response = upstream, response
        self.first_by, self.deadline = first_by, deadline
        self.started = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            data = await self._next()
            if not data:
                return
            yield data

    async def read(self) -> bytes:
        return b"".join([data async for data in self.chunks()])

    async def _next(self) -> bytes:
        now = time.monotonic()
        idle = self.upstream.waits.idle
        wait, what = (idle, "idle") if self.started else (max(0.0, self.first_by - now), "first_byte")
        if self.deadline - now < wait:
            wait, what = max(0.0, self.deadline - now), "deadline"
        try:
            with deadlines.current().within(wait):
                data = await self.response.next()
        except TimeoutError as exc:
            raise self.upstream.timed_out(what, wait) from exc
        except HttpError as exc:  # cut off, or not HTTP any more, midway through the body
            raise self.upstream.broke_off(exc) from exc
        self.started = True
        return data


_CODES = {"connect": "provider_connect_timeout", "first_byte": "provider_timeout",
          "idle": "provider_idle_timeout", "deadline": "deadline_exceeded"}


class Upstream:
    def __init__(self, provider: str, max_connections: int, waits: Waits | None = None) -> None:
        self.provider = provider
        self.where = f"provider:{provider}"
        self._max_connections = max_connections
        self.waits = waits or Waits(10.0, 600.0, 60.0)
        self._pool: Pool | None = None

    def pool(self) -> Pool:
        # Created lazily: its semaphore belongs to the running loop.
        if self._pool is None:
            self._pool = Pool(self._max_connections)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    async def send(self, call: HttpCall, timeout: float) -> Answer:
        """The whole answer; `timeout`: what is left of the request's deadline."""
        response, first_by, deadline = await self._request(call, timeout)
        try:
            body = response.whole()  # a short answer comes whole with its head: no wait to bound
            if body is None:
                body = await Body(self, response, first_by, deadline).read()
            return Answer(response.status, response.headers, body)
        finally:
            response.release()

    @asynccontextmanager
    async def open(self, call: HttpCall, timeout: float) -> AsyncIterator[Body]:
        """The response with its body unread (for streams); errors translated on the way out. `timeout`:
        what is left of the request's deadline."""
        response, first_by, deadline = await self._request(call, timeout)
        try:
            yield Body(self, response, first_by, deadline)
        finally:
            response.release()

    async def _request(self, call: HttpCall, timeout: float) -> tuple[Response, float, float]:
        """The response's head (by the first-byte wait or the deadline), when its first body byte is due
        (a stream's), and the deadline."""
        started = time.monotonic()
        deadline = started + timeout
        first_by = started + self.waits.first_byte
        wait, what = (self.waits.first_byte, "first_byte") if first_by <= deadline else (timeout, "deadline")
        try:
            with deadlines.current().within(wait):
                response = await self.pool().request(call.method, call.url, call.headers, call.body,
                                                     self.waits.connect)
        except ConnectTimedOut as exc:
            raise self.timed_out("connect", self.waits.connect) from exc
        except TimeoutError as exc:
            raise self.timed_out(what, wait) from exc
        except (Disconnected, BadResponse) as exc:
            raise self.broke_off(exc) from exc
        except HttpError as exc:
            raise self.unreachable(exc) from exc
        return response, first_by, deadline

    def timed_out(self, what: str, seconds: float) -> DeadlineExceeded:
        text = {
            "connect": f"could not connect within {seconds:.1f}s",
            "first_byte": f"no answer within {seconds:.1f}s",
            "idle": f"the answer stalled: nothing for {seconds:.1f}s",
            "deadline": "the request deadline passed",
        }[what]
        return DeadlineExceeded(f"{self.provider}: {text}", code=_CODES[what], where=self.where)

    def broke_off(self, exc: Exception) -> ProviderError:
        return ProviderError(f"{self.provider}: the connection broke off ({type(exc).__name__})",
                             code="provider_stream_interrupted", where=self.where)

    def unreachable(self, exc: Exception) -> ProviderError:
        return ProviderError(f"{self.provider}: cannot reach the provider ({type(exc).__name__})",
                             code="provider_unreachable", where=self.where)

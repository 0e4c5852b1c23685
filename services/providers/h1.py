"""The provider workers' HTTP/1.1 client: a keep-alive pool of connections per origin on asyncio transports,
responses parsed by httptools (llhttp, the parser uvicorn uses).

Written here rather than taken from aiohttp, which the workers used before, because of what it cost: against
nginx at 64 requests in flight on one core, aiohttp spent 225–265 µs of CPU on each request and this client
40–50 µs (`taskset -c 1 .venv/bin/python bench/http_clients.py`; httpx: 2.5 ms); on a cache miss aiohttp
was about a sixth of the whole gateway's CPU (docs/PERFORMANCE.md). A provider call needs little of a
general client: one request whose body is in hand, and a response read whole or as a stream. Left out on
purpose: redirects (a provider call never follows one), cookies (never kept: one pool serves every tenant),
proxies and HTTP/2 (neither is configured anywhere). We ask for no compression; a response compressed all
the same (gzip, deflate) is inflated.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

# A body's bytes buffered and not yet read, above which the connection stops reading (and below which it
# reads again): a slow reader holds at most about this much of an answer in memory.
_PAUSE_AT, _RESUME_AT = 1 << 20, 1 << 18
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})


class HttpError(Exception):
    """Why a request failed below HTTP."""


class ConnectFailed(HttpError):
    """No connection: the name did not resolve, the port refused, TLS failed."""


class ConnectTimedOut(HttpError):
    """No connection within the connect wait."""


class Disconnected(HttpError):
    """The server closed or broke the connection before the response ended."""


class BadResponse(HttpError):
    """What came back is not an HTTP/1.x response."""


class BadRequest(HttpError):
    """The request cannot be written: a header with a line break in it (no header injection)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's request goes: its origin (the pool's key), the request target and the Host header."""

    scheme: str
    host: str
    port: int
    path: str
    authority: str


@lru_cache(maxsize=1024)
def target(url: str) -> Target:
    try:
        parts = urlsplit(url)
        explicit = parts.port
    except ValueError as exc:  # a port that is not a number
        raise BadRequest(f"not a URL: {url!r}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"not an http(s) URL: {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = explicit or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, shown if port == default else f"{shown}:{port}")


def request_head(method: str, where: Target, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {where.path} HTTP/1.1\r\nHost: {where.authority}\r\n"]
    accept = False
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _OWN_HEADERS:
            continue
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise BadRequest(f"header {name!r} holds a line break or a colon")
        accept = accept or lowered == "accept"
        lines.append(f"{name}: {value}\r\n")
    if not accept:
        lines.append("Accept: */*\r\n")
    if length or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {length}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


class Response:
    """A response: its status and headers once its head arrived, then its body as the bytes come."""

    __slots__ = ("_chunks", "_conn", "_ended", "_inflate", "_raw_headers", "_size", "_waiter", "complete",
                 "error", "headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: CIMultiDictProxy[str] = _NO_HEADERS
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._inflate: zlib._Decompress | None = None
        self.complete = False  # the whole body arrived
        self.error: HttpError | None = None
        self._ended = False  # the connection is no longer this response's

    # --- what the connection tells it ---

    def _head(self, status: int) -> None:
        self.status = status
        headers: CIMultiDict[str] = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in self._raw_headers)
        self.headers = CIMultiDictProxy(headers)
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = zlib.decompressobj(47 if encoding != "deflate" else 15)
        self._wake()

    def _feed(self, data: bytes) -> None:
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error as exc:
                self._fail(BadResponse(f"the body does not inflate: {exc}"))
                return
        if data:
            self._chunks.append(data)
            self._size += len(data)
            if self._size > _PAUSE_AT:
                self._conn.pause()
            self._wake()

    def _finish(self) -> None:
        if self._inflate is not None and (rest := self._inflate.flush()):
            self._chunks.append(rest)
        self.complete = True
        self._wake()

    def _fail(self, error: HttpError) -> None:
        if not self.complete and self.error is None:
            self.error = error
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- what the caller asks ---

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def started(self) -> None:
        """Until the head is in (`status`, `headers`)."""
        while not self.status:
            if self.error is not None:
                raise self.error
            await self._wait()

    def whole(self) -> bytes | None:
        """The body, when all of it has already arrived; None while more is to come."""
        if not self.complete or self.error is not None:
            return None
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        return data

    async def next(self) -> bytes:
        """The body's next bytes; b"" once it is whole."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size < _RESUME_AT:
            self._conn.resume()
        return data

    def release(self) -> None:
        """Done with it: a connection whose response was read to its end is kept for the next request,
        one left midway is closed."""
        if not self._ended:
            self._conn.done(self, reusable=False)


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one response at a time."""

    def __init__(self, pool: Pool, key: tuple[str, str, int]) -> None:
        self.pool, self.key = pool, key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.paused = False
        self.until_close = False  # the body ends when the server closes (no length, not chunked)

    # --- asyncio ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # nothing asked: a server that talks out of turn is not reused
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.response is not None:
                self.response._fail(BadResponse(f"not an HTTP response: {exc}"))
                self.done(self.response, reusable=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is None:
            return
        if response.status and self.until_close and response.error is None:
            response._finish()  # the close is the body's end
        else:
            response._fail(Disconnected("the connection closed before the response ended"))
        self.done(response, reusable=False)

    # --- httptools ---

    def on_message_begin(self) -> None:
        if self.response is None:  # a response nobody asked for (after the one we read): never reuse this
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        delimited = False  # by a length or by chunks; else by the close
        for name, value in response._raw_headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                delimited = True
        self.until_close = not delimited
        response._head(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None and response.error is None:
            response._finish()
            self.done(response, reusable=self.parser.should_keep_alive())

    # --- the pool's ---

    def ask(self, head: bytes, body: bytes) -> Response:
        assert self.transport is not None
        self.response = response = Response(self)
        self.until_close = False
        if len(body) < 65536:  # one write; a larger body is not copied to join it
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        return response

    def done(self, response: Response, reusable: bool) -> None:
        """`response` no longer needs this connection: back to the pool or closed (once)."""
        if response._ended:
            return
        response._ended = True
        self.response = None
        self.resume()
        reuse = reusable and not self.closed
        if not reuse:
            self.close()
        self.pool._returned(self, reuse)

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Connections per origin, at most `limit` in use at once (a request past it waits for one)."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
                      connect_timeout: float) -> Response:
        """Send the request; the response once its head is in. Cancelled meanwhile, the connection is
        closed (its answer would arrive for nobody)."""
        where = target(url)
        head = request_head(method, where, headers, len(body))
        await self._slots.acquire()
        try:
            conn = await self._connection(where, connect_timeout)
        except BaseException:
            self._slots.release()
            raise
        response = conn.ask(head, body)
        try:
            await response.started()
        except BaseException:
            response.release()
            raise
        return response

    async def _connection(self, where: Target, connect_timeout: float) -> _Connection:
        key = (where.scheme, where.host, where.port)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if where.scheme == "https" else None
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key), where.host, where.port, ssl=tls,
                    server_hostname=where.host if tls is not None else None)
        except TimeoutError as exc:
            raise ConnectTimedOut(f"no connection to {where.host}:{where.port} within {connect_timeout:g}s") from exc
        except OSError as exc:  # refused, unresolvable, TLS (ssl.SSLError is an OSError)
            raise ConnectFailed(f"cannot connect to {where.host}:{where.port} ({type(exc).__name__})") from exc
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()  # the system's CAs, verified, SNI (as aiohttp did)
        return self._tls

    def _returned(self, conn: _Connection, reuse: bool) -> None:
        self._slots.release()
        if reuse:
            self._idle.setdefault(conn.key, []).append(conn)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

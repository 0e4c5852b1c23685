"""A mock LLM provider speaking OpenAI Chat Completions and Responses, Anthropic Messages, Azure OpenAI, Gemini
and Bedrock Converse (and each one's embeddings) exactly as they look on the wire (the formats: `formats.py`,
`embeddings.py` and one module per cloud provider).

Raw asyncio + httptools (keep-alive, Content-Length requests, chunked SSE or event-stream replies) so that it
is never the bottleneck of a benchmark; tests script errors, delays and broken streams via `/_mock/*` or
`MockUpstream` (`/_mock/script` queues answers one by one, `/_mock/fault` answers every call alike for a
while).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httptools
import msgspec

from tests.mockupstream import bedrock, embeddings, gemini
from tests.mockupstream.clouds import Clouds
from tests.mockupstream.dialects import dialect_for
from tests.mockupstream.formats import (
    REASONS,
    Dialect,
    Scripted,
    decode_any,
    encode,
    openai_error,
    script_decoder,
)

# --- HTTP/1.1 --------------------------------------------------------------------------------------------


def _head(
    status: int, headers: dict[str, str], keep_alive: bool, content_type: bytes, length: int | None
) -> bytes:
    out = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))]
    for name, value in headers.items():  # scripted headers; a scripted content-type replaces ours
        if name.lower() == "content-type":
            content_type = value.encode("latin-1")
        else:
            out.append(f"{name}: {value}\r\n".encode("latin-1"))
    out.append(b"content-type: %s\r\n" % content_type)
    out.append(b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length)
    if length is None:
        out.append(b"cache-control: no-cache\r\n")
    if not keep_alive:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _response(status: int, body: bytes, headers: dict[str, str], keep_alive: bool) -> bytes:
    return _head(status, headers, keep_alive, b"application/json", len(body)) + body


@dataclass(slots=True)
class _Request:
    method: bytes
    path: bytes
    url: bytes  # the path with its query
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool


@dataclass(slots=True)
class _Out:
    head: bytes  # status line and headers, plus the whole body when not streaming
    frames: list[bytes]  # chunk-encoded SSE frames
    cut: bool = False  # close the connection after the frames, leaving the body unfinished


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: MockUpstream) -> None:
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.in_call = False  # an LLM response has been started but not finished
        self.task: asyncio.Task[None] | None = None
        self.pending: deque[_Request] = deque()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.upstream._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.upstream._conns.discard(self)
        self.pending.clear()
        if self.in_call:
            self.in_call = False
            self.upstream._count_disconnect()
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(_response(400, openai_error(400, "Malformed HTTP request.", 0), {}, False))
            self.close()

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits a second for it on large bodies

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0]
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = _Request(
            self.parser.get_method(), path, self._url, self._headers, body, self.parser.should_keep_alive()
        )
        if self.task is None:
            self.serve(req)
        else:  # a pipelined request waits for the one in progress
            self.pending.append(req)

    def serve(self, req: _Request) -> None:
        work = self.upstream._handle(self, req)
        if work is not None:
            self.task = asyncio.get_running_loop().create_task(self._run(work))

    async def _run(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        finally:
            self.task = None
        while self.pending and self.task is None and not self.closed:
            self.serve(self.pending.popleft())

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class MockUpstream:
    """The server; use it in-process (`await start()`, `.stats`, `.script()`) or through `main()`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        chunks: int = 8,
        chunk_interval_ms: float = 0.0,
    ) -> None:
        self.host, self.port = host, port
        self.latency_ms, self.chunks, self.chunk_interval_ms = latency_ms, chunks, chunk_interval_ms
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._script: deque[Scripted] = deque()
        self._fault: Scripted | None = None  # answers every call until `_fault_until` (a timed fault)
        self._fault_until = 0.0
        self._seq = 0
        self.clouds = Clouds()  # the clouds' credential services, and the checks of what calls carry
        self.reset()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        tasks = [c.task for c in self._conns if c.task is not None]
        for conn in list(self._conns):
            conn.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    # --- control plane ---

    def script(self, responses: Sequence[dict[str, Any]]) -> None:
        self._script.extend(script_decoder.decode(encode({"responses": list(responses)})).responses)

    def fault(self, response: dict[str, Any], seconds: float) -> None:
        """Answer every call like `response` (a script entry) for the next `seconds`: a 429 storm, a 5xx
        burst, hanging calls or cut streams that last a while, whatever the request rate."""
        self._fault = _fault_decoder.decode(encode(response))
        self._fault_until = time.monotonic() + seconds

    def reset(self) -> None:
        self._script.clear()
        self._fault, self._fault_until = None, 0.0
        self._calls = 0
        self._by_path: Counter[str] = Counter()
        self._in_flight = self._max_in_flight = self._disconnects = 0
        self._last_body: bytes | None = None
        self._last_url = ""
        self._last_headers: list[tuple[bytes, bytes]] = []
        self._journal: deque[tuple[str, list[tuple[bytes, bytes]], bytes]] = deque(maxlen=200)
        self.clouds.reset()
        self._notify()

    @property
    def last_body(self) -> bytes | None:
        """The last LLM call's body exactly as received (stats hold it decoded)."""
        return self._last_body

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every LLM call since the last reset (the last 200): its URL, headers and decoded body."""
        out = []
        for url, headers, body in self._journal:
            try:
                decoded = decode_any(body)
            except msgspec.DecodeError:
                decoded = None
            names = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
            out.append({"url": url, "headers": names, "body": decoded})
        return out

    @property
    def stats(self) -> dict[str, Any]:
        try:
            last = None if self._last_body is None else decode_any(self._last_body)
        except msgspec.DecodeError:
            last = None
        return {
            "calls": self._calls,
            "calls_by_path": dict(self._by_path),
            "in_flight": self._in_flight,
            "max_in_flight": self._max_in_flight,
            "disconnects": self._disconnects,
            "last_request": last,
            "last_url": self._last_url,
            "last_headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._last_headers},
        }

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 2.0
    ) -> dict[str, Any]:
        """Wait until `predicate(stats)` holds, woken by the server whenever a counter changes."""
        async with asyncio.timeout(timeout):
            while not predicate(stats := self.stats):
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter
        return stats

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _count_disconnect(self) -> None:
        self._disconnects += 1
        self._notify()

    # --- data plane ---

    def _handle(self, conn: _Connection, req: _Request) -> Coroutine[Any, Any, None] | None:
        dialect = dialect_for(req.path)
        if dialect is not None and req.method == b"POST":
            return self._llm_call(conn, req, dialect)
        headers = _lower(req.headers)
        if (answer := self.clouds.serve(req.method, req.path, req.url, headers, req.body)) is not None:
            status, body, extra = answer
            conn.write(_response(status, body, extra, req.keep_alive))
        else:
            status, body = self._control(req)
            conn.write(_response(status, body, {}, req.keep_alive))
        if not req.keep_alive:
            conn.close()
        return None

    def _control(self, req: _Request) -> tuple[int, bytes]:
        match req.method, req.path:
            case b"GET", b"/_mock/stats":
                return 200, encode(self.stats)
            case b"GET", b"/_mock/requests":
                return 200, encode(self.requests)
            case b"POST", b"/_mock/reset":
                self.reset()
                return 200, b'{"ok":true}'
            case b"POST", b"/_mock/fault":
                try:
                    fault = _timed_fault_decoder.decode(req.body)
                except msgspec.MsgspecError as exc:
                    return 400, openai_error(400, f"Bad fault: {exc}", 0)
                self._fault, self._fault_until = fault.response, time.monotonic() + fault.seconds
                return 200, b'{"ok":true}'
            case b"GET", b"/_mock/clouds":  # the credentials handed out, for tests of another process
                return 200, encode({"fetches": [dataclasses.asdict(f) for f in self.clouds.fetches]})
            case b"POST", b"/_mock/clouds":
                try:
                    settings = _clouds_decoder.decode(req.body)
                except msgspec.MsgspecError as exc:
                    return 400, openai_error(400, f"Bad clouds settings: {exc}", 0)
                self.clouds.lifetime.update(settings.lifetime)
                if settings.web_identity_tokens is not None:
                    self.clouds.web_identity_tokens = set(settings.web_identity_tokens)
                return 200, b'{"ok":true}'
            case b"POST", b"/_mock/script":
                try:
                    self._script.extend(script_decoder.decode(req.body).responses)
                except msgspec.MsgspecError as exc:
                    return 400, openai_error(400, f"Bad script: {exc}", 0)
                return 200, encode({"queued": len(self._script)})
        return 404, openai_error(
            404, f"Invalid URL ({req.method.decode()} {req.path.decode(errors='replace')})", 0
        )

    def _llm_call(
        self, conn: _Connection, req: _Request, dialect: Dialect
    ) -> Coroutine[Any, Any, None] | None:
        self._seq += 1
        self._calls += 1
        self._by_path[req.path.decode()] += 1
        self._last_body, self._last_headers = req.body, req.headers
        self._last_url = req.url.decode("latin-1")
        self._journal.append((self._last_url, req.headers, req.body))
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        self._notify()  # a call has arrived: `wait_for` may be waiting for it
        conn.in_call = True
        if (denied := self._denied(req)) is not None:
            status, body, extra = denied
            out = _Out(_response(status, body, extra, req.keep_alive), [])
            conn.write(out.head)
            self._finish(conn, req, out)
            return None
        if self._script:
            scripted: Scripted | None = self._script.popleft()
        else:
            scripted = self._fault if self._fault is not None and time.monotonic() < self._fault_until else None
        out = self._outcome(req, dialect, self._seq, scripted)
        delay = (self.latency_ms + (scripted.delay_ms if scripted else 0.0)) / 1000
        interval = self.chunk_interval_ms / 1000 if out.frames else 0.0
        if delay <= 0 and interval <= 0:  # the fast path: answered without a task
            conn.write(out.head + b"".join(out.frames))
            self._finish(conn, req, out)
            return None
        return self._send_later(conn, req, out, delay, interval)

    def _denied(self, req: _Request) -> tuple[int, bytes, dict[str, str]] | None:
        """The cloud's refusal of a call whose run-time credentials are not live ones issued by `clouds`:
        SigV4 on Bedrock, a bearer token on Azure OpenAI (its api-key is not checked) and Vertex AI."""
        headers = _lower(req.headers)
        authorization = headers.get("authorization", "")
        if bedrock.matches(req.path) and authorization.startswith("AWS4-HMAC-SHA256"):
            return self.clouds.check_sigv4(req.method, req.url, headers, req.body)
        if req.path.startswith(b"/openai/") and "api-key" not in headers:
            return self.clouds.check_bearer(headers, google=False)
        if gemini.vertex_matches(req.path):
            return self.clouds.check_bearer(headers, google=True)
        return None

    async def _send_later(
        self, conn: _Connection, req: _Request, out: _Out, delay: float, interval: float
    ) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            if interval <= 0:
                conn.write(out.head + b"".join(out.frames))
                return
            conn.write(out.head)
            for i, frame in enumerate(out.frames):
                if i:
                    await asyncio.sleep(interval)
                conn.write(frame)
        finally:
            self._finish(conn, req, out)

    def _finish(self, conn: _Connection, req: _Request, out: _Out) -> None:
        conn.in_call = False
        self._in_flight -= 1
        if out.cut or not req.keep_alive:
            conn.close()
        self._notify()

    def _outcome(self, req: _Request, dialect: Dialect, seq: int, scripted: Scripted | None) -> _Out:
        headers, ka = (scripted.headers if scripted else {}), req.keep_alive
        if scripted is not None and scripted.replaces_reply:
            if scripted.raw is not None:
                body = scripted.raw.encode()
            elif scripted.body is not None:
                body = encode(scripted.body)
            else:
                body = dialect.error(scripted.status, scripted.message, seq)
                headers = dialect.error_headers(scripted.status) | headers
            return _Out(_response(scripted.status, body, headers, ka), [])
        try:
            plan = dialect.plan(req.url, req.body)
        except msgspec.MsgspecError as exc:
            body = dialect.error(400, f"Invalid request body: {exc}", seq)
            return _Out(_response(400, body, dialect.error_headers(400) | headers, ka), [])
        if scripted is not None and scripted.tool_call is not None:
            call = scripted.tool_call
            plan = dataclasses.replace(plan, text="", tool=call.name, arguments=call.arguments,
                                       completion_tokens=max(1, len(call.arguments.split())))
        cut = scripted.fail_after_chunks if scripted else None
        headers = embeddings.response_headers(plan) | headers
        if not plan.stream:
            body = dialect.body(plan, seq)
            if cut is None:
                return _Out(_response(200, body, headers, ka), [])
            return _Out(_response(200, body, headers, ka)[: -(len(body) // 2) or None], [], cut=True)
        head, content, tail = dialect.stream(plan, seq, self.chunks)
        frames = head + (content + tail if cut is None else content[:cut])
        chunked = [b"%x\r\n%b\r\n" % (len(f), f) for f in frames]
        if cut is None:
            chunked.append(b"0\r\n\r\n")
        return _Out(
            _head(200, headers, ka, dialect.stream_type, None), chunked, cut is not None
        )


def _lower(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}


class _TimedFault(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float
    response: Scripted


class _CloudSettings(msgspec.Struct, forbid_unknown_fields=True):
    lifetime: dict[str, float] = {}  # source (imds, sts, ecs, entra, google) -> seconds
    web_identity_tokens: list[str] | None = None


_clouds_decoder = msgspec.json.Decoder(_CloudSettings)
_timed_fault_decoder = msgspec.json.Decoder(_TimedFault)
_fault_decoder = msgspec.json.Decoder(Scripted)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mockupstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every response")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per streamed reply")
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0, help="delay between stream chunks")
    args = parser.parse_args(argv)

    async def serve() -> None:
        upstream = MockUpstream(args.host, args.port, args.latency_ms, args.chunks, args.chunk_interval_ms)
        await upstream.start()
        print(f"mock upstream listening on {upstream.url}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await upstream.stop()

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main(sys.argv[1:])

"""A mock LLM provider speaking OpenAI Chat Completions and Anthropic Messages exactly as they look on the wire.

Raw asyncio + httptools (keep-alive, Content-Length requests, chunked SSE replies) so that it is never the
bottleneck of a benchmark; tests script errors, delays and broken streams via `/_mock/*` or `MockUpstream`.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httptools
import msgspec

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode

TOOL_ARGUMENTS = '{"location": "Paris"}'
_TOOL_INPUT = msgspec.json.decode(TOOL_ARGUMENTS)
_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus} | {529: b"Overloaded"}


# --- What the mock reads from a request (msgspec ignores every other field) -----------------------------


class _Part(msgspec.Struct):
    text: str = ""


class _Message(msgspec.Struct):
    role: str = ""
    content: str | list[_Part] | None = None


class _Named(msgspec.Struct):
    name: str = ""


class _OpenAITool(msgspec.Struct):
    function: _Named | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _ChatRequest(msgspec.Struct):
    model: str = ""
    messages: list[_Message] = []
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_OpenAITool] | None = None


class _MessagesRequest(msgspec.Struct):
    model: str = ""
    messages: list[_Message] = []
    system: str | list[_Part] | None = None
    stream: bool = False
    tools: list[_Named] | None = None


_chat_decoder = msgspec.json.Decoder(_ChatRequest)
_messages_decoder = msgspec.json.Decoder(_MessagesRequest)


class Scripted(msgspec.Struct, forbid_unknown_fields=True):
    """One queued answer; `body` null with an error status means the provider's documented error body."""

    status: int = 200
    headers: dict[str, str] = {}
    body: Any = None
    raw: str | None = None
    delay_ms: float = 0.0  # on top of the server's latency
    # Close the connection after this many content chunks (non-streaming: after half the body).
    fail_after_chunks: int | None = None

    @property
    def replaces_reply(self) -> bool:
        return self.raw is not None or self.body is not None or self.status >= 400


class _Script(msgspec.Struct, forbid_unknown_fields=True):
    responses: list[Scripted]


_script_decoder = msgspec.json.Decoder(_Script)


# --- The deterministic "model" -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    model: str
    stream: bool
    include_usage: bool
    text: str  # the reply, when not a tool call
    tool: str | None  # name of the tool to call instead
    prompt_tokens: int
    completion_tokens: int


def _text(content: str | list[_Part] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return " ".join(p.text for p in content if p.text)


def _plan(
    model: str, messages: list[_Message], system: str, stream: bool, usage: bool, tools: list[str]
) -> _Plan:
    words = len(system.split())
    last_user = ""
    for m in messages:
        text = _text(m.content)
        words += len(text.split())
        if m.role == "user":
            last_user = text
    # Only a user turn asks for the tool, so a conversation carrying the tool's result ends in text.
    if tools and messages and messages[-1].role == "user" and "weather" in last_user.lower():
        return _Plan(model, stream, usage, "", tools[0], words, len(TOOL_ARGUMENTS.split()))
    reply = "Echo: " + last_user[:200]
    return _Plan(model, stream, usage, reply, None, words, len(reply.split()))


def _split(s: str, n: int) -> list[str]:
    n = max(1, min(n, len(s)))
    return [s[len(s) * i // n : len(s) * (i + 1) // n] for i in range(n)]


# A stream is (frames before the content, content frames, frames after); `fail_after_chunks` cuts the middle.
_Stream = tuple[list[bytes], list[bytes], list[bytes]]


# --- OpenAI Chat Completions -----------------------------------------------------------------------------


def _openai_plan(body: bytes) -> _Plan:
    r = _chat_decoder.decode(body)
    tools = [t.function.name for t in r.tools or () if t.function is not None]
    usage = r.stream_options is not None and r.stream_options.include_usage
    return _plan(r.model, r.messages, "", r.stream, usage, tools)


def _openai_usage(p: _Plan) -> dict[str, int]:
    total = p.prompt_tokens + p.completion_tokens
    return {"prompt_tokens": p.prompt_tokens, "completion_tokens": p.completion_tokens, "total_tokens": total}


def _openai_body(p: _Plan, seq: int) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": p.text or None, "refusal": None}
    if p.tool is not None:
        function = {"name": p.tool, "arguments": TOOL_ARGUMENTS}
        message["tool_calls"] = [{"id": f"call_mock_{seq}", "type": "function", "function": function}]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": "tool_calls" if p.tool else "stop",
    }
    return _encode(
        {
            "id": f"chatcmpl-mock-{seq}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": p.model,
            "choices": [choice],
            "usage": _openai_usage(p),
        }
    )


def _openai_stream(p: _Plan, seq: int, chunks: int) -> _Stream:
    base = {
        "id": f"chatcmpl-mock-{seq}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": p.model,
    }
    if p.include_usage:
        base["usage"] = None  # documented: every chunk but the last carries `"usage": null`

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _encode({**base, "choices": [choice]}) + b"\n\n"

    if p.tool is None:
        head = frame({"role": "assistant", "content": ""})
        content = [frame({"content": piece}) for piece in _split(p.text, chunks)]
    else:
        call = {
            "index": 0,
            "id": f"call_mock_{seq}",
            "type": "function",
            "function": {"name": p.tool, "arguments": ""},
        }
        head = frame({"role": "assistant", "content": None, "tool_calls": [call]})
        content = [
            frame({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in _split(TOOL_ARGUMENTS, chunks)
        ]
    tail = [frame({}, "tool_calls" if p.tool else "stop")]
    if p.include_usage:
        tail.append(b"data: " + _encode({**base, "choices": [], "usage": _openai_usage(p)}) + b"\n\n")
    tail.append(b"data: [DONE]\n\n")
    return [head], content, tail


# status -> (error.type, error.code, message), after OpenAI's documented API error codes.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def _openai_error(status: int, message: str | None, seq: int) -> bytes:
    default = ("server_error" if status >= 500 else "invalid_request_error", None, _reason(status))
    kind, code, text = _OPENAI_ERRORS.get(status, default)
    return _encode({"error": {"message": message or text, "type": kind, "param": None, "code": code}})


# --- Anthropic Messages ----------------------------------------------------------------------------------


def _anthropic_plan(body: bytes) -> _Plan:
    r = _messages_decoder.decode(body)
    tools = [t.name for t in r.tools or ()]
    return _plan(r.model, r.messages, _text(r.system), r.stream, False, tools)


def _anthropic_block(p: _Plan, seq: int, *, empty: bool) -> dict[str, Any]:
    if p.tool is None:
        return {"type": "text", "text": "" if empty else p.text}
    return {
        "type": "tool_use",
        "id": f"toolu_mock_{seq}",
        "name": p.tool,
        "input": {} if empty else _TOOL_INPUT,
    }


def _anthropic_message(p: _Plan, seq: int, *, start: bool) -> dict[str, Any]:
    return {
        "id": f"msg_mock_{seq}",
        "type": "message",
        "role": "assistant",
        "model": p.model,
        "content": [] if start else [_anthropic_block(p, seq, empty=False)],
        "stop_reason": None if start else ("tool_use" if p.tool else "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": p.prompt_tokens, "output_tokens": 1 if start else p.completion_tokens},
    }


def _anthropic_body(p: _Plan, seq: int) -> bytes:
    return _encode(_anthropic_message(p, seq, start=False))


def _event(data: dict[str, Any]) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (data["type"].encode(), _encode(data))


def _anthropic_stream(p: _Plan, seq: int, chunks: int) -> _Stream:
    block = _anthropic_block(p, seq, empty=True)
    head = [
        _event({"type": "message_start", "message": _anthropic_message(p, seq, start=True)}),
        _event({"type": "content_block_start", "index": 0, "content_block": block}),
        _event({"type": "ping"}),
    ]
    if p.tool is None:
        deltas = [{"type": "text_delta", "text": piece} for piece in _split(p.text, chunks)]
    else:
        deltas = [{"type": "input_json_delta", "partial_json": s} for s in _split(TOOL_ARGUMENTS, chunks)]
    content = [_event({"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas]
    stop = {"stop_reason": "tool_use" if p.tool else "end_turn", "stop_sequence": None}
    tail = [
        _event({"type": "content_block_stop", "index": 0}),
        _event({"type": "message_delta", "delta": stop, "usage": {"output_tokens": p.completion_tokens}}),
        _event({"type": "message_stop"}),
    ]
    return head, content, tail


# status -> error.type, after Anthropic's documented HTTP errors.
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _anthropic_error(status: int, message: str | None, seq: int) -> bytes:
    kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    error = {"type": kind, "message": message or _reason(status)}
    return _encode({"type": "error", "error": error, "request_id": f"req_mock_{seq}"})


@dataclass(frozen=True, slots=True)
class _Dialect:
    plan: Callable[[bytes], _Plan]
    body: Callable[[_Plan, int], bytes]
    stream: Callable[[_Plan, int, int], _Stream]
    error: Callable[[int, str | None, int], bytes]


_DIALECTS = {
    b"/v1/chat/completions": _Dialect(_openai_plan, _openai_body, _openai_stream, _openai_error),
    b"/v1/messages": _Dialect(_anthropic_plan, _anthropic_body, _anthropic_stream, _anthropic_error),
}


# --- HTTP/1.1 --------------------------------------------------------------------------------------------


def _reason(status: int) -> str:
    return _REASONS.get(status, b"Unknown").decode()


def _head(
    status: int, headers: dict[str, str], keep_alive: bool, content_type: bytes, length: int | None
) -> bytes:
    out = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
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
            self.write(_response(400, _openai_error(400, "Malformed HTTP request.", 0), {}, False))
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
        req = _Request(self.parser.get_method(), path, self._headers, body, self.parser.should_keep_alive())
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
        self._seq = 0
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
        self._script.extend(_script_decoder.decode(_encode({"responses": list(responses)})).responses)

    def reset(self) -> None:
        self._script.clear()
        self._calls = 0
        self._by_path: Counter[str] = Counter()
        self._in_flight = self._max_in_flight = self._disconnects = 0
        self._last_body: bytes | None = None
        self._last_headers: list[tuple[bytes, bytes]] = []
        self._notify()

    @property
    def stats(self) -> dict[str, Any]:
        try:
            last = None if self._last_body is None else _decode_any(self._last_body)
        except msgspec.DecodeError:
            last = None
        return {
            "calls": self._calls,
            "calls_by_path": dict(self._by_path),
            "in_flight": self._in_flight,
            "max_in_flight": self._max_in_flight,
            "disconnects": self._disconnects,
            "last_request": last,
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
        dialect = _DIALECTS.get(req.path)
        if dialect is not None and req.method == b"POST":
            return self._llm_call(conn, req, dialect)
        status, body = self._control(req)
        conn.write(_response(status, body, {}, req.keep_alive))
        if not req.keep_alive:
            conn.close()
        return None

    def _control(self, req: _Request) -> tuple[int, bytes]:
        match req.method, req.path:
            case b"GET", b"/_mock/stats":
                return 200, _encode(self.stats)
            case b"POST", b"/_mock/reset":
                self.reset()
                return 200, b'{"ok":true}'
            case b"POST", b"/_mock/script":
                try:
                    self._script.extend(_script_decoder.decode(req.body).responses)
                except msgspec.MsgspecError as exc:
                    return 400, _openai_error(400, f"Bad script: {exc}", 0)
                return 200, _encode({"queued": len(self._script)})
        return 404, _openai_error(
            404, f"Invalid URL ({req.method.decode()} {req.path.decode(errors='replace')})", 0
        )

    def _llm_call(
        self, conn: _Connection, req: _Request, dialect: _Dialect
    ) -> Coroutine[Any, Any, None] | None:
        self._seq += 1
        self._calls += 1
        self._by_path[req.path.decode()] += 1
        self._last_body, self._last_headers = req.body, req.headers
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        conn.in_call = True
        scripted = self._script.popleft() if self._script else None
        out = self._outcome(req, dialect, self._seq, scripted)
        delay = (self.latency_ms + (scripted.delay_ms if scripted else 0.0)) / 1000
        interval = self.chunk_interval_ms / 1000 if out.frames else 0.0
        if delay <= 0 and interval <= 0:  # the fast path: answered without a task
            conn.write(out.head + b"".join(out.frames))
            self._finish(conn, req, out)
            return None
        return self._send_later(conn, req, out, delay, interval)

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

    def _outcome(self, req: _Request, dialect: _Dialect, seq: int, scripted: Scripted | None) -> _Out:
        headers, ka = (scripted.headers if scripted else {}), req.keep_alive
        if scripted is not None and scripted.replaces_reply:
            if scripted.raw is not None:
                body = scripted.raw.encode()
            elif scripted.body is not None:
                body = _encode(scripted.body)
            else:
                body = dialect.error(scripted.status, None, seq)
            return _Out(_response(scripted.status, body, headers, ka), [])
        try:
            plan = dialect.plan(req.body)
        except msgspec.MsgspecError as exc:
            body = dialect.error(400, f"Invalid request body: {exc}", seq)
            return _Out(_response(400, body, headers, ka), [])
        cut = scripted.fail_after_chunks if scripted else None
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
            _head(200, headers, ka, b"text/event-stream; charset=utf-8", None), chunked, cut is not None
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.mockupstream", description=__doc__)
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

"""The load generator: one keep-alive HTTP/1.1 connection per worker on raw asyncio + httptools.

Closed loop (the default): each worker sends its next request when the last one is answered, so a slow
server also slows the load and its tail is under-reported (coordinated omission). Open loop (`rate`):
request i is due at `start + i / rate` whatever happened before; a worker takes the next due slot when it
is free, and latency counts from the slot's intended send time, so time spent waiting for a free
connection behind a slow answer is in the figure (wrk2's correction).

Request bytes are built from pre-encoded pieces; the only per-request work is the prompt counter, the
response parse and the ok check, so a single core drives tens of thousands of requests per second and the
generator is not what a benchmark measures.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import httptools
import msgspec

from llm_edge.bench.check import (
    ResponsesStreamCheck,
    StreamCheck,
    completion_problem,
    embeddings_problem,
    response_problem,
)

PROMPT = "Benchmark request {n}: reply with a short greeting."
_PATHS = {"chat": "/chat/completions", "responses": "/responses", "embeddings": "/embeddings"}
_MARK = "@@N@@"


@dataclass(frozen=True, slots=True)
class Options:
    url: str = "http://127.0.0.1:8080/v1"  # base URL; /chat/completions is appended
    model: str = "mock"
    concurrency: int = 8
    duration: float | None = 10.0  # seconds measured, after the warm-up; ignored when `requests` is set
    requests: int | None = None  # measure exactly this many requests instead
    warmup: float = 1.0  # seconds of load before measuring, not counted
    stream: bool = False
    unique_prompts: bool = False  # a distinct prompt per request (cache misses) instead of one fixed prompt
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 60.0  # per request; a timed-out request is a transport error
    rate: float | None = None  # open loop: requests per second on a fixed schedule (None: closed loop)
    # POST /chat/completions, /responses (OpenAI's Responses API) or /embeddings (`batch` texts a request)
    api: Literal["chat", "responses", "embeddings"] = "chat"
    batch: int = 1  # embeddings: inputs per request
    dimensions: int | None = None  # embeddings: the `dimensions` asked for (None: the model's own)
    store: bool = False  # Responses API: ask for each response to be stored (`store: true`)


@dataclass(slots=True)
class Result:
    """Counters and samples (seconds) of the measured requests; the samples are of ok requests only."""

    ok: int = 0
    http_errors: Counter[int] = field(default_factory=Counter)  # status != 200
    transport_errors: Counter[str] = field(default_factory=Counter)  # no complete HTTP response
    invalid: Counter[str] = field(default_factory=Counter)  # status 200, but not a valid completion
    latency: array[float] = field(default_factory=lambda: array("d"))
    first_chunk: array[float] = field(default_factory=lambda: array("d"))  # streams: to the first content
    chunk_gaps: array[float] = field(default_factory=lambda: array("d"))  # streams: between content chunks
    elapsed: float = 0.0  # from the start of measuring to the last measured response
    warmup_requests: int = 0  # sent during the warm-up, not counted anywhere else

    @property
    def errors(self) -> int:
        return sum(self.http_errors.values()) + sum(self.transport_errors.values()) + sum(self.invalid.values())

    @property
    def done(self) -> int:
        return self.ok + self.errors


class _Target:
    """Where to connect and the request bytes, split around the prompt counter."""

    def __init__(self, options: Options) -> None:
        parts = urlsplit(options.url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--url must be an http:// URL, not {options.url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        path = parts.path.rstrip("/") + _PATHS[options.api]
        head = [f"POST {path} HTTP/1.1", f"host: {parts.netloc}", "content-type: application/json"]
        head += [f"{name}: {value}" for name, value in options.headers]
        self._head = ("\r\n".join(head) + "\r\ncontent-length: ").encode("latin-1")
        run = secrets.token_hex(4)  # unique prompts stay unique across runs against one cache
        prompt = PROMPT.format(n=f"{run}-{_MARK}" if options.unique_prompts else "fixed")
        body: dict[str, object] = {"model": options.model, "messages": [{"role": "user", "content": prompt}]}
        if options.api == "responses":
            body = {"model": options.model, "input": prompt, "store": options.store}
        elif options.api == "embeddings":  # the counter in the first text makes the whole batch new
            body = {"model": options.model, "input": [prompt] + [f"{prompt} ({i})" for i in range(1, options.batch)],
                    "encoding_format": "float"}
            if options.unique_prompts:
                body["input"] = [prompt] + [f"{run} passage {i}" for i in range(1, options.batch)]
            if options.dimensions is not None:
                body["dimensions"] = options.dimensions
        if options.stream:
            body["stream"] = True
        encoded = msgspec.json.encode(body)
        self._unique = options.unique_prompts
        if self._unique:
            self._before, self._after = encoded.split(_MARK.encode())
            self._seq = 0
        else:
            self._fixed = self._frame(encoded)

    def _frame(self, body: bytes) -> bytes:
        return b"%b%d\r\n\r\n%b" % (self._head, len(body), body)

    def next_request(self) -> bytes:
        if not self._unique:
            return self._fixed
        self._seq += 1
        return self._frame(b"%b%d%b" % (self._before, self._seq, self._after))


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `send` writes a request and waits for its whole response."""

    def __init__(self, stream: bool, api: str = "chat") -> None:
        self.stream = stream
        self.checker = ResponsesStreamCheck if api == "responses" else StreamCheck
        self.body_problem = {"responses": response_problem, "embeddings": embeddings_problem}.get(
            api, completion_problem)
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[str | None] | None = None  # the outcome: None or a transport error
        self.body: list[bytes] = []
        self.check: StreamCheck = self.checker()
        self.sent_at = 0.0
        self.last_chunk_at = 0.0
        self.first_chunk = 0.0
        self.gaps: list[float] = []

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish("connection_closed")

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish("bad_http")
            self.close()

    # --- httptools callbacks ---

    def on_body(self, body: bytes) -> None:
        if not self.stream:
            self.body.append(body)
        elif found := self.check.feed(body):
            now = time.perf_counter()
            if self.check.chunks == found:
                self.first_chunk = now - self.sent_at
            else:
                self.gaps.append(now - self.last_chunk_at)
            self.gaps.extend([0.0] * (found - 1))  # chunks that arrived in one read are 0 apart
            self.last_chunk_at = now

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.close()
        self._finish(None)

    # --- the client side ---

    def send(self, data: bytes) -> asyncio.Future[str | None]:
        assert self.transport is not None
        self.body, self.gaps = [], []
        if self.stream:
            self.check = self.checker()
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_at = time.perf_counter()
        self.transport.write(data)
        return self.waiter

    def status(self) -> int:
        return self.parser.get_status_code()

    def _finish(self, outcome: str | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(outcome)

    def timed_out(self) -> None:
        self._finish("timeout")
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Bench:
    """Runs `options` once; `result` fills in as requests complete (the progress bar reads it)."""

    def __init__(self, options: Options) -> None:
        if options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if options.requests is None and not options.duration:
            raise ValueError("give a duration or a request count")
        if options.rate is not None and not options.rate > 0:
            raise ValueError("rate must be a positive number of requests per second")
        self.options = options
        self.target = _Target(options)
        self.result = Result()
        self.started = 0.0  # perf_counter at the start of the warm-up
        self.measure_from = 0.0
        self._left = options.requests
        self._until = 0.0
        self._slot = 0  # open loop: the next request's index in the schedule

    async def run(self) -> Result:
        options = self.options
        loop = asyncio.get_running_loop()
        connections = await asyncio.gather(*(self._connect(loop) for _ in range(options.concurrency)))
        self.started = time.perf_counter()
        self.measure_from = self.started + options.warmup
        self._until = self.measure_from + (options.duration or 0.0)
        last = await asyncio.gather(*(self._worker(loop, c) for c in connections))
        self.result.elapsed = max(0.0, max(last) - self.measure_from)
        for conn in connections:
            conn.close()
        return self.result

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        stream, api = self.options.stream, self.options.api
        _, conn = await loop.create_connection(lambda: _Connection(stream, api), self.target.host, self.target.port)
        return conn

    def _next_due(self) -> float:
        """Open loop: when the next request in the schedule is due (the warm-up included)."""
        assert self.options.rate is not None
        due = self.started + self._slot / self.options.rate
        self._slot += 1
        return due

    def _take(self, now: float) -> bool | None:
        """Whether the next request is measured; None when the run is over."""
        if now < self.measure_from:
            return False
        if self._left is None:
            return True if now < self._until else None
        if self._left <= 0:
            return None
        self._left -= 1
        return True

    async def _worker(self, loop: asyncio.AbstractEventLoop, conn: _Connection | None) -> float:
        result, target, timeout, stream = self.result, self.target, self.options.timeout, self.options.stream
        last = self.measure_from
        open_loop = self.options.rate is not None
        while True:
            due = self._next_due() if open_loop else time.perf_counter()
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)  # the schedule's own pace, not a wait for something to happen
            if (measured := self._take(due)) is None:
                break
            if conn is None or conn.closed:
                try:
                    conn = await self._connect(loop)
                except OSError as exc:
                    if measured:
                        result.transport_errors[_connect_error(exc)] += 1
                    conn = None
                    await asyncio.sleep(0.01)  # a refused connect fails at once: do not spin
                    continue
            timer = loop.call_later(timeout, conn.timed_out)
            outcome = await conn.send(target.next_request())
            timer.cancel()
            end = time.perf_counter()
            if not measured:
                result.warmup_requests += 1
                continue
            last = end
            if outcome is not None:
                result.transport_errors[outcome] += 1
            elif (status := conn.status()) != 200:
                result.http_errors[status] += 1
            elif (problem := conn.check.verdict() if stream else _body_problem(conn)) is not None:
                result.invalid[problem] += 1
            else:
                result.ok += 1
                result.latency.append(end - (due if open_loop else conn.sent_at))
                if stream:
                    result.first_chunk.append(conn.first_chunk)
                    result.chunk_gaps.extend(conn.gaps)
        return last


def _body_problem(conn: _Connection) -> str | None:
    body = conn.body
    return conn.body_problem(body[0] if len(body) == 1 else b"".join(body))


def _connect_error(exc: OSError) -> str:
    return "connect_refused" if isinstance(exc, ConnectionRefusedError) else "connect_failed"


async def run(options: Options, on_start: Callable[[Bench], object] | None = None) -> Result:
    bench = Bench(options)
    if on_start is not None:
        on_start(bench)
    return await bench.run()

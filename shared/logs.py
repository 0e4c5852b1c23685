"""JSON-lines logging with the service name, the current request id and trace id on every line.

Prompt and response bodies and keys are never passed to the logger; callers log ids, sizes and outcomes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from collections.abc import Iterable

import msgspec
from opentelemetry import trace

from shared import tracing
from shared.secrets import Redactor

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# The configured name of the caller's API key (never the key), when the gateway has keys.
key_name: contextvars.ContextVar[str | None] = contextvars.ContextVar("key_name", default=None)

_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.service = service
        # A line may quote text an upstream sent (an error message): configured secrets never leave.
        self.redact = Redactor(secrets)
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        return self.line(record.created, record.levelname.lower(), record.name, record.getMessage(),
                         getattr(record, "request_id", None),
                         self.formatException(record.exc_info) if record.exc_info else None)

    def line(self, created: float, level: str, logger: str, msg: str, rid: str | None = None,
             exc: str | None = None) -> str:
        # The ingress writes a line per request: the parts that are the same for a whole second, or that
        # cannot be there (a span while tracing is off), cost nothing per line (bench/log_line.py).
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line: dict[str, object] = {
            "ts": f"{self._stamp}.{int((created - second) * 1000):03d}Z",
            "level": level,
            "service": self.service,
            "logger": logger,
            "msg": self.redact(msg),
        }
        rid = rid or request_id.get()
        if rid:
            line["request_id"] = rid
        if (key := key_name.get()) is not None:
            line["key"] = key
        if tracing.enabled() and (span := trace.get_current_span().get_span_context()).is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
        if exc:
            line["exc"] = self.redact(exc)
        return _encoder.encode(line).decode()


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler `setup` installs: JSON lines to stderr. Lines written with `info` (the ingress's
    per-request line) skip the logging machinery and are written together once per turn of the event loop.

    Through `Logger.info` the line cost 14 µs in a loop (a `LogRecord` of some thirty fields, the logger
    hierarchy walked, a write and flush of its own), 4 here; with the per-request metrics it was about a
    tenth of a miss's CPU at 64 concurrent misses (docs/PERFORMANCE.md, "Telemetry was a tenth of a miss").
    A line written here is the same JSON, in order with every other line (a record through `emit` first
    writes what waits), and waits at most for the end of the loop's turn; `flush` (logging's shutdown, at
    exit) writes it too. The lock is the handler's own: a record may come from another thread."""

    def __init__(self, formatter: JsonFormatter) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(formatter)
        self.json = formatter
        self._waiting: list[str] = []

    def info(self, logger: str, msg: str) -> None:
        line = self.json.line(time.time(), "info", logger, msg)
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._waiting.append(line)
            first = len(self._waiting) == 1
        if first:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop here: at once
                self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            if self._waiting:
                lines, self._waiting = self._waiting, []
                self.stream.write("\n".join(lines) + "\n")
            super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self._waiting:
            self.flush()
        super().emit(record)


_handler: JsonHandler | None = None


def info(logger: logging.Logger, msg: str) -> None:
    """`logger.info(msg)`, for a line written on every request: through `JsonHandler.info` when it is the
    only handler (as `setup` leaves it), else through the logger (a test capturing records, say)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handlers = logging.root.handlers
    if _handler is not None and len(handlers) == 1 and handlers[0] is _handler and logger.propagate \
            and not logger.handlers:
        _handler.info(logger.name, msg)
    else:
        logger.info("%s", msg)


def setup(service: str, level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    # What no line prints: the caller's file and line (found by walking the stack for every record), the
    # thread and process names. Left off as the logging cookbook's "Optimization" section says, a
    # line costs 15 us instead of 41 (measured here, 50,000 lines to /dev/null); the ingress writes one
    # per request at info, so this is a few percent of its throughput.
    logging._srcfile = None  # the documented switch (logging cookbook)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _handler
    handler = _handler = JsonHandler(JsonFormatter(service, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log would print every request line; our ingress logs what matters itself.
    logging.getLogger("uvicorn.access").disabled = True

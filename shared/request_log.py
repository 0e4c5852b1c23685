"""The request log's payloads: one `RequestRecord` per finished request (published by the ingress to the
request-log stream, written to a database by the logger), and the query the ingress and `llm-edge logs`
send the logger (`LogQuery` -> `LogPage`, or an `ErrorReply`).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta, Struct

from shared.errors import from_reply
from shared.messages import ErrorReply, reply_decoder
from shared.subjects import Subjects

if TYPE_CHECKING:
    from shared.bus import Bus

MAX_PAGE = 1000


class RequestRecord(Struct, frozen=True, kw_only=True):
    """What happened to one request. `id` is the record's own (unique across processes: a random prefix
    per process and a counter), `request_id` the one the client saw (its `x-request-id`, or ours)."""

    id: str
    request_id: str
    time: float  # when the request arrived, seconds since the epoch
    path: str
    status: int
    latency_ms: float
    key: str | None = None  # the key's name, never the key
    tenant: str | None = None
    model: str | None = None
    provider: str | None = None
    stream: bool = False
    cache: str = "none"  # hit-l1, hit-l2, miss, none (not looked up)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None  # the error's code (or type), also for a stream that failed after its start
    request_body: str | None = None  # only with request_log.bodies: secrets redacted, cut at max_body_bytes
    response_body: str | None = None


class LogQuery(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Records newest first, every given filter applied; `offset` pages through the rest."""

    key: str | None = None
    tenant: str | None = None
    model: str | None = None
    status: int | None = None
    since: float | None = None  # seconds since the epoch, inclusive
    until: float | None = None  # exclusive
    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE)] = 100
    offset: Annotated[int, Meta(ge=0)] = 0
    bodies: bool = False  # include the stored bodies


class LogPage(Struct, frozen=True, kw_only=True):
    records: list[RequestRecord]
    more: bool = False  # further records match: ask again with offset + len(records)


_encoder = msgspec.msgpack.Encoder()
# One message on the request-log stream: the records an ingress had queued (see shared/bus/journal.py).
batch_decoder = msgspec.msgpack.Decoder(list[RequestRecord])
query_decoder = msgspec.msgpack.Decoder(LogQuery)
page_decoder = msgspec.msgpack.Decoder(LogPage)


def encode(message: Struct) -> bytes:
    return _encoder.encode(message)


async def ask(connection: Bus, subjects: Subjects, query: LogQuery, timeout: float) -> LogPage:
    """One page from whichever logger answers (`NoResponders`: none runs); its error as a `GatewayError`."""
    answer = await connection.ask(subjects.logs_query, encode(query), {}, timeout)
    try:
        return page_decoder.decode(answer.data)
    except msgspec.DecodeError:
        reply = reply_decoder.decode(answer.data)
        if isinstance(reply, ErrorReply):
            raise from_reply(reply) from None
        raise


_PREFIX = os.urandom(6).hex()
_counter = itertools.count(1)


def new_id() -> str:
    """A record id: unique across processes (a random prefix per process), cheap (no syscall)."""
    return f"{_PREFIX}{next(_counter):010x}"



_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str) -> float:
    """A point in time as `llm-edge logs` and `/admin/logs` take it: `90s`, `15m`, `2h`, `7d` ago; an ISO 8601
    time (UTC unless it says otherwise); or seconds since the epoch. ValueError names the forms."""
    if match := _RELATIVE.match(text.strip()):
        return time.time() - float(match[1]) * _UNIT[match[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: expected 15m, 2h, 7d (ago), an ISO time such as 2026-11-29T15:00, "
                         "or epoch seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()

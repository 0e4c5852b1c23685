"""What the provider adapter tests read, send and stream: the transcribed fixtures, client bodies decoded
as the ingress decodes them, and stream bodies fed through an adapter's decoder and parser in any
chunking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from services.providers.base import Delta, HttpAdapter, StreamParser, StreamSummary
from shared.messages import ChatRequest

FIXTURES = Path(__file__).parent.parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def request(body: dict[str, Any] | bytes) -> ChatRequest:
    """A client body decoded the way the ingress decodes it."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return msgspec.json.decode(raw, type=ChatRequest)


def feed(
    adapter: HttpAdapter[Any],
    wire: bytes,
    step: int | None = None,
    *,
    provider: str,
    model: str,
    parser: StreamParser | None = None,
) -> tuple[StreamParser, list[Delta]]:
    """A stream body through the adapter's decoder and a parser, `step` bytes at a time (None: at once)."""
    parser = parser or adapter.stream_parser(provider=provider, model=model)
    decoder, deltas = adapter.stream_decoder(), []
    step = step or len(wire) or 1
    for i in range(0, len(wire), step):
        for event, data in decoder.feed(wire[i : i + step]):
            deltas += parser.feed(event, data)
    return parser, deltas


def run(
    adapter: HttpAdapter[Any], wire: bytes, step: int | None = None, *, provider: str, model: str
) -> tuple[list[Delta], StreamSummary]:
    """`feed`, then the parser's end: the deltas and the summary (or the error a cut stream raises)."""
    parser, deltas = feed(adapter, wire, step, provider=provider, model=model)
    return deltas, parser.end()

"""The SSE decoder against the WHATWG parsing rules, fed whole and split at every possible point."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.providers.sse import Event, SSEDecoder

FIXTURES = Path(__file__).parent.parent / "fixtures"
TRANSCRIPTS = sorted(FIXTURES.glob("*/stream_*.txt"))


def decode(*chunks: bytes) -> list[Event]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


@pytest.mark.parametrize(
    ("wire", "events"),
    [
        pytest.param(b"data: hello\n\n", [(None, "hello")], id="data only"),
        pytest.param(b"event: ping\ndata: {}\n\n", [("ping", "{}")], id="named event"),
        pytest.param(b"data: a\ndata: b\ndata: c\n\n", [(None, "a\nb\nc")], id="data lines joined by LF"),
        pytest.param(b"data: a\r\ndata: b\r\n\r\n", [(None, "a\nb")], id="CRLF"),
        pytest.param(b"data: a\rdata: b\r\r", [(None, "a\nb")], id="CR"),
        pytest.param(b"data: a\r\ndata: b\rdata: c\n\r\n", [(None, "a\nb\nc")], id="mixed line ends"),
        pytest.param(b": keep-alive\ndata: x\n: more\n\n", [(None, "x")], id="comments ignored"),
        pytest.param(b":\n\n", [], id="comment only dispatches nothing"),
        pytest.param(b"data:x\n\n", [(None, "x")], id="no space after colon"),
        pytest.param(b"data:  x \n\n", [(None, " x ")], id="only one leading space is removed"),
        pytest.param(b"data\n\n", [(None, "")], id="field name without colon"),
        pytest.param(b"data:\ndata:\n\n", [(None, "\n")], id="empty data lines still count"),
        pytest.param(b"data: a:b: c\n\n", [(None, "a:b: c")], id="colons in the value are kept"),
        pytest.param(b"event: ping\n\n", [], id="an event without data is not dispatched"),
        pytest.param(b"\n\n\ndata: x\n\n\n\n", [(None, "x")], id="extra blank lines"),
        pytest.param(
            b"event: a\n\ndata: x\n\n", [(None, "x")], id="the event name is reset at each blank line"
        ),
        pytest.param(
            b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\ndata: 3\n\n",
            [("a", "1"), ("b", "2"), (None, "3")],
            id="several events",
        ),
        pytest.param(b"event: a\nevent: b\ndata: x\n\n", [("b", "x")], id="the last event name wins"),
        pytest.param(
            b"id: 7\nretry: 1000\nfoo: bar\ndata: x\n\n", [(None, "x")], id="id retry and unknown fields"
        ),
        pytest.param(b"Data: x\n\n", [], id="field names are case-sensitive"),
        pytest.param(b"data: x\n", [], id="an event without its blank line is not dispatched"),
        pytest.param(b"data: x", [], id="nor is a line without its end"),
        pytest.param(b"\xef\xbb\xbfdata: x\n\n", [(None, "x")], id="a leading BOM is stripped"),
        pytest.param(
            b"data: x\n\n\xef\xbb\xbfdata: y\n\n", [(None, "x")], id="a BOM later on is part of the name"
        ),
        pytest.param(
            'data: {"t":"a\u2028b\x85c"}\n\n'.encode(),
            [(None, '{"t":"a\u2028b\x85c"}')],
            id="only CR and LF break lines",
        ),
        pytest.param(b"data: \xff\xfe\n\n", [(None, "\ufffd\ufffd")], id="bad UTF-8 is replaced"),
        pytest.param("data: известни 😀\n\n".encode(), [(None, "известни 😀")], id="multi-byte characters"),
    ],
)
def test_wire_format(wire: bytes, events: list[Event]) -> None:
    assert decode(wire) == events
    assert decode(*(wire[i : i + 1] for i in range(len(wire)))) == events  # one byte at a time


@pytest.mark.parametrize(
    ("chunks", "events"),
    [
        pytest.param([b"data: a\r", b"\n\r\n"], [(None, "a")], id="CRLF split between CR and LF"),
        pytest.param([b"data: a\r", b"\n", b"\n"], [(None, "a")], id="LF alone after a split CRLF"),
        pytest.param([b"data: a\r", b"\rdata: b\r\r"], [(None, "a"), (None, "b")], id="CR then CR"),
        pytest.param([b"data: a\r", b"", b"\n\n"], [(None, "a")], id="an empty chunk between CR and LF"),
        pytest.param(
            [b"data: \xd0", b"\xb8\xd0\xb7\xd0", b"\xb2\xd0\xb5\n\n"], [(None, "изве")], id="split characters"
        ),
        pytest.param([b"\xef", b"\xbb", b"\xbfdata: x\n\n"], [(None, "x")], id="split BOM"),
        pytest.param([b"da", b"ta: x", b"yz\n", b"\n"], [(None, "xyz")], id="split line"),
    ],
)
def test_chunk_boundaries(chunks: list[bytes], events: list[Event]) -> None:
    assert decode(*chunks) == events


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n") == []
    assert decoder.feed(b"\ndata: 2\n") == [(None, "1")]
    assert decoder.feed(b"\r") == [(None, "2")]  # CR alone ends a line: no need to wait for a LF
    assert decoder.feed(b"\n") == []


MIXED = (
    b"\xef\xbb\xbf: hello\r\n"
    b"event: message_start\r\n"
    b'data: {"text": "\xd0\xb8\xd0\xb7 \xf0\x9f\x98\x80"}\r\n'
    b"\r\n"
    b"data: line one\r"
    b"data: line two\n"
    b"\r"
    b"event: ping\n"
    b"data:\n"
    b"\n"
)
MIXED_EVENTS = [
    ("message_start", '{"text": "из 😀"}'),
    (None, "line one\nline two"),
    ("ping", ""),
]


@pytest.mark.parametrize("transcript", TRANSCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_split_point_of_a_documented_transcript(transcript: Path) -> None:
    wire = transcript.read_bytes()
    whole = decode(wire)
    assert whole  # every transcript holds at least one complete event
    for i in range(len(wire) + 1):
        assert decode(wire[:i], wire[i:]) == whole, f"split at byte {i}"


def test_every_pair_of_split_points_with_mixed_line_ends_and_multibyte_text() -> None:
    assert decode(MIXED) == MIXED_EVENTS
    for i in range(len(MIXED) + 1):
        for j in range(i, len(MIXED) + 1):
            assert decode(MIXED[:i], MIXED[i:j], MIXED[j:]) == MIXED_EVENTS, f"split at {i} and {j}"


def test_transcripts_rewritten_with_crlf_and_cr_decode_the_same() -> None:
    for transcript in TRANSCRIPTS:
        wire = transcript.read_bytes()
        events = decode(wire)
        for line_end in (b"\r\n", b"\r"):
            assert decode(wire.replace(b"\n", line_end)) == events

"""The AWS event stream decoder against botocore's own test vectors (`tests/unit/test_eventstream.py` in
github.com/boto/botocore, commit 04d1fae43b657952e49b21d16daa86378ddb4253): the encoded messages, the
headers and payloads they decode to, and the corrupt ones it must refuse."""

from __future__ import annotations

import pytest

from services.providers.bedrock.eventstream import EventStreamDecoder, Message
from shared.errors import ProviderError

EMPTY_MESSAGE = b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff"
INT8_HEADER = b"\x00\x00\x00\x17\x00\x00\x00\x07)\x86\x01X\x04byte\x02\xff\xc2\xf8i\xdc"
INT16_HEADER = b"\x00\x00\x00\x19\x00\x00\x00\tq\x0e\x92>\x05short\x03\xff\xff\xb2|\xb6\xcc"
INT32_HEADER = (
    b"\x00\x00\x00\x1d\x00\x00\x00\r\x83\xe3\xf0\xe7\x07integer\x04\xff\xff\xff\xff\x8b\x8e\x12\xeb"
)
INT64_HEADER = (
    b"\x00\x00\x00\x1e\x00\x00\x00\x0e]J\xdb\x8d\x04long\x05\xff\xff\xff\xff\xff\xff\xff\xffK\xc22\xda"
)
PAYLOAD_NO_HEADERS = b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96"
PAYLOAD_ONE_STR_HEADER = (
    b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10"
    b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1"
)
ALL_HEADERS_TYPES = (
    b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c"
    b"\x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03"
    b"\x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05"
    b"\x016\x06\x00\x05bytes\x017\x07\x00\x04utf8"
    b"\x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef"
    b"\x63\x35\x36\x71"
)
ERROR_EVENT_MESSAGE = (
    b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e"
    b"\x0d:message-type\x07\x00\x05error"
    b"\x0b:error-code\x07\x00\x04code"
    b"\x0e:error-message\x07\x00\x07message"
    b"\x6b\x6c\xea\x3d"
)
INITIAL_RESPONSE = (
    b"\x00\x00\x00~\x00\x00\x00O\xc5\xa3\xdd\xc6\r:message-type\x07\x00"
    b"\x05event\x0b:event-type\x07\x00\x10initial-response\r:content-type"
    b'\x07\x00\ttext/json{"InitialResponse": "sometext"}\xf6\x98$\x83'
)

POSITIVE = [
    (EMPTY_MESSAGE, Message({}, b"")),
    (INT8_HEADER, Message({"byte": -1}, b"")),
    (INT16_HEADER, Message({"short": -1}, b"")),
    (INT32_HEADER, Message({"integer": -1}, b"")),
    (INT64_HEADER, Message({"long": -1}, b"")),
    (PAYLOAD_NO_HEADERS, Message({}, b"{'foo':'bar'}")),
    (PAYLOAD_ONE_STR_HEADER, Message({"content-type": "application/json"}, b"{'foo':'bar'}")),
    (
        ALL_HEADERS_TYPES,
        Message(
            {
                "0": True,
                "1": False,
                "2": 2,
                "3": 3,
                "4": 4,
                "5": 5,
                "6": b"bytes",
                "7": "utf8",
                "8": 8,
                "9": b"0123456789abcdef",
            },
            b"",
        ),
    ),
    (
        ERROR_EVENT_MESSAGE,
        Message({":message-type": "error", ":error-code": "code", ":error-message": "message"}, b""),
    ),
]

NEGATIVE = {
    "length": b"\x01\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96",
    "payload": b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'\x8d\xc3e96",
    "headers": (
        b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent+type\x07\x00\x10"
        b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1"
    ),
    "header_length": (
        b"\x00\x00\x00=\xff\x00\x01\x02\x07\xfd\x83\x96\x0ccontent-type\x07\x00"
        b"\x10application/json{'foo':'bar'}\x8d\x9c\x08\xb1"
    ),
    "duplicate_header": (
        b"\x00\x00\x00\x24\x00\x00\x00\x14\x4b\xb9\x82\xd0\x04test\x04asdf\x04test\x04asdf\xf3\xf4\x75\x63"
    ),
}


@pytest.mark.parametrize(("encoded", "decoded"), POSITIVE)
def test_botocore_vectors_decode(encoded: bytes, decoded: Message) -> None:
    assert EventStreamDecoder().messages(encoded) == [decoded]


def test_all_vectors_in_one_buffer_fed_byte_by_byte() -> None:
    wire = b"".join(encoded for encoded, _ in POSITIVE)
    decoder, out = EventStreamDecoder(), []
    for i in range(len(wire)):
        out += decoder.messages(wire[i : i + 1])
    assert out == [decoded for _, decoded in POSITIVE]


@pytest.mark.parametrize("name", list(NEGATIVE))
def test_corrupt_messages_are_refused(name: str) -> None:
    with pytest.raises(ProviderError) as caught:
        EventStreamDecoder().messages(NEGATIVE[name])
    assert caught.value.code == "provider_bad_response"


def test_as_a_stream_decoder_events_come_out_by_event_type_and_errors_raise() -> None:
    assert EventStreamDecoder().feed(INITIAL_RESPONSE) == [
        ("initial-response", '{"InitialResponse": "sometext"}')
    ]
    assert EventStreamDecoder().feed(PAYLOAD_ONE_STR_HEADER) == []  # no :message-type: not an event
    with pytest.raises(ProviderError, match="code: message"):
        EventStreamDecoder().feed(ERROR_EVENT_MESSAGE)

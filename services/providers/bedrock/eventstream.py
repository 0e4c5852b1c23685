"""AWS's binary event stream (`application/vnd.amazon.eventstream`), decoded incrementally: bytes in,
messages out.

Each message: a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), typed headers, the
payload, and a CRC32 of everything before it (docs.aws.amazon.com/AmazonS3/latest/API/
RESTSelectObjectAppendix.html, "Prelude"; the same framing as botocore's `eventstream.py`). As a
`StreamDecoder` it yields `(:event-type, payload)` for events and `(:exception-type, payload)` for
modeled exceptions; a corrupt frame or a protocol `error` message raises.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

from shared.errors import ProviderError

HeaderValue = bool | int | bytes | str

_PRELUDE = 12
_MAX_MESSAGE = 16 * 1024 * 1024 + 128 * 1024  # botocore's limits: 16 MiB payload, 128 KiB headers
_FIXED = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}  # header type -> struct format (8: timestamp, ms)


@dataclass(frozen=True, slots=True)
class Message:
    headers: dict[str, HeaderValue]
    payload: bytes


def _corrupt(detail: str) -> ProviderError:
    return ProviderError(
        f"the event stream is corrupt: {detail}", code="provider_bad_response", retryable=False
    )


def _headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    at = 0
    try:
        while at < len(data):
            size = data[at]
            name = data[at + 1 : at + 1 + size].decode()
            at += 1 + size
            kind = data[at]
            at += 1
            value: HeaderValue
            if kind in (0, 1):
                value = kind == 0
            elif kind in _FIXED:
                fmt = _FIXED[kind]
                (value,) = struct.unpack_from(fmt, data, at)
                at += struct.calcsize(fmt)
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", data, at)
                raw = data[at + 2 : at + 2 + length]
                at += 2 + length
                value = raw.decode() if kind == 7 else raw
            elif kind == 9:
                value = data[at : at + 16]  # a UUID, as its 16 bytes
                at += 16
            else:
                raise _corrupt(f"unknown header type {kind}")
            if name in headers:
                raise _corrupt(f"duplicate header {name!r}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise _corrupt("unreadable headers") from exc
    return headers


class EventStreamDecoder:
    """One per response body. `messages` returns the messages a chunk completed, in order."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def messages(self, chunk: bytes) -> list[Message]:
        self._buffer += chunk
        out: list[Message] = []
        buffer = self._buffer
        while len(buffer) >= _PRELUDE:
            total, headers_length, prelude_crc = struct.unpack_from(">III", buffer)
            if binascii.crc32(buffer[:8]) != prelude_crc:
                raise _corrupt("prelude checksum mismatch")
            if total > _MAX_MESSAGE or total < _PRELUDE + 4 or headers_length > total - _PRELUDE - 4:
                raise _corrupt(f"impossible lengths (message {total}, headers {headers_length})")
            if len(buffer) < total:
                break
            (message_crc,) = struct.unpack_from(">I", buffer, total - 4)
            if binascii.crc32(buffer[: total - 4]) != message_crc:
                raise _corrupt("message checksum mismatch")
            end_of_headers = _PRELUDE + headers_length
            out.append(
                Message(
                    _headers(bytes(buffer[_PRELUDE:end_of_headers])),
                    bytes(buffer[end_of_headers : total - 4]),
                )
            )
            del buffer[:total]
        return out

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        events: list[tuple[str | None, str]] = []
        for message in self.messages(chunk):
            headers = message.headers
            kind = headers.get(":message-type")
            payload = message.payload.decode("utf-8", errors="replace")
            if kind == "event":
                events.append((str(headers.get(":event-type", "")), payload))
            elif kind == "exception":
                events.append((str(headers.get(":exception-type", "")), payload))
            elif kind == "error":
                code, text = headers.get(":error-code", ""), headers.get(":error-message", "")
                raise ProviderError(
                    f"the event stream ended in an error: {code!s}: {text!s}", code="provider_error"
                )
        return events

"""HTTP body -> `ChatRequest`: size limit, JSON decoding straight into msgspec types, validation, and
vendor extras (fields we do not model) kept as one JSON object instead of being dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import msgspec
from starlette.requests import Request

from shared.errors import BodyTooLarge, InvalidRequest
from shared.messages import ChatRequest

T = TypeVar("T")

_decoder = msgspec.json.Decoder(ChatRequest)
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
# Fields of the unified request that the gateway sets itself: sent by a client, they are vendor extras.
_INTERNAL = frozenset({"extra_json", "anthropic"})
_KNOWN = frozenset(ChatRequest.__struct_fields__) - _INTERNAL
_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes, invalid: Callable[[str], InvalidRequest]) -> T:
    """A JSON request body decoded straight into its type; `invalid` words a validation error's text."""
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc


def parse_chat_request(body: bytes) -> ChatRequest:
    fields = decode_body(_fields_decoder, body, _invalid)
    extras = {name: raw for name, raw in fields.items() if name not in _KNOWN}
    if extras:
        # An internal field's name sent by a client is one of its extras, decoded as nothing of ours.
        known = msgspec.json.encode({name: raw for name, raw in fields.items() if name in _KNOWN})
        request = decode_body(_decoder, known, _invalid)
        request = msgspec.structs.replace(request, extra_json=msgspec.json.encode(extras))
    else:
        request = decode_body(_decoder, body, _invalid)
    validate(request)
    return request


def _invalid(text: str) -> InvalidRequest:
    match = _PATH.search(text)
    param = match.group(1) if match else None
    missing = re.search(r"missing required field `([^`]+)`", text)
    if missing:
        param = f"{param}.{missing.group(1)}" if param else missing.group(1)
    return InvalidRequest(f"Invalid request: {text}", param=param or None)


def _check_range(value: object, name: str, low: float, high: float) -> None:
    if isinstance(value, int | float) and not low <= value <= high:
        raise InvalidRequest(f"`{name}` must be between {low:g} and {high:g}, got {value}.", param=name)


def validate(request: ChatRequest) -> None:
    """The checks a provider would make anyway, made here so a bad request costs no upstream call."""
    if not request.model:
        raise InvalidRequest("`model` must be a non-empty string.", param="model")
    if not request.messages:
        raise InvalidRequest("`messages` must contain at least one message.", param="messages")
    _check_range(request.temperature, "temperature", 0, 2)
    _check_range(request.top_p, "top_p", 0, 1)
    _check_range(request.n, "n", 1, 128)
    _check_range(request.presence_penalty, "presence_penalty", -2, 2)
    _check_range(request.frequency_penalty, "frequency_penalty", -2, 2)
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(request, name)
        if isinstance(value, int) and value < 1:
            raise InvalidRequest(f"`{name}` must be at least 1, got {value}.", param=name)
    for i, message in enumerate(request.messages):
        if message.role == "tool" and not isinstance(message.tool_call_id, str):
            raise InvalidRequest(
                "A message with role `tool` needs a `tool_call_id`.", param=f"messages[{i}].tool_call_id"
            )

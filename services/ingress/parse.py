"""HTTP body -> `ChatRequest`: size limit, JSON decoding straight into msgspec types (their `msgspec.Meta`
constraints are the validation), errors naming the field at fault, and vendor extras (fields we do not
model) kept as one JSON object instead of being dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import msgspec
from msgspec import UNSET
from starlette.requests import Request

from shared.errors import BodyTooLarge, InvalidRequest
from shared.messages import ChatRequest, encode

T = TypeVar("T")


class _Modelled(ChatRequest, frozen=True, forbid_unknown_fields=True):
    """A body with no field we do not model (nearly every one): decoded in one pass, without the scan for
    vendor extras first. Anything else (extras, an error to word) takes the general way."""


_decoder = msgspec.json.Decoder(ChatRequest)
_modelled_decoder = msgspec.json.Decoder(_Modelled)
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
# Fields of the unified request that the gateway sets itself: sent by a client, they are vendor extras.
INTERNAL_FIELDS = frozenset({"extra_json", "anthropic", "responses_body"})
_KNOWN = frozenset(ChatRequest.__struct_fields__) - INTERNAL_FIELDS


@dataclass(frozen=True, slots=True)
class Problem:
    """What msgspec found wrong with a body: where, which kind of problem, and what."""

    path: str  # e.g. "messages[0].content"; "" at the top level
    kind: Literal["missing", "unknown", "invalid"]
    field: str | None  # the missing or unknown field's name
    detail: str  # msgspec's words without the location, e.g. "Expected `float` <= 2.0"

    @property
    def param(self) -> str | None:
        """The whole path of the field at fault, as OpenAI's `param` names it."""
        name = ".".join(part for part in (self.path, self.field) if part)
        return name or None


# msgspec carries the location only in its message text ("... - at `$.a[0].b`"; msgspec issues #264 and
# #468 ask for it as data), so this one hand-written reader turns it into a `Problem`, pinned by
# tests/unit/test_parse_problem.py against msgspec's actual messages.
_LOCATED = re.compile(r"^(?P<detail>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"^Object (?P<kind>missing required|contains unknown) field `(?P<field>[^`]+)`$")


def problem(exc: msgspec.ValidationError) -> Problem:
    """msgspec's validation error as a `Problem`."""
    located = _LOCATED.match(str(exc))
    assert located is not None  # the pattern matches every string
    detail, path = located["detail"], located["path"] or ""
    if named := _FIELD.match(detail):
        kind: Literal["missing", "unknown"] = "missing" if named["kind"] == "missing required" else "unknown"
        return Problem(path, kind, named["field"], detail)
    return Problem(path, "invalid", None, detail)


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


def decode_body(
    decoder: msgspec.json.Decoder[T], body: bytes, invalid: Callable[[Problem], InvalidRequest]
) -> T:
    """A JSON request body decoded straight into its type; `invalid` words a validation problem."""
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid(problem(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # msgspec's own guard against a stack overflow, ~1,000 levels deep
        raise _too_deep() from exc


def _too_deep() -> InvalidRequest:
    return InvalidRequest("The request body is nested too deeply.", code="nesting_too_deep")


def bus_payload(request: ChatRequest) -> bytes:
    """The request encoded for the bus. JSON carries any integer and any depth; msgpack stops at 64 bits,
    and an encoder nested deep enough runs out of stack: either is the client's input, so a 400."""
    try:
        return encode(request)
    except OverflowError as exc:
        raise InvalidRequest("The request holds an integer outside the 64-bit range.",
                             code="integer_out_of_range") from exc
    except RecursionError as exc:
        raise _too_deep() from exc


def parse_chat_request(body: bytes) -> ChatRequest:
    try:
        request: ChatRequest = _modelled_decoder.decode(body)
    except (msgspec.MsgspecError, RecursionError):
        request = _with_extras(body)  # or the error, worded
    else:
        if not (request.extra_json is UNSET and request.anthropic is UNSET and request.responses_body is UNSET):
            request = _with_extras(body)  # a field only the gateway sets, sent by a client: one of its extras
    validate(request)
    return request


def _with_extras(body: bytes) -> ChatRequest:
    fields = decode_body(_fields_decoder, body, invalid)
    extras = {name: raw for name, raw in fields.items() if name not in _KNOWN}
    if extras:
        # An internal field's name sent by a client is one of its extras, decoded as nothing of ours.
        known = msgspec.json.encode({name: raw for name, raw in fields.items() if name in _KNOWN})
        request = decode_body(_decoder, known, invalid)
        request = msgspec.structs.replace(request, extra_json=msgspec.json.encode(extras))
    else:
        request = decode_body(_decoder, body, invalid)
    return request


def invalid(problem: Problem) -> InvalidRequest:
    """The client's error for `problem`, naming the field at fault."""
    param = problem.param
    if problem.kind == "missing":
        return InvalidRequest(f"`{param}`: field required.", param=param)
    return InvalidRequest(f"`{param}`: {problem.detail}." if param else f"Invalid request: {problem.detail}.",
                          param=param)


def validate(request: ChatRequest) -> None:
    """What the types' constraints cannot say, checked here so a bad request costs no upstream call."""
    for i, message in enumerate(request.messages):
        if message.role == "tool" and not isinstance(message.tool_call_id, str):
            raise InvalidRequest(
                "A message with role `tool` needs a `tool_call_id`.", param=f"messages[{i}].tool_call_id"
            )

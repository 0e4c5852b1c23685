"""Chat request validation: the `msgspec.Meta` ranges OpenAI documents, and errors that name the field at
fault, read from msgspec's validation errors in one place (`services.ingress.parse.problem`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
import pytest

from services.ingress.parse import Problem, parse_chat_request, problem
from shared.errors import InvalidRequest

HI = [{"role": "user", "content": "hi"}]


class _Inner(msgspec.Struct, forbid_unknown_fields=True):
    count: Annotated[int, msgspec.Meta(ge=1)]


class _Outer(msgspec.Struct):
    items: list[_Inner]
    name: str = ""


def problem_of(raw: bytes) -> Problem:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(raw, type=_Outer)
    return problem(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{}", Problem("", "missing", "items", "Object missing required field `items`")),
        (b'{"items": [{}]}', Problem("items[0]", "missing", "count", "Object missing required field `count`")),
        (b'{"items": [{"count": 1, "x": 2}]}',
         Problem("items[0]", "unknown", "x", "Object contains unknown field `x`")),
        (b'{"items": [{"count": 0}]}', Problem("items[0].count", "invalid", None, "Expected `int` >= 1")),
        (b'{"items": [], "name": 5}', Problem("name", "invalid", None, "Expected `str`, got `int`")),
        (b"[]", Problem("", "invalid", None, "Expected `object`, got `array`")),
    ],
)
def test_msgspecs_errors_read_as_path_kind_and_field(raw: bytes, expected: Problem) -> None:
    assert problem_of(raw) == expected


def test_param_joins_path_and_field() -> None:
    assert problem_of(b'{"items": [{}]}').param == "items[0].count"
    assert problem_of(b"{}").param == "items"
    assert problem_of(b"[]").param is None


def chat(**fields: Any) -> bytes:
    return json.dumps({"model": "m", "messages": HI} | fields).encode()


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"temperature": 2.5}, "temperature", "<= 2.0"),
        ({"temperature": -0.1}, "temperature", ">= 0.0"),
        ({"top_p": 1.5}, "top_p", "<= 1.0"),
        ({"n": 0}, "n", ">= 1"),
        ({"max_tokens": 0}, "max_tokens", ">= 1"),
        ({"max_completion_tokens": -5}, "max_completion_tokens", ">= 1"),
        ({"presence_penalty": 2.5}, "presence_penalty", "<= 2.0"),
        ({"frequency_penalty": -3}, "frequency_penalty", ">= -2.0"),
        ({"top_logprobs": 21}, "top_logprobs", "<= 20"),
        ({"logit_bias": {"50256": -101}}, "logit_bias[...]", ">= -100.0"),
        ({"model": ""}, "model", "length >= 1"),
        ({"messages": []}, "messages", "length >= 1"),
        ({"messages": [{"role": "user"}]}, "messages[0]", None),  # content may be absent (None): accepted
        ({"messages": [{"content": "hi"}]}, "messages[0].role", "field required"),
        ({"temperature": "hot"}, "temperature", "Expected `float | null`, got `str`"),
    ],
)
def test_out_of_range_parameters_are_400s_naming_the_field(
    fields: dict[str, Any], param: str, words: str | None
) -> None:
    if words is None:
        parse_chat_request(chat(**fields))
        return
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(chat(**fields))
    assert caught.value.http_status == 400
    assert caught.value.param == param
    assert words in caught.value.message and caught.value.message.startswith(f"`{param}`")


@pytest.mark.parametrize(
    "fields",
    [{"temperature": 0}, {"temperature": 2}, {"top_p": 1}, {"n": 1}, {"max_tokens": 1},
     {"presence_penalty": -2}, {"top_logprobs": 0}, {"logit_bias": {"50256": 100}}, {"temperature": None}],
)
def test_the_documented_bounds_themselves_are_accepted(fields: dict[str, Any]) -> None:
    request = parse_chat_request(chat(**fields))
    (name, value), = fields.items()
    assert getattr(request, name) == value


def test_a_tool_message_without_its_call_id_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(chat(messages=[*HI, {"role": "tool", "content": "42"}]))
    assert caught.value.param == "messages[1].tool_call_id"


def test_vendor_extras_and_the_gateways_own_field_names_are_kept_as_extras_never_as_ours() -> None:
    plain = parse_chat_request(chat(temperature=1))  # no extras: the one-pass decode
    assert plain.temperature == 1 and plain.extra_json is msgspec.UNSET
    for extras in ({"vendor_knob": 3}, {"anthropic": {"system": "obey me"}}, {"extra_json": "eyJ4IjogMX0="},
                   {"responses_body": "e30=", "vendor_knob": [1]}):
        request = parse_chat_request(chat(temperature=1, **extras))
        assert request.temperature == 1
        assert request.anthropic is msgspec.UNSET and request.responses_body is msgspec.UNSET
        assert isinstance(request.extra_json, bytes) and json.loads(request.extra_json) == extras

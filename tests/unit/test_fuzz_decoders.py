"""The request decoders under generated input (issue #15): whatever bytes arrive, the chat and Messages
decoders, the bus encoding and the cache key either accept the request or raise our `InvalidRequest`
(a 400), never anything that would become a 500. A fixed budget and a derandomised search keep the run
short and repeatable in CI; the inputs that broke them before are kept below as fixed cases.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.ingress.anthropic_dialect import parse_messages_request
from services.ingress.parse import bus_payload, parse_chat_request
from shared.cache.key import cache_key
from shared.errors import GatewayError
from shared.messages import ChatRequest

BUDGET = settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CHAT_FIELDS = ["model", "messages", "temperature", "top_p", "n", "stream", "stop", "max_tokens", "seed", "tools",
               "tool_choice", "response_format", "logit_bias", "user", "metadata", "stream_options"]
MESSAGES_FIELDS = ["model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k", "stop_sequences",
                   "stream", "tools", "tool_choice", "metadata"]

scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits on purpose
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["role", "content", "type", "text", "name", "parameters", "schema", "x"]) | st.text(max_size=8),
    inner, max_size=4), max_leaves=30)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "wizard"]),
                                 "content": values})


def bodies(fields: list[str]) -> st.SearchStrategy[bytes]:
    obj = st.dictionaries(st.sampled_from(fields) | st.text(max_size=10), values, max_size=8)
    shaped = st.fixed_dictionaries({"model": st.just("mock"), "max_tokens": values,
                                    "messages": st.lists(message, min_size=0, max_size=3)}, optional={
        name: values for name in fields if name not in ("model", "max_tokens", "messages")})
    as_json = st.one_of(obj, shaped).map(lambda o: json.dumps(o).encode())
    return st.one_of(as_json, st.binary(max_size=200), as_json.flatmap(_mangled))


def _mangled(body: bytes) -> st.SearchStrategy[bytes]:
    """A valid JSON body with a byte changed, cut short, or nested far too deep."""
    return st.one_of(
        st.tuples(st.integers(0, max(0, len(body) - 1)), st.integers(0, 255)).map(
            lambda c: body[:c[0]] + bytes([c[1]]) + body[c[0] + 1:]),
        st.integers(0, len(body)).map(lambda n: body[:n]),
        st.integers(500, 3000).map(lambda d: body[:-1] + b', "deep": ' + b"[" * d + b"]" * d + b"}"),
    )


def _check(parse: Any, body: bytes) -> None:
    try:
        chat = parse(body)
    except GatewayError as exc:
        assert exc.http_status < 500, exc
        return
    assert isinstance(chat, ChatRequest)
    try:
        payload = bus_payload(chat)
    except GatewayError as exc:
        assert exc.http_status == 400, exc
        return
    assert payload
    assert len(cache_key(chat, "tenant")) == 64


FIXED = [  # the inputs of issue #15, item 5
    b'{"model": "mock", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    b'{"model": "mock", "messages": [{"role": "user", "content": "hi"}], "seed": 18446744073709551617}',
    b'{"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 18446744073709551617}',
    (b'{"model": "mock", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "response_format": '
    b'{"type": "json_schema", "json_schema": {"name": "s", "schema": {"maximum": 18446744073709551617}}}}'),
    b'{"model": "mock", "messages": [{"role": "user", "content": "hi"}], "na\xffme": 1}',
]


@pytest.mark.parametrize("body", FIXED)
@pytest.mark.parametrize("parse", [parse_chat_request, parse_messages_request], ids=["chat", "messages"])
def test_the_inputs_that_gave_500s(parse: Any, body: bytes) -> None:
    _check(parse, body)


@BUDGET
@given(bodies(CHAT_FIELDS))
@example(FIXED[0])
def test_chat_decoder_never_fails_unexpectedly(body: bytes) -> None:
    _check(parse_chat_request, body)


@BUDGET
@given(bodies(MESSAGES_FIELDS))
@example(FIXED[1])
def test_messages_decoder_never_fails_unexpectedly(body: bytes) -> None:
    _check(parse_messages_request, body)

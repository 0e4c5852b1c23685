"""PII detection, redaction and restoration as pure code: each kind's true and false positives, one request's
placeholders, native bodies left structurally intact, and restoration of streams split anywhere."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingress.auth import Grant
from services.ingress.limits import Rule
from services.ingress.pii import Policy, RestoringWriter
from services.ingress.stream import ChunkWriter, Meta
from services.providers.settings import SETTINGS
from shared.config import ApiKey, ConfigError, build
from shared.errors import InvalidRequest
from shared.messages import (
    AnthropicParams,
    ChatRequest,
    ChatResult,
    Choice,
    FunctionCall,
    FunctionCallDelta,
    Message,
    ResponseMessage,
    StreamChunk,
    StreamEnd,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from shared.pii.detect import Detector
from shared.pii.redact import Redactor
from shared.pii.request import redact_request
from shared.pii.restore import Restorer

DETECTOR = Detector()


def found(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start:f.end]) for f in DETECTOR.find(text)]


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("write to jane.doe+news@example.co.uk today", "email", "jane.doe+news@example.co.uk"),
    ("call (415) 555-2671 now", "phone", "(415) 555-2671"),
    ("or +44 20 7946 0958.", "phone", "+44 20 7946 0958"),
    ("Berlin office: +49 30 901820", "phone", "+49 30 901820"),
    ("card 4111 1111 1111 1111 expires", "card", "4111 1111 1111 1111"),
    ("amex 3782-822463-10005", "card", "3782-822463-10005"),
    ("pay 5555555555554444", "card", "5555555555554444"),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "iban", "DE89 3704 0044 0532 0130 00"),
    ("to GB82WEST12345698765432.", "iban", "GB82WEST12345698765432"),
    ("SSN 536-22-1234", "ssn", "536-22-1234"),
    ("from 192.168.1.20.", "ip", "192.168.1.20"),
    ("host 2001:db8::8a2e:370:7334 is down", "ip", "2001:db8::8a2e:370:7334"),
    ("loopback ::1 only", "ip", "::1"),
    ("key sk-proj-abcdefghijklmnopqrstuvwxyz123456 leaked", "secret", "sk-proj-abcdefghijklmnopqrstuvwxyz123456"),
    ("sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "secret", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"),
    ("aws AKIAIOSFODNN7EXAMPLE", "secret", "AKIAIOSFODNN7EXAMPLE"),
    ("token ghp_0123456789abcdefghijklmnopqrstuvwxyz", "secret", "ghp_0123456789abcdefghijklmnopqrstuvwxyz"),
    ('{"password": "correct-horse-battery"}', "secret", "correct-horse-battery"),
    ("Authorization: Bearer abc.def-ghijklmnopqrstu", "secret", "abc.def-ghijklmnopqrstu"),
])
def test_each_kind_is_found(text: str, kind: str, value: str) -> None:
    assert found(text) == [(kind, value)]


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 is not Luhn-valid",
    "order 1234567812345678 (not Luhn-valid)",
    "IBAN DE89 3704 0044 0532 0130 01 fails mod 97",
    "SSNs are never 000-12-3456, 666-12-3456, 912-34-5678 or 078-05-1120",
    "999.1.1.1 and 1.2.3 are not addresses",
    "std::vector and 10:30:45 and de:ad are not addresses",
    "123-456-7890 has no such area code",
    "on 2024-01-15 at 10:30, version 1.2.3",
    "ids toolu_01A09q90qw90lq917835lq9 call_abc123 msg_01XFDUDYJgAACzvnptvVoYEL",
    "uuid 550e8400-e29b-41d4-a716-446655440000",
    "user@localhost has no domain, @mention neither",
    "a sk-short key and password: short",
    "",
])
def test_lookalikes_are_not_found(text: str) -> None:
    assert found(text) == []


def test_only_the_configured_kinds_are_found() -> None:
    text = "mail a@example.com from 10.0.0.1"
    assert [f.kind for f in Detector(["ip"]).find(text)] == ["ip"]


def test_overlapping_findings_keep_the_longer_one() -> None:
    assert found("mail 4155552671@example.com") == [("email", "4155552671@example.com")]


def test_one_value_one_placeholder_numbered_per_kind() -> None:
    redactor = Redactor(DETECTOR)
    first = redactor.text("a@example.com, b@example.com and 4111 1111 1111 1111")
    second = redactor.text("again a@example.com")
    assert first == "[EMAIL_1], [EMAIL_2] and [CARD_1]"
    assert second == "again [EMAIL_1]"
    assert redactor.counts() == {"email": 2, "card": 1}
    assert redactor.values() == {"[EMAIL_1]": "a@example.com", "[EMAIL_2]": "b@example.com",
                                 "[CARD_1]": "4111 1111 1111 1111"}


def test_text_without_findings_is_the_same_object() -> None:
    text = "nothing to see here 42"
    assert Redactor(DETECTOR).text(text) is text


def chat(*messages: Message, **fields: object) -> ChatRequest:
    return msgspec.convert({"model": "m", "messages": [msgspec.to_builtins(m) for m in messages], **fields},
                           ChatRequest)


def test_the_request_is_redacted_where_a_provider_reads_it() -> None:
    native = msgspec.json.encode({
        "model": "claude", "max_tokens": 10,
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "I am a@example.com"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "a@example.com-not-really-base64"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                "data": "card 4111 1111 1111 1111"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "mail a@example.com", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {"id": "a@example.com"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sent from 10.1.2.3"}]},
        ],
    })
    request = chat(
        Message(role="user", content=[TextPart(text="I am a@example.com")]),
        Message(role="assistant", tool_calls=[ToolCall(id="call_1", function=FunctionCall(
            name="send", arguments='{"to": "a@example.com", "n": 1}'))]),
        Message(role="tool", tool_call_id="call_1", content="sent from 10.1.2.3"),
        user="a@example.com",
    )
    request = msgspec.structs.replace(request, anthropic=AnthropicParams(body=native))
    redactor = Redactor(DETECTOR)
    out = redact_request(request, redactor)
    assert out.messages[0].content == [TextPart(text="I am [EMAIL_1]")]
    assert out.messages[1].tool_calls[0].function.arguments == '{"to":"[EMAIL_1]","n":1}'  # type: ignore[index]
    assert out.messages[2].content == "sent from [IP_1]"
    assert out.user == "[EMAIL_1]"
    assert isinstance(out.anthropic, AnthropicParams)
    body = msgspec.json.decode(out.anthropic.body)
    user, assistant, result = body["messages"]
    assert user["content"][0]["text"] == "I am [EMAIL_1]"
    assert user["content"][1]["source"]["data"] == "a@example.com-not-really-base64"  # base64: not text
    assert user["content"][2]["source"]["data"] == "card [CARD_1]"  # a text document is text
    assert assistant["content"][0]["thinking"] == "mail a@example.com"  # signed: sent back as it was
    assert assistant["content"][1] == {"type": "tool_use", "id": "toolu_1", "name": "send",
                                       "input": {"id": "[EMAIL_1]"}}
    assert result["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sent from [IP_1]"}
    assert redactor.counts() == {"email": 1, "ip": 1, "card": 1}


def test_a_request_without_findings_is_left_as_it_is() -> None:
    request = chat(Message(role="user", content="hello"))
    assert redact_request(request, Redactor(DETECTOR)) is request


def test_restoring_a_whole_answer() -> None:
    restorer = Restorer({"[EMAIL_1]": "a@example.com", "[CARD_1]": "4111 1111 1111 1111"})
    content = msgspec.json.encode([{"type": "thinking", "thinking": "[EMAIL_1]", "signature": "s"},
                                   {"type": "text", "text": "Hi [EMAIL_1], [CARD_2] unknown"}])
    result = ChatResult(id="x", created=1, model="m", provider="p", target_model="m", usage=Usage(), choices=[
        Choice(index=0, message=ResponseMessage(content="Hi [EMAIL_1] [CARD_1]", content_json=content, tool_calls=[
            ToolCall(id="c", function=FunctionCall(name="f", arguments='{"to": "[EMAIL_1]"}'))]))])
    message = restorer.result(result).choices[0].message
    assert message.content == "Hi a@example.com 4111 1111 1111 1111"
    assert message.tool_calls[0].function.arguments == '{"to": "a@example.com"}'  # type: ignore[index]
    assert isinstance(message.content_json, bytes)
    assert msgspec.json.decode(message.content_json) == [
        {"type": "thinking", "thinking": "[EMAIL_1]", "signature": "s"},  # signed: placeholders kept
        {"type": "text", "text": "Hi a@example.com, [CARD_2] unknown"}]


RESTORER = Restorer({"[EMAIL_1]": "a@example.com", "[PHONE_12]": "+44 20 7946 0958"})
TEXT = "Echo: [EMAIL_1] and [PHONE_12], not [EMAIL_3] nor [EM or [SSN"


@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=8))
def test_a_stream_split_anywhere_is_restored_whole(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(TEXT)]
    holdback = RESTORER.holdback()
    out = "".join(holdback.feed(TEXT[a:b]) for a, b in itertools.pairwise(bounds)) + holdback.flush()
    assert out == RESTORER.text(TEXT)
    assert out == "Echo: a@example.com and +44 20 7946 0958, not [EMAIL_3] nor [EM or [SSN"


def sse_text(events: bytes) -> tuple[str, str]:
    """The content and the first tool call's arguments an OpenAI client assembles from these events."""
    content, arguments = "", ""
    for line in events.split(b"\n\n"):
        if not line.startswith(b"data: {"):
            continue
        for choice in msgspec.json.decode(line[6:]).get("choices", ()):  # an error event has none
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                arguments += call.get("function", {}).get("arguments", "")
    return content, arguments


def test_the_stream_writer_restores_text_and_tool_arguments_split_across_chunks() -> None:
    writer = RestoringWriter(ChunkWriter(Meta("id", "m", 1, False)), RESTORER)
    frames = [
        StreamChunk(seq=0, role="assistant", content="Hi [EMA"),
        StreamChunk(seq=1, content="IL_1], call [PHO"),
        StreamChunk(seq=2, tool_calls=[ToolCallDelta(index=0, id="c", function=FunctionCallDelta(
            name="f", arguments='{"to": "[EM'))]),
        StreamChunk(seq=3, tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments='AIL_1]"}'))]),
        StreamChunk(seq=4, finish_reason="tool_calls"),
    ]
    events = b"".join(writer.chunk(f) for f in frames)
    events += writer.end(StreamEnd(seq=5, id="id", model="m", created=1, finish_reason="tool_calls", usage=None,
                                   provider="p", target_model="m"))
    assert sse_text(events) == ("Hi a@example.com, call [PHO", '{"to": "a@example.com"}')
    assert events.endswith(b"data: [DONE]\n\n")


def policy(**fields: object) -> Policy:
    return Policy(build({"providers": {"mock": {}}, **fields}, SETTINGS))


def test_the_stricter_of_a_key_and_a_model_applies_and_either_replaces_the_default() -> None:
    p = policy(pii={"mode": "redact"}, models=[
        {"name": "strict", "targets": [{"provider": "mock", "model": "mock"}], "pii": "block"},
        {"name": "loose", "targets": [{"provider": "mock", "model": "mock"}], "pii": "redact_restore"}])
    assert p.mode(None, "mock") == "redact"
    assert p.mode(None, "strict") == "block"
    assert p.mode(None, "loose") == "redact_restore"
    key = ApiKey(name="k", sha256="0" * 64, pii="off")
    grant = Grant(key, Rule.of(key, 60.0), None)
    assert p.mode(grant, "mock") == "off"
    assert p.mode(grant, "strict") == "block"
    assert p.mode(grant, "loose") == "redact_restore"


def test_block_names_the_kinds_and_never_the_values() -> None:
    p = policy(pii={"mode": "block"})
    with pytest.raises(InvalidRequest) as refused:
        p.apply(chat(Message(role="user", content="a@example.com 4111 1111 1111 1111")), None)
    assert refused.value.code == "pii_detected"
    assert "card, email" in refused.value.message
    assert "a@example.com" not in refused.value.message and "4111" not in refused.value.message


def test_off_costs_nothing_and_finds_nothing() -> None:
    request = chat(Message(role="user", content="a@example.com"))
    assert policy().apply(request, None) == (request, None)


def test_a_region_phonenumbers_does_not_know_fails_the_start() -> None:
    with pytest.raises(ConfigError, match=r"pii\.phone_region"):
        policy(pii={"mode": "redact", "phone_region": "XX"})


def test_a_responses_body_keeps_its_structure_and_sealed_items() -> None:
    body = msgspec.json.encode({"model": "gpt-4o", "instructions": "Reply to a@example.com", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "from 10.1.2.3"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "a@example.com"}],
         "encrypted_content": "gAAAA"},
        {"type": "function_call", "call_id": "call_1", "name": "send", "arguments": '{"to": "a@example.com"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sent to a@example.com"},
    ]})
    out = msgspec.json.decode(Redactor(DETECTOR).json(body))
    assert out["instructions"] == "Reply to [EMAIL_1]"
    message, reasoning, call, output = out["input"]
    assert message["content"][0]["text"] == "from [IP_1]"
    assert reasoning["summary"][0]["text"] == "a@example.com"  # encrypted alongside: sent back as it was
    assert call == {"type": "function_call", "call_id": "call_1", "name": "send", "arguments": '{"to":"[EMAIL_1]"}'}
    assert output == {"type": "function_call_output", "call_id": "call_1", "output": "sent to [EMAIL_1]"}


def test_a_stream_that_fails_sends_what_it_held_back_before_its_error_event() -> None:
    writer = RestoringWriter(ChunkWriter(Meta("id", "m", 1, False)), RESTORER)
    events = writer.chunk(StreamChunk(seq=0, role="assistant", content="Hi [EMA"))
    events += writer.error(InvalidRequest("upstream broke"))
    assert sse_text(events) == ("Hi [EMA", "")
    assert events.rstrip().endswith(b"}") and b"upstream broke" in events.split(b"\n\n")[-2]


async def test_a_large_request_is_redacted_off_the_event_loop_all_the_same() -> None:
    p = policy(pii={"mode": "redact_restore"})
    large = chat(Message(role="user", content="word " * 20_000 + "mail a@example.com"))
    redacted, restorer = await p.redact(large, None)
    assert redacted.messages[0].text().endswith("mail [EMAIL_1]") and restorer is not None
    small = chat(Message(role="user", content="mail a@example.com"))
    assert (await p.redact(small, None))[0].messages[0].content == "mail [EMAIL_1]"

"""What Claude Code sends, read by the Messages dialect: the native body an Anthropic upstream receives, the
unified fields other providers read (thinking -> reasoning effort, top_k, documents, server tools), betas and
their allow-list, and the token estimate for providers that do not count."""

from __future__ import annotations

import json
from typing import Any

import bpe_openai  # type: ignore[import-untyped]
import msgspec
import pytest

from services.ingress.anthropic_request import parse_messages_request
from services.providers import tokens
from services.providers.anthropic.adapter import adapter, allowed_betas
from services.providers.anthropic.settings import AnthropicSettings
from services.providers.openai.adapter import adapter as openai
from services.providers.openai.settings import OpenAISettings
from services.providers.reasoning import effort_of
from shared.errors import InvalidRequest
from shared.messages import AnthropicParams, Thinking

# The shape of a Claude Code 2.1 call (fields as it sends them; texts shortened).
CLAUDE_CODE: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "stream": True,
    "thinking": {"type": "enabled", "budget_tokens": 31999, "display": "omitted"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
    "metadata": {"user_id": "user_abc_account__session_1"},
    "system": [{"type": "text", "text": "You are Claude Code."},
               {"type": "text", "text": "Instructions.", "cache_control": {"type": "ephemeral"}}],
    "tools": [
        {"name": "Write", "description": "Write a file", "input_schema": {"type": "object"}},
        {"name": "Later", "description": "Deferred", "input_schema": {"type": "object"}, "defer_loading": True},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Write it", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {"file_path": "/a", "content": "b"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
    ],
    "a_field_from_next_year": {"anything": [1, 2]},
}
HEADERS = {"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14", "anthropic-version": "2023-06-01"}


def parse(body: dict[str, Any] = CLAUDE_CODE, **kwargs: Any) -> Any:
    return parse_messages_request(json.dumps(body).encode(), HEADERS, True, **kwargs)


def test_the_native_body_is_the_client_s_without_stream() -> None:
    params = parse().anthropic
    assert isinstance(params, AnthropicParams)
    assert json.loads(params.body) == {k: v for k, v in CLAUDE_CODE.items() if k != "stream"}
    assert params.betas == ["claude-code-20250219", "interleaved-thinking-2025-05-14"]
    assert (params.version, params.beta_query, params.prompt_caching) == ("2023-06-01", True, True)
    assert params.thinking == Thinking(type="enabled", budget_tokens=31999, effort="high")


def test_an_anthropic_upstream_receives_it_as_sent() -> None:
    chat = parse()
    call = adapter.build_stream_request(chat, "claude-sonnet-4-5-20250929", AnthropicSettings(api_key="sk-up"))
    assert json.loads(call.body) == {**CLAUDE_CODE, "model": "claude-sonnet-4-5-20250929"}
    assert call.url.endswith("/v1/messages?beta=true")
    assert call.headers["anthropic-beta"] == HEADERS["anthropic-beta"]
    assert call.headers["x-api-key"] == "sk-up"
    assert "stream" not in json.loads(adapter.build_request(chat, "m", AnthropicSettings()).body)  # not streamed


def test_the_unified_request_keeps_what_translated_providers_can_use() -> None:
    chat = parse()
    assert [t.function.name for t in chat.tools] == ["Write", "Later"]  # the server tool is Anthropic's
    assistant = chat.messages[2]
    assert assistant.role == "assistant" and assistant.content is None
    assert [c.function.name for c in assistant.tool_calls] == ["Write"]
    assert chat.messages[3].role == "tool" and chat.messages[3].content == "ok"


def test_the_allow_list_keeps_only_the_listed_betas() -> None:
    betas = ["a", "b", "c"]
    assert allowed_betas(betas, None) == betas and allowed_betas(betas, ["*"]) == betas
    assert allowed_betas(betas, ["b"]) == ["b"]
    chat = parse()
    call = adapter.build_request(chat, "m", AnthropicSettings(anthropic_betas=["interleaved-thinking-2025-05-14"]))
    assert call.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    call = adapter.build_request(chat, "m", AnthropicSettings(anthropic_betas=[]))
    assert "anthropic-beta" not in call.headers


def test_count_tokens_bodies_need_no_max_tokens_and_go_to_the_count_endpoint() -> None:
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello, Claude"}]}
    with pytest.raises(InvalidRequest, match="max_tokens"):
        parse(body)
    call = adapter.build_count_request(parse(body, count=True), "claude-sonnet-4-5", AnthropicSettings())
    assert call.url.endswith("/v1/messages/count_tokens?beta=true") and json.loads(call.body) == body


@pytest.mark.parametrize(("thinking", "effort"), [
    (Thinking(type="enabled", budget_tokens=1024), "low"),
    (Thinking(type="enabled", budget_tokens=8192), "medium"),
    (Thinking(type="enabled", budget_tokens=31999), "high"),
    (Thinking(type="adaptive", effort="medium"), "medium"),
    (Thinking(type="adaptive", effort="max"), "high"),
    (Thinking(type="adaptive"), None),
    (Thinking(type="disabled"), None),
])
def test_thinking_maps_to_a_reasoning_effort(thinking: Thinking, effort: str | None) -> None:
    assert effort_of(thinking) == effort


def test_an_openai_upstream_gets_reasoning_effort_only_for_reasoning_models_and_nothing_anthropic() -> None:
    chat = parse()
    for model, effort in (("gpt-5", "high"), ("o4-mini", "high"), ("gpt-4o", None)):
        body = json.loads(openai.build_request(chat, model, OpenAISettings()).body)
        assert body.get("reasoning_effort") == effort
        assert not {"anthropic", "thinking", "context_management", "a_field_from_next_year"} & set(body)
    forced = {**CLAUDE_CODE, "tool_choice": {"type": "tool", "name": "web_search"}}
    with pytest.raises(InvalidRequest, match="forces `web_search`"):
        openai.build_request(parse(forced), "gpt-5", OpenAISettings())


def test_estimates_use_openai_s_encodings_and_chat_overhead() -> None:
    chat = parse({"model": "m", "max_tokens": 1, "system": "Be brief.",
                  "messages": [{"role": "user", "content": "Hello, Claude"}]})
    o200k = bpe_openai.get_encoding("o200k_base")

    def n(text: str) -> int:
        return len(o200k.encode(text))

    expected = 3 + (3 + n("system") + n("Be brief.")) + (3 + n("user") + n("Hello, Claude"))
    assert tokens.estimate(chat, "gpt-4o") == expected
    assert tokens.encoding_name("gpt-4-turbo") == "cl100k_base" and tokens.encoding_name("gpt-4o-mini") == "o200k_base"
    image = parse({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]})
    assert tokens.estimate(image, "gpt-4o") == 3 + 3 + n("user") + tokens.MEDIA_TOKENS


@pytest.mark.parametrize(("model", "thinking", "config"), [
    ("gemini-2.5-flash", {"type": "enabled", "budget_tokens": 31999}, {"thinkingBudget": 24576}),
    ("gemini-2.5-flash", {"type": "enabled", "budget_tokens": 2048}, {"thinkingBudget": 2048}),
    ("gemini-2.5-flash", {"type": "adaptive"}, {"thinkingBudget": -1}),
    ("gemini-2.5-flash", {"type": "disabled"}, {"thinkingBudget": 0}),
    ("gemini-2.5-pro", {"type": "disabled"}, None),  # Pro cannot turn thinking off: left to the model
    ("gemini-3-pro-preview", {"type": "enabled", "budget_tokens": 8192}, {"thinkingLevel": "medium"}),
])
def test_gemini_gets_thinking_as_its_own_config(model: str, thinking: dict[str, Any], config: Any) -> None:
    from services.providers.gemini.request import gemini_request

    chat = parse({"model": model, "max_tokens": 100, "thinking": thinking, "top_k": 40,
                  "messages": [{"role": "user", "content": "Hi"}]})
    body = json.loads(msgspec.json.encode(gemini_request(chat, model)))
    assert body["generationConfig"].get("thinkingConfig") == config
    assert body["generationConfig"]["topK"] == 40


PDF = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
TEXT = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Plain words."}}
BY_URL = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}


def with_documents(*documents: dict[str, Any]) -> Any:
    return parse({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": list(documents)}]})


def test_documents_reach_gemini_and_bedrock_in_their_own_blocks() -> None:
    from services.providers.bedrock.request import converse_request
    from services.providers.gemini.request import gemini_request

    gemini = json.loads(msgspec.json.encode(gemini_request(with_documents(PDF, TEXT), "gemini-2.5-pro")))
    assert gemini["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}}, {"text": "Plain words."}]
    bedrock = json.loads(msgspec.json.encode(converse_request(with_documents(PDF, TEXT))))
    assert bedrock["messages"][0]["content"] == [
        {"document": {"format": "pdf", "name": "document", "source": {"bytes": "JVBERi0x"}}},
        {"document": {"format": "txt", "name": "document", "source": {"bytes": "UGxhaW4gd29yZHMu"}}}]
    with pytest.raises(InvalidRequest, match="gemini: documents by URL"):
        gemini_request(with_documents(BY_URL), "gemini-2.5-pro")
    with pytest.raises(InvalidRequest, match="bedrock: a document must be inline"):
        converse_request(with_documents(BY_URL))

"""OpenAI's HTTP shapes (responses, errors, model lists), kept apart from the bus envelopes."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from shared.errors import GatewayError
from shared.messages import (
    ChatResult,
    Choice,
    CompletionTokensDetails,
    PromptTokensDetails,
    ToolCall,
    Usage,
)

# OpenAI's published schema types `system_fingerprint`, `prompt_tokens_details` and
# `completion_tokens_details` as a string or an object, never null: absent when unknown. A message always
# has `refusal` (null when there is none).


class OpenAIUsage(Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | UnsetType = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType = UNSET


class OpenAIMessage(Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET


class OpenAIChoice(Struct, kw_only=True):
    index: int
    message: OpenAIMessage
    finish_reason: str | None = "stop"
    logprobs: None = None


class ChatCompletion(Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[OpenAIChoice]
    usage: OpenAIUsage
    system_fingerprint: str | UnsetType = UNSET


def usage_of(usage: Usage) -> OpenAIUsage:
    return OpenAIUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=usage.prompt_tokens_details if usage.prompt_tokens_details is not None else UNSET,
        completion_tokens_details=usage.completion_tokens_details
        if usage.completion_tokens_details is not None else UNSET,
    )


def choice_of(choice: Choice) -> OpenAIChoice:
    message = choice.message
    refusal = message.refusal if isinstance(message.refusal, str) else None
    return OpenAIChoice(index=choice.index, finish_reason=choice.finish_reason, message=OpenAIMessage(
        content=message.content, refusal=refusal, tool_calls=message.tool_calls))


class ErrorBody(Struct, kw_only=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(Struct, kw_only=True):
    error: ErrorBody


class ModelCard(Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "llm-edge"


class ModelList(Struct, kw_only=True):
    data: list[ModelCard]
    object: Literal["list"] = "list"


_json = msgspec.json.Encoder()


def completion_json(result: ChatResult) -> bytes:
    return _json.encode(
        ChatCompletion(
            id=result.id,
            created=result.created,
            model=result.model,
            choices=[choice_of(c) for c in result.choices],
            usage=usage_of(result.usage),
            system_fingerprint=result.system_fingerprint if result.system_fingerprint is not None else UNSET,
        )
    )


def error_json(error: GatewayError) -> bytes:
    return _json.encode(
        ErrorEnvelope(
            error=ErrorBody(message=error.message, type=error.error_type, param=error.param, code=error.code)
        )
    )


def encode(value: Struct) -> bytes:
    return _json.encode(value)

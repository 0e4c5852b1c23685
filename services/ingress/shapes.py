"""OpenAI's HTTP shapes (responses, errors, model lists), kept apart from the bus envelopes."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

from shared.errors import GatewayError
from shared.messages import ChatResult, Choice, Usage


class ChatCompletion(Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


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
            choices=result.choices,
            usage=result.usage,
            system_fingerprint=result.system_fingerprint,
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

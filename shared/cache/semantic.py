"""What the semantic cache compares, as pure functions: which chat requests may be answered by a similar
earlier one, the text that is embedded, and the partition, a key over everything else in the request.

Two requests can only match when their partitions are equal: same tenant, model, parameters, tools and
(scope `last_user`) the same conversation before the last user turn. Only the embedded text may differ.
"""

from __future__ import annotations

import hashlib

import msgspec

from shared.config import Config, SemanticCache
from shared.messages import NON_SEMANTIC_FIELDS, ChatRequest, Message, TextPart

_canonical = msgspec.msgpack.Encoder(order="sorted")
_CLEARED = dict.fromkeys(NON_SEMANTIC_FIELDS, msgspec.UNSET)


def settings_by_model(config: Config) -> dict[str, SemanticCache]:
    """The public models that opted in, with their settings."""
    return {route.name: route.semantic_cache for route in config.models if route.semantic_cache is not None}


def eligible(request: ChatRequest, settings: SemanticCache) -> bool:
    """Whether a similar earlier answer may stand for this request's.

    Never for a conversation that holds tool calls or tool results (the answer depends on what a tool
    returned at that moment, which the embedded text does not show), nor for one declaring a tool listed
    in `volatile_tools`; never when a message holds anything but text (an image or a file the embedding
    would not see); never for a request that carries its client's raw body (Anthropic Messages, Responses
    API), whose text would otherwise reach the provider unseen by the comparison."""
    if request.anthropic is not msgspec.UNSET or request.responses_body is not msgspec.UNSET:
        return False
    for message in request.messages:
        if message.role == "tool" or message.tool_calls or message.tool_call_id:
            return False
        if isinstance(message.content, list) and not all(isinstance(p, TextPart) for p in message.content):
            return False
    if settings.volatile_tools and isinstance(request.tools, list):
        volatile = set(settings.volatile_tools)
        if any(tool.function.name in volatile for tool in request.tools):
            return False
    return bool(embedded_text(request, settings.scope))


def _last_user(messages: list[Message]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i
    return None


def embedded_text(request: ChatRequest, scope: str) -> str:
    """The text compared: the last user turn, or the whole conversation one `role: text` line a turn."""
    if scope == "conversation":
        return "\n".join(f"{m.role}: {m.text()}" for m in request.messages)
    last = _last_user(request.messages)
    return "" if last is None else request.messages[last].text()


def partition(request: ChatRequest, namespace: str, settings: SemanticCache) -> str:
    """SHA-256 over the tenant, the embedding settings and the request without its embedded text."""
    messages: list[Message] = []
    if settings.scope == "last_user":
        messages = list(request.messages)
        last = _last_user(messages)
        if last is not None:
            messages[last] = Message(role="user")  # its place is kept; its text is what is compared
    rest = msgspec.structs.replace(request, messages=messages, **_CLEARED)
    digest = hashlib.sha256(b"semantic\x00")
    for part in (namespace, settings.embedding_model, settings.scope, str(settings.dimensions)):
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(_canonical.encode(rest))
    return digest.hexdigest()

"""A unified chat request with its text redacted: what a provider is actually sent. That is the messages'
text, documents given as text, tool calls' arguments and tool results, the `user` field, and the native bodies
some requests carry beside the unified fields (a Messages body for Anthropic, a Responses body for providers
with their own Responses API, vendor extras): a provider that reads one of those must see placeholders too.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET

from shared.messages import AnthropicParams, ChatRequest, ContentPart, DocumentPart, FunctionCall, Message, TextPart
from shared.pii.redact import Redactor


def redact_request(chat: ChatRequest, redactor: Redactor) -> ChatRequest:
    """`chat` with every text a provider reads redacted; `chat` itself when nothing was found."""
    changes: dict[str, object] = {}
    messages = [_message(m, redactor) for m in chat.messages]
    if any(new is not old for new, old in zip(messages, chat.messages, strict=True)):
        changes["messages"] = messages
    if isinstance(chat.user, str) and (user := redactor.text(chat.user)) is not chat.user:
        changes["user"] = user
    if isinstance(chat.extra_json, bytes) and (extra := redactor.json(chat.extra_json)) is not chat.extra_json:
        changes["extra_json"] = extra
    if isinstance(chat.responses_body, bytes) and (
        body := redactor.json(chat.responses_body)
    ) is not chat.responses_body:
        changes["responses_body"] = body
    if isinstance(chat.anthropic, AnthropicParams) and (
        native := redactor.json(chat.anthropic.body)
    ) is not chat.anthropic.body:
        changes["anthropic"] = msgspec.structs.replace(chat.anthropic, body=native)
    return msgspec.structs.replace(chat, **changes) if changes else chat


def _message(message: Message, redactor: Redactor) -> Message:
    changes: dict[str, object] = {}
    content = message.content
    if isinstance(content, str):
        if (text := redactor.text(content)) is not content:
            changes["content"] = text
    elif isinstance(content, list):
        parts = [_part(p, redactor) for p in content]
        if any(new is not old for new, old in zip(parts, content, strict=True)):
            changes["content"] = parts
    if message.tool_calls is not UNSET:
        calls = [
            call if (arguments := redactor.arguments(call.function.arguments)) is call.function.arguments
            else msgspec.structs.replace(call, function=FunctionCall(name=call.function.name, arguments=arguments))
            for call in message.tool_calls
        ]
        if any(new is not old for new, old in zip(calls, message.tool_calls, strict=True)):
            changes["tool_calls"] = calls
    return msgspec.structs.replace(message, **changes) if changes else message


def _part(part: ContentPart, redactor: Redactor) -> ContentPart:
    if isinstance(part, TextPart):
        text = redactor.text(part.text)
        return part if text is part.text else TextPart(text=text)
    if isinstance(part, DocumentPart) and part.media_type == "text/plain" and isinstance(part.data, str):
        data = redactor.text(part.data)
        return part if data is part.data else msgspec.structs.replace(part, data=data)
    return part  # images and files: binary, or a URL the provider fetches

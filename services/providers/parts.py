"""OpenAI messages as the native request builders (Anthropic, Gemini, Bedrock) read them: system prompts
apart and same-role turns merged, text and images mapped to each provider's blocks, base64 data: URLs
split, a tool call's arguments decoded to the JSON object every one of them wants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

import msgspec

from shared.errors import InvalidRequest
from shared.messages import (
    AnthropicParams,
    ChatRequest,
    ContentPart,
    DocumentPart,
    FilePart,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    ToolChoiceFunction,
)

T = TypeVar("T")

_arguments_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def turns(
    messages: list[Message], blocks: Callable[[Message], list[T]]
) -> tuple[list[str], list[tuple[Literal["user", "assistant"], list[T]]]]:
    """System and developer prompts apart; the rest as `(role, blocks)` turns in order, a tool message
    counting as the user's, turns without blocks left out (these providers reject them) and consecutive
    same-role turns merged (they require user and assistant to alternate)."""
    system: list[str] = []
    result: list[tuple[Literal["user", "assistant"], list[T]]] = []
    for m in messages:
        if m.role in ("system", "developer"):
            system.append(m.text())
            continue
        role: Literal["user", "assistant"] = "assistant" if m.role == "assistant" else "user"
        found = blocks(m)
        if not found:
            continue
        if result and result[-1][0] == role:
            result[-1][1].extend(found)
        else:
            result.append((role, found))
    return system, result


def map_parts(
    content: str | list[ContentPart] | None, text: Callable[[str], T], image: Callable[[str], T],
    document: Callable[[DocumentPart], T] | None = None, provider: str = "this provider",
) -> list[T]:
    """A message's content as provider blocks: `text` for each non-empty text, `image` for each image URL,
    `document` for each document; a provider without `document` cannot read one (a 400 that says so)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text(content)] if content else []
    blocks: list[T] = []
    for part in content:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append(text(part.text))
        elif isinstance(part, ImagePart):
            blocks.append(image(part.image_url.url))
        elif isinstance(part, DocumentPart | FilePart):
            if document is None:
                raise unreadable_document(provider)
            blocks.append(document(as_document(part, provider)))
    return blocks


def as_document(part: DocumentPart | FilePart, provider: str) -> DocumentPart:
    """An OpenAI file part (inline, as a data: URL) as the document it holds."""
    if isinstance(part, DocumentPart):
        return part
    parsed = data_url(part.file.file_data) if isinstance(part.file.file_data, str) else None
    if parsed is None:
        raise InvalidRequest(f"{provider}: a `file` part must carry its data inline (`file_data`, a base64 "
                             "data: URL); uploaded file ids belong to OpenAI.", param="messages",
                             code="unsupported_content")
    return DocumentPart(media_type=parsed[0], data=parsed[1])


def unreadable_document(provider: str) -> InvalidRequest:
    return InvalidRequest(f"{provider}: this provider cannot read `document` content blocks (PDF or text "
                          "documents); send the text instead, or use a model that reads documents.",
                          param="messages", code="unsupported_content")


def forced_tool_missing(request: ChatRequest, provider: str) -> None:
    """A 400 when `tool_choice` forces a tool the request does not define for this provider: an Anthropic
    server tool (web search, code execution, ...) that only Anthropic runs."""
    choice = request.tool_choice
    if not isinstance(request.anthropic, AnthropicParams) or not isinstance(choice, ToolChoiceFunction):
        return  # an OpenAI client's request goes as it is, for the provider to judge
    if any(t.function.name == choice.function.name for t in request.tools or ()):
        return
    raise InvalidRequest(f"{provider}: `tool_choice` forces `{choice.function.name}`, which is not among the "
                         "request's tools here (Anthropic's server tools run only on Anthropic).",
                         param="tool_choice", code="unsupported_tool")


def data_url(url: str) -> tuple[str, str] | None:
    """`(media type, base64 data)` of a `data:<type>;base64,<data>` URL; None for any other URL."""
    header, sep, data = url.partition(",")
    if url.startswith("data:") and sep and header.endswith(";base64"):
        return header[5:-7], data
    return None


def tool_arguments(call: ToolCall, provider: str) -> dict[str, msgspec.Raw]:
    """An assistant tool call's `arguments` string as a JSON object (absent arguments: `{}`)."""
    try:
        return _arguments_decoder.decode(call.function.arguments or "{}")
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"{provider}: tool call {call.id!r} has arguments that are not a JSON object",
            param="messages",
            code="invalid_tool_arguments",
        ) from exc

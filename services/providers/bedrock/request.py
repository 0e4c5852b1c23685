"""The unified request as a Bedrock Converse request: system prompts as `system[].text`, alternating
`user`/`assistant` messages of content blocks (`text`, `image`, `toolUse`, `toolResult`), sampling as
`inferenceConfig`, tools as `toolConfig` (docs.aws.amazon.com/bedrock/latest/APIReference/
API_runtime_Converse.html, API_runtime_ContentBlock.html, API_runtime_ToolConfiguration.html).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from services.providers.parts import data_url, map_parts, tool_arguments, turns
from shared.errors import InvalidRequest
from shared.messages import (
    ChatRequest,
    ContentPart,
    DocumentPart,
    Message,
    ToolCall,
    ToolChoiceFunction,
)

_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}

# --- the request body ----------------------------------------------------------------------------


class _ImageSource(Struct):
    bytes: str  # base64, as blobs are in JSON


class _Image(Struct):
    format: str
    source: _ImageSource


class _ToolUse(Struct, rename="camel"):
    tool_use_id: str
    name: str
    input: dict[str, msgspec.Raw]


class _ToolResultContent(Struct, omit_defaults=True):
    text: str | UnsetType = UNSET
    json: dict[str, Any] | UnsetType = UNSET


class _ToolResult(Struct, rename="camel"):
    tool_use_id: str
    content: list[_ToolResultContent]


class _Document(Struct):
    format: str  # pdf, txt, …
    name: str
    source: _ImageSource


class _Block(Struct, rename="camel", omit_defaults=True):
    # A ContentBlock is a union: exactly one member is set.
    text: str | UnsetType = UNSET
    image: _Image | UnsetType = UNSET
    document: _Document | UnsetType = UNSET
    tool_use: _ToolUse | UnsetType = UNSET
    tool_result: _ToolResult | UnsetType = UNSET


class _Message(Struct):
    role: Literal["user", "assistant"]
    content: list[_Block]


class _SystemText(Struct):
    text: str


class _InferenceConfig(Struct, rename="camel", omit_defaults=True):
    max_tokens: int | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET


class _InputSchema(Struct):
    json: dict[str, Any]


class _ToolSpec(Struct, rename="camel", omit_defaults=True):
    name: str
    input_schema: _InputSchema
    description: str | UnsetType = UNSET


class _Tool(Struct, rename="camel"):
    tool_spec: _ToolSpec


class _NamedTool(Struct):
    name: str


class _ToolChoice(Struct, omit_defaults=True):
    auto: dict[str, Any] | UnsetType = UNSET
    any: dict[str, Any] | UnsetType = UNSET
    tool: _NamedTool | UnsetType = UNSET


class _ToolConfig(Struct, rename="camel", omit_defaults=True):
    tools: list[_Tool]
    tool_choice: _ToolChoice | UnsetType = UNSET


class _Request(Struct, rename="camel", omit_defaults=True):
    messages: list[_Message]
    system: list[_SystemText] | UnsetType = UNSET
    inference_config: _InferenceConfig | UnsetType = UNSET
    tool_config: _ToolConfig | UnsetType = UNSET


_object_decoder = msgspec.json.Decoder(dict[str, Any])


# --- the unified request as Converse's -------------------------------------------------------------


def converse_request(request: ChatRequest) -> _Request:
    if isinstance(request.n, int) and request.n > 1:
        raise InvalidRequest("bedrock: n > 1 is not supported", param="n", code="unsupported_parameter")
    system, messages = _messages(request.messages)
    inference = _InferenceConfig(
        max_tokens=request.max_output_tokens() or UNSET,
        temperature=_number(request.temperature),
        top_p=_number(request.top_p),
        stop_sequences=request.stop_list() or UNSET,
    )
    return _Request(
        messages=messages,
        system=[_SystemText(text) for text in system] or UNSET,
        inference_config=inference if inference != _InferenceConfig() else UNSET,
        tool_config=_tool_config(request, messages),
    )


def _messages(messages: list[Message]) -> tuple[list[str], list[_Message]]:
    """System prompts apart; the rest as alternating turns (Converse requires it), same roles merged."""
    system, found = turns(messages, _message_blocks)
    result = [_Message(role=role, content=blocks) for role, blocks in found]
    for turn in result:
        # Tool results open their user turn, before any text the client added after them.
        turn.content.sort(key=lambda b: isinstance(b.tool_result, UnsetType))
    return system, result


def _message_blocks(m: Message) -> list[_Block]:
    match m.role:
        case "user":
            return _blocks(m.content)
        case "assistant":
            text = m.text()
            blocks = [_Block(text=text)] if text else []
            return blocks + [_Block(tool_use=_tool_use(c)) for c in m.tool_calls or ()]
        case "tool":
            result = _ToolResult(tool_use_id=m.tool_call_id or "", content=[_tool_output(m.text())])
            return [_Block(tool_result=result)]
    return []  # system prompts: `turns` keeps them apart


def _blocks(content: str | list[ContentPart] | None) -> list[_Block]:
    return map_parts(content, lambda text: _Block(text=text), lambda url: _Block(image=_image(url)),
                     _document, provider="bedrock")


# Converse's DocumentBlock formats by media type (API_runtime_DocumentBlock.html).
_DOCUMENT_FORMATS = {"application/pdf": "pdf", "text/plain": "txt", "text/csv": "csv", "text/html": "html",
                     "text/markdown": "md"}


def _document(part: DocumentPart) -> _Block:
    fmt = _DOCUMENT_FORMATS.get(part.media_type) if isinstance(part.media_type, str) else None
    if not isinstance(part.data, str) or fmt is None:
        raise InvalidRequest("bedrock: a document must be inline (base64) and a PDF, text, CSV, HTML or Markdown "
                             "file for this provider.", param="messages", code="unsupported_content")
    # Converse blobs are base64 in JSON; a plain-text document arrives as its text.
    data = part.data if fmt != "txt" else base64.b64encode(part.data.encode()).decode()
    return _Block(document=_Document(format=fmt, name="document", source=_ImageSource(bytes=data)))


def _image(url: str) -> _Image:
    parsed = data_url(url)
    if parsed is None or parsed[0] not in _IMAGE_FORMATS:
        raise InvalidRequest(
            "bedrock: an image_url must be a base64 data: URL of a PNG, JPEG, GIF or WebP image",
            param="messages",
            code="invalid_image_url",
        )
    media, data = parsed
    return _Image(format=_IMAGE_FORMATS[media], source=_ImageSource(bytes=data))


def _tool_use(call: ToolCall) -> _ToolUse:
    return _ToolUse(tool_use_id=call.id, name=call.function.name, input=tool_arguments(call, "bedrock"))


def _tool_output(text: str) -> _ToolResultContent:
    try:
        return _ToolResultContent(json=_object_decoder.decode(text))
    except msgspec.DecodeError:
        return _ToolResultContent(text=text)


def _tool_config(request: ChatRequest, messages: list[_Message]) -> _ToolConfig | UnsetType:
    tools = [
        _Tool(
            tool_spec=_ToolSpec(
                name=t.function.name,
                input_schema=_InputSchema(
                    json=t.function.parameters
                    if isinstance(t.function.parameters, dict)
                    else {"type": "object", "properties": {}}
                ),
                description=t.function.description,
            )
        )
        for t in request.tools or ()
    ]
    if not tools:
        return UNSET
    choice = request.tool_choice
    if choice == "none":
        # Converse has no "none": leave the tools out, unless the history holds tool blocks, which
        # Converse only accepts alongside a toolConfig.
        used = any(
            not isinstance(b.tool_use, UnsetType) or not isinstance(b.tool_result, UnsetType)
            for m in messages
            for b in m.content
        )
        return _ToolConfig(tools=tools) if used else UNSET
    if isinstance(choice, ToolChoiceFunction):
        return _ToolConfig(tools=tools, tool_choice=_ToolChoice(tool=_NamedTool(choice.function.name)))
    if choice == "required":
        return _ToolConfig(tools=tools, tool_choice=_ToolChoice(any={}))
    if choice == "auto":
        return _ToolConfig(tools=tools, tool_choice=_ToolChoice(auto={}))
    return _ToolConfig(tools=tools)


def _number(value: float | None | UnsetType) -> float | UnsetType:
    return value if isinstance(value, (int, float)) else UNSET

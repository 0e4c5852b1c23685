"""Anthropic's Messages API at the edge: a `POST /v1/messages` body becomes the unified `ChatRequest`, and a
unified answer or error becomes Anthropic's Message object or error body (streams: `anthropic_events.py`).

The reverse of `services/providers/anthropic.py`, which speaks the same format to an upstream.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from services.ingress.parse import Problem, decode_body, invalid, validate
from shared.errors import GatewayError, InvalidRequest
from shared.messages import (
    ChatRequest,
    ChatResult,
    ContentPart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    Message,
    NamedFunction,
    NonEmptyStr,
    Probability,
    TextPart,
    TokenCount,
    Tool,
    ToolCall,
    ToolChoiceFunction,
    Usage,
)

PATHS = frozenset({"/v1/messages", "/messages"})

# --- the request, as Anthropic documents it ---------------------------------------------------------------
# A top-level field this gateway cannot honour is refused with its name rather than silently dropped. Inside
# blocks, extra fields are ignored: an answer's blocks passed back as input carry response-only fields
# (`citations: null`, `caller`), which Anthropic accepts too. A block type it cannot carry is refused.


class _Cacheable(Struct, kw_only=True):
    # Prompt-caching hints are Anthropic's own optimisation; accepted and ignored (the gateway caches whole
    # answers itself), so clients written for Anthropic work unchanged.
    cache_control: dict[str, Any] | None | UnsetType = UNSET


class TextBlock(_Cacheable, tag="text", tag_field="type"):
    text: str


class Base64Source(Struct, tag="base64", tag_field="type"):
    media_type: str
    data: str


class URLSource(Struct, tag="url", tag_field="type"):
    url: str


class ImageBlock(_Cacheable, tag="image", tag_field="type"):
    source: Base64Source | URLSource


class ToolUseBlock(_Cacheable, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, msgspec.Raw]


class ToolResultBlock(_Cacheable, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | UnsetType = UNSET
    is_error: bool | UnsetType = UNSET


Block = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock


class InputMessage(Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolSpec(_Cacheable):
    name: str
    input_schema: dict[str, Any]  # a JSON Schema, passed on as the client wrote it
    description: str | UnsetType = UNSET
    type: Literal["custom"] | UnsetType = UNSET


class ToolChoice(Struct, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class Metadata(Struct, kw_only=True):
    user_id: str | None | UnsetType = UNSET


class MessagesRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    # Constraints as Anthropic's API reference documents them (temperature 0..1, max_tokens >= 1).
    model: NonEmptyStr
    messages: Annotated[list[InputMessage], Meta(min_length=1)]
    max_tokens: TokenCount
    system: str | list[TextBlock] | UnsetType = UNSET
    temperature: Probability | UnsetType = UNSET
    top_p: Probability | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    tools: list[ToolSpec] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    # Hints about Anthropic's own serving (prompt caching, capacity tier): accepted, with nothing to do here.
    cache_control: dict[str, Any] | None | UnsetType = UNSET
    service_tier: str | UnsetType = UNSET


_decoder = msgspec.json.Decoder(MessagesRequest)
_BLOCK_TYPE = re.compile(r"content\[\d+\]\.type$")
_TOOL_TYPE = re.compile(r"^tools\[\d+\]\.type$")
_TOOL_CHOICES: dict[str, Literal["auto", "required", "none"]] = {"auto": "auto", "any": "required", "none": "none"}


def parse_messages_request(body: bytes) -> ChatRequest:
    """An Anthropic Messages body -> the unified request, or `InvalidRequest` naming what is wrong."""
    chat = to_chat_request(decode_body(_decoder, body, _invalid))
    validate(chat)
    return chat


def _invalid(problem: Problem) -> InvalidRequest:
    where = problem.path
    if problem.kind == "unknown":
        return InvalidRequest(f"`{problem.param}`: this field is not supported by this gateway's Messages API.",
                              param=problem.param, code="unsupported_parameter")
    if problem.kind == "invalid" and _BLOCK_TYPE.search(where):  # a tag no block type of ours has
        return InvalidRequest(f"`{where}`: {problem.detail}; content blocks of that type are not supported by "
                              "this gateway (text, image, tool_use and tool_result are).", param=where,
                              code="unsupported_content")
    if problem.kind == "invalid" and _TOOL_TYPE.search(where):
        return InvalidRequest(f"`{where}`: only client tools (a name and an input_schema) are supported by this "
                              "gateway, not Anthropic's server tools.", param=where, code="unsupported_tool")
    return invalid(problem)


def to_chat_request(request: MessagesRequest) -> ChatRequest:
    messages = [*_system(request.system)]
    for i, message in enumerate(request.messages):
        messages += _messages(message, f"messages[{i}]")
    choice = request.tool_choice
    metadata = request.metadata
    return ChatRequest(
        model=request.model,
        messages=messages,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop_sequences or UNSET,
        stream=request.stream,
        user=metadata.user_id if isinstance(metadata, Metadata) and metadata.user_id else UNSET,
        tools=[_tool(t) for t in request.tools] if request.tools else UNSET,
        tool_choice=_tool_choice(choice) if isinstance(choice, ToolChoice) else UNSET,
        parallel_tool_calls=False
        if isinstance(choice, ToolChoice) and choice.disable_parallel_tool_use is True
        else UNSET,
    )


def _system(system: str | list[TextBlock] | UnsetType) -> list[Message]:
    if isinstance(system, str):
        return [Message(role="system", content=system)] if system else []
    if isinstance(system, list) and system:
        return [Message(role="system", content=[TextPart(text=b.text) for b in system])]
    return []


def _messages(message: InputMessage, where: str) -> list[Message]:
    """One Anthropic turn -> unified messages: a user turn's tool results become `tool` messages (first, as
    OpenAI requires them right after the assistant's calls), an assistant turn's tool uses its tool calls."""
    if isinstance(message.content, str):
        return [Message(role=message.role, content=message.content)]
    if message.role == "assistant":
        return [_assistant(message.content, where)]
    results: list[Message] = []
    parts: list[ContentPart] = []
    for j, block in enumerate(message.content):
        match block:
            case TextBlock(text=text):
                parts.append(TextPart(text=text))
            case ImageBlock(source=source):
                parts.append(_image(source))
            case ToolResultBlock():
                results.append(Message(role="tool", tool_call_id=block.tool_use_id,
                                       content=_result_content(block.content)))
            case ToolUseBlock():
                raise InvalidRequest("A `tool_use` block belongs in an assistant message.",
                                     param=f"{where}.content[{j}]")
    if parts or not results:
        results.append(Message(role="user", content=parts))
    return results


def _assistant(blocks: list[Block], where: str) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(blocks):
        match block:
            case TextBlock(text=text):
                texts.append(text)
            case ToolUseBlock():
                arguments = msgspec.json.encode(block.input).decode()
                calls.append(ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments)))
            case _:
                raise InvalidRequest(f"An assistant message cannot hold a `{_tag(block)}` block.",
                                     param=f"{where}.content[{j}]")
    return Message(role="assistant", content="".join(texts) if texts else None, tool_calls=calls or UNSET)


def _tag(block: Block) -> str:
    return str(type(block).__struct_config__.tag)


def _image(source: Base64Source | URLSource) -> ImagePart:
    if isinstance(source, URLSource):
        return ImagePart(image_url=ImageURL(url=source.url))
    return ImagePart(image_url=ImageURL(url=f"data:{source.media_type};base64,{source.data}"))


def _result_content(content: str | list[TextBlock | ImageBlock] | UnsetType) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    if all(isinstance(b, TextBlock) for b in content):
        return "".join(b.text for b in content if isinstance(b, TextBlock))
    return [TextPart(text=b.text) if isinstance(b, TextBlock) else _image(b.source) for b in content]


def _tool(spec: ToolSpec) -> Tool:
    return Tool(function=FunctionDef(name=spec.name, description=spec.description, parameters=spec.input_schema))


def _tool_choice(choice: ToolChoice) -> Literal["none", "auto", "required"] | ToolChoiceFunction:
    if choice.type == "tool":
        if not isinstance(choice.name, str) or not choice.name:
            raise InvalidRequest("`tool_choice.name` is required when `tool_choice.type` is `tool`.",
                                 param="tool_choice.name")
        return ToolChoiceFunction(function=NamedFunction(name=choice.name))
    return _TOOL_CHOICES[choice.type]


# --- the answer ------------------------------------------------------------------------------------------

STOP_REASONS = {  # unified finish reason -> Anthropic stop reason; anything else reads as end_turn
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class OutText(Struct, tag="text", tag_field="type"):
    text: str


class OutToolUse(Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: msgspec.Raw


class MessageUsage(Struct, kw_only=True):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | UnsetType = UNSET


class AnthropicMessage(Struct, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[OutText | OutToolUse]
    model: str
    stop_reason: str | None
    stop_sequence: str | None = None
    usage: MessageUsage


_json = msgspec.json.Encoder()
_object = msgspec.json.Decoder(dict[str, msgspec.Raw])


def message_id(unified_id: str) -> str:
    """Anthropic's ids start with `msg_`; the unified id is kept after it so logs still match."""
    if unified_id.startswith("msg_"):
        return unified_id
    return "msg_" + (unified_id.removeprefix("chatcmpl-") or uuid.uuid4().hex)


def stop_reason(finish_reason: str | None, stop_sequence: str | None = None) -> str:
    if stop_sequence is not None and finish_reason in (None, "stop"):
        return "stop_sequence"
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def usage_of(usage: Usage | None) -> MessageUsage:
    """OpenAI counts cached prompt tokens inside the prompt; Anthropic counts them apart from input_tokens."""
    if usage is None:
        return MessageUsage(input_tokens=0, output_tokens=0)
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details is not None else 0
    return MessageUsage(input_tokens=usage.prompt_tokens - cached, output_tokens=usage.completion_tokens,
                        cache_read_input_tokens=cached if cached else UNSET)


def tool_input(arguments: str) -> msgspec.Raw:
    """A tool call's arguments text as the JSON object Anthropic's `input` is; `{}` when there are none.
    Arguments that are not a JSON object (a model's mistake) travel whole under `arguments`."""
    if not arguments.strip():
        return msgspec.Raw(b"{}")
    try:
        _object.decode(arguments)
    except msgspec.DecodeError:
        return msgspec.Raw(_json.encode({"arguments": arguments}))
    return msgspec.Raw(arguments.encode())


def message_of(result: ChatResult) -> AnthropicMessage:
    choice = result.choices[0] if result.choices else None
    content: list[OutText | OutToolUse] = []
    if choice is not None:
        if choice.message.content:
            content.append(OutText(text=choice.message.content))
        for call in choice.message.tool_calls or ():
            content.append(OutToolUse(id=call.id, name=call.function.name, input=tool_input(call.function.arguments)))
    return AnthropicMessage(
        id=message_id(result.id),
        content=content,
        model=result.model,
        stop_reason=stop_reason(choice.finish_reason if choice is not None else None, result.stop_sequence),
        stop_sequence=result.stop_sequence,
        usage=usage_of(result.usage),
    )


def message_json(result: ChatResult) -> bytes:
    return _json.encode(message_of(result))


# --- errors ----------------------------------------------------------------------------------------------

# Anthropic's documented error type for each HTTP status ("Errors": 4xx not listed read as
# invalid_request_error, 5xx as api_error). The status itself stays the gateway's own.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class ErrorDetail(Struct, kw_only=True):
    type: str
    message: str


class ErrorBody(Struct, kw_only=True):
    type: Literal["error"] = "error"
    error: ErrorDetail
    request_id: str | UnsetType = UNSET


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_json(error: GatewayError, rid: str | None = None) -> bytes:
    """Anthropic's error body, so its SDKs raise the class that matches the status, with our message."""
    detail = ErrorDetail(type=error_type(error.http_status), message=error.message)
    return _json.encode(ErrorBody(error=detail, request_id=rid if rid else UNSET))

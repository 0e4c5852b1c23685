"""A Messages API request (`POST /v1/messages`, `/v1/messages/count_tokens`) -> the unified `ChatRequest`.

Two readers of one body. An Anthropic upstream gets the body as the client sent it (`AnthropicParams.body`),
with its betas and version: thinking, `cache_control`, `context_management`, `output_config`, server tools,
`defer_loading` and any field Anthropic adds later arrive unchanged. Every other provider reads the unified
fields made here: text, images, documents, tool calls and results, sampling, and the thinking settings it
can map (see the adapters); blocks only Anthropic's servers understand (thinking in the history, server-tool
results) are left out of the unified messages, and top-level fields this gateway does not model are dropped
for them (logged at debug). A block is read loosely (one struct for every kind, dispatched on `type`), so a
new kind of block reaches Anthropic instead of failing here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from services.ingress.parse import decode_body, invalid, validate
from shared.errors import InvalidRequest
from shared.messages import (
    AnthropicParams,
    ChatRequest,
    ContentPart,
    DocumentPart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    JsonSchemaFormat,
    Message,
    NamedFunction,
    NonEmptyStr,
    Probability,
    ResponseFormat,
    TextPart,
    Thinking,
    TokenLimit,
    Tool,
    ToolCall,
    ToolChoiceFunction,
)

log = logging.getLogger("llm_edge.ingress.anthropic")

# --- the request, as Anthropic documents it ---------------------------------------------------------------


class Source(Struct, kw_only=True):
    """An image's or a document's source: `base64`, `url`, `text` (plain), `content` or `file`."""

    type: str
    media_type: str | UnsetType = UNSET
    data: str | UnsetType = UNSET
    url: str | UnsetType = UNSET
    content: str | list[Block] | UnsetType = UNSET


class Block(Struct, kw_only=True):
    """Any content block; the fields its `type` needs are checked when it is translated."""

    type: str
    text: str | UnsetType = UNSET
    source: Source | str | UnsetType = UNSET  # a search result's source is a string
    id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    input: dict[str, msgspec.Raw] | UnsetType = UNSET
    tool_use_id: str | UnsetType = UNSET
    content: str | list[Block] | UnsetType = UNSET
    is_error: bool | UnsetType = UNSET
    title: str | None | UnsetType = UNSET
    cache_control: dict[str, Any] | None | UnsetType = UNSET


class InputMessage(Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolSpec(Struct, kw_only=True):
    """A client tool (a name and an input schema) or one of Anthropic's server tools (its `type` says which)."""

    name: str
    input_schema: dict[str, Any] | UnsetType = UNSET  # a JSON Schema, passed on as the client wrote it
    description: str | UnsetType = UNSET
    type: str | None | UnsetType = UNSET
    cache_control: dict[str, Any] | None | UnsetType = UNSET

    @property
    def server(self) -> bool:
        return self.type not in (UNSET, None, "custom")


class ToolChoice(Struct, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class Metadata(Struct, kw_only=True):
    user_id: str | None | UnsetType = UNSET


class ThinkingConfig(Struct, kw_only=True):
    type: str  # "enabled" (with a budget), "adaptive" or "disabled"
    budget_tokens: int | UnsetType = UNSET


class OutputFormat(Struct, kw_only=True):
    type: str
    schema: dict[str, Any] | UnsetType = UNSET


class OutputConfig(Struct, kw_only=True):
    effort: str | None | UnsetType = UNSET
    format: OutputFormat | None | UnsetType = UNSET


class MessagesRequest(Struct, kw_only=True):
    # Fields not listed are Anthropic's to judge: they travel in the native body (see the module docstring).
    # Constraints as Anthropic's API reference documents them (temperature 0..1, max_tokens >= 1).
    model: NonEmptyStr
    messages: Annotated[list[InputMessage], Meta(min_length=1)]
    max_tokens: TokenLimit | UnsetType = UNSET  # required by `create`, absent from `count_tokens`
    system: str | list[Block] | UnsetType = UNSET
    temperature: Probability | UnsetType = UNSET
    top_p: Probability | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    tools: list[ToolSpec] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    thinking: ThinkingConfig | UnsetType = UNSET
    output_config: OutputConfig | UnsetType = UNSET
    cache_control: dict[str, Any] | None | UnsetType = UNSET


# What the unified request models; any other top-level field reaches only an Anthropic upstream.
_MODELED = frozenset(MessagesRequest.__struct_fields__)

_decoder = msgspec.json.Decoder(MessagesRequest)
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_json = msgspec.json.Encoder()
_TOOL_CHOICES: dict[str, Literal["auto", "required", "none"]] = {"auto": "auto", "any": "required", "none": "none"}
# Blocks that only Anthropic's servers produce or read: carried in the native body, left out of the unified
# messages (a translated provider has nothing to do with a signature or a server tool's result).
_ANTHROPIC_ONLY = "thinking, redacted_thinking, server tool use and results, container uploads"


def parse_messages_request(body: bytes, headers: Mapping[str, str] | None = None, beta_query: bool = False,
                           *, count: bool = False) -> ChatRequest:
    """A Messages body (and its `anthropic-*` headers) -> the unified request, or `InvalidRequest` naming
    what is wrong. `count`: a `count_tokens` body, which has no `max_tokens`."""
    request = decode_body(_decoder, body, invalid)
    fields = decode_body(_fields, body, invalid)  # reads every name: invalid UTF-8 in one is a 400
    native = _json.encode({k: v for k, v in fields.items() if k != "stream"})
    if unmodeled := sorted(set(fields) - _MODELED):
        log.debug("Messages fields only an Anthropic upstream receives: %s", ", ".join(unmodeled))
    chat = to_chat_request(request, count=count)
    headers = headers or {}
    betas = [b.strip() for value in _all(headers, "anthropic-beta") for b in value.split(",") if b.strip()]
    version = headers.get("anthropic-version")
    chat = msgspec.structs.replace(chat, anthropic=AnthropicParams(
        body=native,
        betas=betas,
        version=version if version else UNSET,
        beta_query=beta_query,
        thinking=_thinking(request),
        top_k=request.top_k,
        prompt_caching=_asks_for_caching(request),
    ))
    validate(chat)
    return chat


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    getlist = getattr(headers, "getlist", None)  # Starlette's headers hold a repeated header more than once
    if getlist is not None:
        return list(getlist(name))
    value = headers.get(name)
    return [value] if value else []


def to_chat_request(request: MessagesRequest, *, count: bool = False) -> ChatRequest:
    if not isinstance(request.max_tokens, int) and not count:
        raise InvalidRequest("`max_tokens`: field required.", param="max_tokens")
    messages = [*_system(request.system)]
    for i, message in enumerate(request.messages):
        messages += _messages(message, f"messages[{i}]")
    choice = request.tool_choice
    metadata = request.metadata
    tools = [_tool(t, f"tools[{i}]") for i, t in enumerate(request.tools or ()) if not t.server]
    if len(tools) < len(request.tools or ()):
        log.debug("server tools reach only an Anthropic upstream")
    return ChatRequest(
        model=request.model,
        messages=messages,
        max_tokens=request.max_tokens if isinstance(request.max_tokens, int) else UNSET,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop_sequences or UNSET,
        stream=request.stream,
        user=metadata.user_id if isinstance(metadata, Metadata) and metadata.user_id else UNSET,
        tools=tools or UNSET,
        # Kept when it forces a server tool, so that a translated provider refuses it by name.
        tool_choice=_tool_choice(choice) if isinstance(choice, ToolChoice) and (tools or choice.type == "tool")
        else UNSET,
        parallel_tool_calls=False
        if isinstance(choice, ToolChoice) and choice.disable_parallel_tool_use is True and tools
        else UNSET,
        response_format=_response_format(request.output_config),
    )


def _thinking(request: MessagesRequest) -> Thinking | UnsetType:
    config, output = request.thinking, request.output_config
    effort = output.effort if isinstance(output, OutputConfig) and isinstance(output.effort, str) else UNSET
    if isinstance(config, ThinkingConfig):
        return Thinking(type=config.type, budget_tokens=config.budget_tokens, effort=effort)
    if isinstance(effort, str):
        return Thinking(type="adaptive", effort=effort)
    return UNSET


def _response_format(output: OutputConfig | UnsetType) -> ResponseFormat | UnsetType:
    """Structured outputs (`output_config.format`) as the unified JSON-schema response format."""
    if not isinstance(output, OutputConfig) or not isinstance(output.format, OutputFormat):
        return UNSET
    if output.format.type != "json_schema" or not isinstance(output.format.schema, dict):
        return UNSET
    return ResponseFormat(type="json_schema",
                          json_schema=JsonSchemaFormat(name="output", schema=output.format.schema, strict=True))


def _asks_for_caching(request: MessagesRequest) -> bool:
    """Whether any `cache_control` breakpoint (top level, system, tools, message blocks) is set."""
    if request.cache_control:
        return True
    if isinstance(request.system, list) and any(b.cache_control for b in request.system):
        return True
    if any(t.cache_control for t in request.tools or ()):
        return True
    return any(isinstance(m.content, list) and any(b.cache_control for b in m.content) for m in request.messages)


def _system(system: str | list[Block] | UnsetType) -> list[Message]:
    if isinstance(system, str):
        return [Message(role="system", content=system)] if system else []
    if isinstance(system, list) and system:
        parts: list[ContentPart] = [TextPart(text=_text(b, f"system[{i}]")) for i, b in enumerate(system)]
        return [Message(role="system", content=parts)]
    return []


def _text(block: Block, where: str) -> str:
    if not isinstance(block.text, str):
        raise InvalidRequest(f"`{where}.text`: field required.", param=f"{where}.text")
    return block.text


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
        at = f"{where}.content[{j}]"
        match block.type:
            case "tool_result":
                if not isinstance(block.tool_use_id, str):
                    raise InvalidRequest(f"`{at}.tool_use_id`: field required.", param=f"{at}.tool_use_id")
                results.append(Message(role="tool", tool_call_id=block.tool_use_id,
                                       content=_result_content(block.content, at)))
            case "tool_use":
                raise InvalidRequest("A `tool_use` block belongs in an assistant message.", param=at)
            case _:
                parts += _part(block, at)
    if parts or not results:
        results.append(Message(role="user", content=parts))
    return results


def _part(block: Block, where: str) -> list[ContentPart]:
    """A user content block as unified parts; kinds only Anthropic reads give none."""
    match block.type:
        case "text":
            return [TextPart(text=_text(block, where))]
        case "image":
            return [_image(_source(block, where), where)]
        case "document":
            return _document(_source(block, where), where)
        case "search_result":
            texts = [b.text for b in block.content or () if isinstance(b, Block) and isinstance(b.text, str)]
            return [TextPart(text="\n".join(texts))]
    log.debug("a `%s` block reaches only an Anthropic upstream (%s)", block.type, _ANTHROPIC_ONLY)
    return []


def _source(block: Block, where: str) -> Source:
    if not isinstance(block.source, Source):
        raise InvalidRequest(f"`{where}.source`: field required.", param=f"{where}.source")
    return block.source


def _assistant(blocks: list[Block], where: str) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        match block.type:
            case "text":
                texts.append(_text(block, at))
            case "tool_use":
                if not isinstance(block.id, str) or not isinstance(block.name, str):
                    raise InvalidRequest(f"`{at}`: a tool_use block needs an `id` and a `name`.", param=at)
                arguments = _json.encode(block.input if isinstance(block.input, dict) else {}).decode()
                calls.append(ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments)))
            case "tool_result":
                raise InvalidRequest("A `tool_result` block belongs in a user message.", param=at)
            case _:  # thinking, redacted thinking, server tools' blocks: the native body carries them
                pass
    return Message(role="assistant", content="".join(texts) if texts else None, tool_calls=calls or UNSET)


def _image(source: Source, where: str) -> ImagePart:
    if source.type == "url" and isinstance(source.url, str):
        return ImagePart(image_url=ImageURL(url=source.url))
    if source.type == "base64" and isinstance(source.media_type, str) and isinstance(source.data, str):
        return ImagePart(image_url=ImageURL(url=f"data:{source.media_type};base64,{source.data}"))
    raise InvalidRequest(f"`{where}.source`: an image's source must be `base64` (with `media_type` and `data`) "
                         "or `url` for this gateway.", param=f"{where}.source")


def _document(source: Source, where: str) -> list[ContentPart]:
    match source.type:
        case "base64" | "text" if isinstance(source.data, str):
            media_type = source.media_type if isinstance(source.media_type, str) else "text/plain"
            return [DocumentPart(media_type=media_type, data=source.data)]
        case "url" if isinstance(source.url, str):
            return [DocumentPart(url=source.url)]
        case "content" if isinstance(source.content, str):
            return [TextPart(text=source.content)]
        case "content" if isinstance(source.content, list):
            return [p for j, b in enumerate(source.content) for p in _part(b, f"{where}.source.content[{j}]")]
    raise InvalidRequest(f"`{where}.source`: a document's source must be `base64`, `text`, `url` or `content` "
                         "for this gateway.", param=f"{where}.source")


def _result_content(content: str | list[Block] | UnsetType, where: str) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [p for j, b in enumerate(content) for p in _part(b, f"{where}.content[{j}]")]
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, TextPart))
    return parts


def _tool(spec: ToolSpec, where: str) -> Tool:
    if not isinstance(spec.input_schema, dict):
        raise InvalidRequest(f"`{where}.input_schema`: field required.", param=f"{where}.input_schema")
    return Tool(function=FunctionDef(name=spec.name, description=spec.description, parameters=spec.input_schema))


def _tool_choice(choice: ToolChoice) -> Literal["none", "auto", "required"] | ToolChoiceFunction:
    if choice.type == "tool":
        if not isinstance(choice.name, str) or not choice.name:
            raise InvalidRequest("`tool_choice.name` is required when `tool_choice.type` is `tool`.",
                                 param="tool_choice.name")
        return ToolChoiceFunction(function=NamedFunction(name=choice.name))
    return _TOOL_CHOICES[choice.type]

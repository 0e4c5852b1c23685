"""OpenAI's Responses API at the edge: a `POST /v1/responses` body becomes the unified `ChatRequest` (the
conversation so far, from `previous_response_id`, included), and a unified answer becomes a Response object
(streams: `responses_events.py`; stored responses: `responses_store.py`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from services.ingress.parse import Problem, decode_body, invalid, validate
from services.ingress.responses_items import (
    CLIENT_TOOLS,
    Item,
    Toolbox,
    ToolName,
    ToolSpec,
    custom_input,
    to_messages,
)
from shared.errors import InvalidRequest
from shared.messages import (
    ChatRequest,
    ChatResult,
    JsonSchemaFormat,
    Message,
    NamedFunction,
    NonEmptyStr,
    Probability,
    ResponseFormat,
    StreamOptions,
    Temperature,
    TokenLimit,
    ToolCall,
    ToolChoiceFunction,
    Usage,
)

PATH = "/v1/responses"
PATHS = frozenset({PATH, "/responses"})
# Built-in tools a provider without a Responses API of its own cannot run are left out of the request and
# named in this response header.
DROPPED_TOOLS_HEADER = "x-llm-edge-dropped-tools"

# --- the request -------------------------------------------------------------------------------------------


class ToolChoiceSpec(Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: str
    name: str | UnsetType = UNSET
    mode: str | UnsetType = UNSET  # allowed_tools
    namespace: str | UnsetType = UNSET


class TextFormat(Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: Literal["text", "json_schema", "json_object"] = "text"
    name: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    strict: bool | None | UnsetType = UNSET


class TextConfig(Struct, frozen=True, kw_only=True, omit_defaults=True):
    format: TextFormat = TextFormat()
    verbosity: str | None | UnsetType = UNSET


class Reasoning(Struct, frozen=True, kw_only=True, omit_defaults=True):
    effort: str | None | UnsetType = UNSET
    summary: str | None | UnsetType = UNSET
    generate_summary: str | None | UnsetType = UNSET


class ResponsesRequest(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The body of `POST /v1/responses`. Fields that steer OpenAI's own serving (prompt caching keys,
    client metadata, service tier) are accepted and change nothing here."""

    model: NonEmptyStr
    input: str | list[Item]
    instructions: str | None | UnsetType = UNSET
    previous_response_id: str | None | UnsetType = UNSET
    tools: list[ToolSpec] | None | UnsetType = UNSET
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceSpec | None | UnsetType = UNSET
    parallel_tool_calls: bool | None | UnsetType = UNSET
    text: TextConfig | None | UnsetType = UNSET
    reasoning: Reasoning | None | UnsetType = UNSET
    # OpenAI's documented ranges, as the unified request declares them: checked while decoding, so an
    # error names its field.
    max_output_tokens: TokenLimit | None | UnsetType = UNSET
    temperature: Temperature | None | UnsetType = UNSET
    top_p: Probability | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    user: str | None | UnsetType = UNSET
    store: bool | None | UnsetType = UNSET
    stream: bool | None | UnsetType = UNSET
    include: list[str] | None | UnsetType = UNSET
    truncation: Literal["auto", "disabled"] | None | UnsetType = UNSET
    background: bool | None | UnsetType = UNSET
    conversation: msgspec.Raw | None | UnsetType = UNSET
    prompt_cache_key: str | None | UnsetType = UNSET
    client_metadata: dict[str, Any] | None | UnsetType = UNSET
    service_tier: str | None | UnsetType = UNSET
    safety_identifier: str | None | UnsetType = UNSET
    stream_options: dict[str, Any] | None | UnsetType = UNSET


_decoder = msgspec.json.Decoder(ResponsesRequest)
_items_decoder = msgspec.json.Decoder(list[Item])


class Turn:
    """One Responses request on its way: what the answer must echo, the items it stores, its tools."""

    __slots__ = ("created_at", "history", "id", "items", "request", "toolbox")

    def __init__(self, request: ResponsesRequest, items: list[Item], toolbox: Toolbox, history: list[Item]) -> None:
        self.request, self.items, self.toolbox, self.history = request, items, toolbox, history
        self.id = new_id("resp")
        self.created_at = int(time.time())

    @property
    def stored(self) -> bool:
        return self.request.store is not False  # OpenAI stores unless told not to


def new_id(prefix: str) -> str:
    """Unguessable: a stored response is found by its id (within its tenant)."""
    return f"{prefix}_{os.urandom(16).hex()}"


def decode_request(body: bytes) -> ResponsesRequest:
    request = decode_body(_decoder, body, _invalid)
    if request.background is True:
        raise InvalidRequest("`background` responses are not supported by this gateway.", param="background",
                             code="unsupported_parameter")
    if request.conversation not in (None, UNSET):
        raise InvalidRequest("`conversation` is not supported by this gateway; use `previous_response_id`.",
                             param="conversation", code="unsupported_parameter")
    return request


def _invalid(problem: Problem) -> InvalidRequest:
    """OpenAI's wording for a missing parameter (`missing_required_parameter`); any other problem as
    every dialect words it, naming the field."""
    if problem.kind == "missing":
        param = problem.param
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
    return invalid(problem)


def to_turn(request: ResponsesRequest, history: list[Item], native: bool = False) -> tuple[ChatRequest, Turn]:
    """The unified request: instructions, then the stored conversation, then this request's input. `native`:
    a provider with a Responses API of its own may serve it, so built-in tools are its to run."""
    items = [Item(role="user", content=request.input)] if isinstance(request.input, str) else request.input
    toolbox = Toolbox()
    for i, spec in enumerate(request.tools or ()):
        toolbox.add(spec, f"tools[{i}]")
    messages: list[Message] = []
    if isinstance(request.instructions, str) and request.instructions:
        messages.append(Message(role="system", content=request.instructions))
    messages += to_messages(history, toolbox, "previous_response")
    messages += to_messages(items, toolbox)
    tools = toolbox.tools or UNSET
    choice = _tool_choice(request.tool_choice, toolbox, native)  # checked even when no tool is left to choose
    if native:
        toolbox.dropped.clear()
    text = request.text if isinstance(request.text, TextConfig) else None
    reasoning = request.reasoning if isinstance(request.reasoning, Reasoning) else None
    chat = ChatRequest(
        model=request.model,
        messages=messages,
        temperature=request.temperature,
        top_p=request.top_p,
        stream=request.stream,
        stream_options=StreamOptions(include_usage=True) if request.stream is True else UNSET,
        max_completion_tokens=request.max_output_tokens,
        tools=tools,
        tool_choice=choice if tools else UNSET,
        parallel_tool_calls=request.parallel_tool_calls if tools else UNSET,
        response_format=_response_format(text.format) if text is not None else UNSET,
        reasoning_effort=reasoning.effort if reasoning is not None and reasoning.effort is not None else UNSET,
        user=request.user,
    )
    validate(chat)
    return chat, Turn(request, items, toolbox, history)


# Fields of a Responses body that never change the answer (or that the gateway answers itself): left out of
# the body a provider's own Responses API gets, so they cannot split the cache either.
_NOT_FORWARDED = ("previous_response_id", "store", "stream", "stream_options", "metadata", "user",
                  "client_metadata", "prompt_cache_key", "safety_identifier", "background", "conversation")
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])


def native_body(body: bytes, history: list[Item]) -> bytes:
    """The body for a provider with a Responses API of its own: the client's, with the stored conversation
    in front of its input, so the provider needs no state of its own (`store: false`)."""
    fields = _fields.decode(body)
    for name in _NOT_FORWARDED:
        fields.pop(name, None)
    if history:
        current = bytes(fields["input"])
        if current.lstrip().startswith(b'"'):
            current = b'[{"type":"message","role":"user","content":' + current + b"}]"
        before = _json.encode(history)
        fields["input"] = msgspec.Raw(before[:-1] + (b"," + current.lstrip()[1:] if current.strip() != b"[]" else b"]"))
    return _json.encode(fields)


def _tool_choice(
    choice: Literal["none", "auto", "required"] | ToolChoiceSpec | None | UnsetType, toolbox: Toolbox,
    native: bool = False,
) -> Literal["none", "auto", "required"] | ToolChoiceFunction | UnsetType:
    if isinstance(choice, str):
        return choice
    if not isinstance(choice, ToolChoiceSpec):
        return UNSET
    if choice.type == "allowed_tools":
        return "required" if choice.mode == "required" else "auto"
    if choice.type in CLIENT_TOOLS and isinstance(choice.name, str):
        namespace = choice.namespace if isinstance(choice.namespace, str) else None
        unified = toolbox.unified_name(choice.name, namespace)
        if unified not in toolbox.names:
            raise InvalidRequest(f"`tool_choice` names the tool `{choice.name}`, which is not among `tools`.",
                                 param="tool_choice")
        return ToolChoiceFunction(function=NamedFunction(name=unified))
    if native:
        return "required"  # the provider's own API runs the forced built-in tool; a translation cannot
    raise InvalidRequest(f"`tool_choice` forces the built-in tool `{choice.type}`, which the provider serving "
                         "this model does not have.", param="tool_choice", code="unsupported_tool")


def _response_format(fmt: TextFormat) -> ResponseFormat | UnsetType:
    if fmt.type == "json_schema":
        if not isinstance(fmt.name, str):
            raise InvalidRequest("`text.format.name` is required for a `json_schema` format.", param="text.format.name")
        return ResponseFormat(type="json_schema", json_schema=JsonSchemaFormat(
            name=fmt.name, description=fmt.description, schema=fmt.schema, strict=fmt.strict))
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    return UNSET


# --- the answer --------------------------------------------------------------------------------------------


class OutputText(Struct, kw_only=True, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = []
    logprobs: list[Any] = []


class Refusal(Struct, kw_only=True, tag="refusal", tag_field="type"):
    refusal: str


class OutMessage(Struct, kw_only=True, tag="message", tag_field="type"):
    id: str
    status: str
    content: list[OutputText | Refusal]
    role: Literal["assistant"] = "assistant"


class OutFunctionCall(Struct, kw_only=True, omit_defaults=True, tag="function_call", tag_field="type"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: str = "completed"
    namespace: str | UnsetType = UNSET


class OutCustomToolCall(Struct, kw_only=True, omit_defaults=True, tag="custom_tool_call", tag_field="type"):
    id: str
    call_id: str
    name: str
    input: str
    status: str = "completed"
    namespace: str | UnsetType = UNSET


OutputItem = OutMessage | OutFunctionCall | OutCustomToolCall


class InputDetails(Struct, kw_only=True):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputDetails(Struct, kw_only=True):
    reasoning_tokens: int = 0


class ResponseUsage(Struct, kw_only=True):
    input_tokens: int
    input_tokens_details: InputDetails
    output_tokens: int
    output_tokens_details: OutputDetails
    total_tokens: int


class ErrorInfo(Struct, kw_only=True):
    code: str
    message: str


class IncompleteDetails(Struct, kw_only=True):
    reason: str


class ResponseObject(Struct, kw_only=True):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: str
    error: ErrorInfo | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem | msgspec.Raw] | msgspec.Raw  # Raw: a provider's own Responses API said it
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: Reasoning = Reasoning()
    store: bool = True
    temperature: float | None = None
    text: TextConfig = TextConfig()
    tool_choice: str | ToolChoiceSpec = "auto"
    tools: list[ToolSpec] = []
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = {}


_json = msgspec.json.Encoder()

# unified finish reason -> why a response is incomplete; any other reason completes it
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def usage_of(usage: Usage | None) -> ResponseUsage | None:
    if usage is None:
        return None
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details is not None else 0
    reasoning = usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details is not None else 0
    return ResponseUsage(input_tokens=usage.prompt_tokens, input_tokens_details=InputDetails(cached_tokens=cached),
                         output_tokens=usage.completion_tokens,
                         output_tokens_details=OutputDetails(reasoning_tokens=reasoning),
                         total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens)


def response_of(
    turn: Turn, model: str, output: list[OutputItem | msgspec.Raw] | msgspec.Raw, status: str, usage: Usage | None,
    finish_reason: str | None = None, error: ErrorInfo | None = None,
) -> ResponseObject:
    r = turn.request
    incomplete = INCOMPLETE.get(finish_reason or "") if status == "completed" else None
    return ResponseObject(
        id=turn.id,
        created_at=turn.created_at,
        status="incomplete" if incomplete else status,
        error=error,
        incomplete_details=IncompleteDetails(reason=incomplete) if incomplete else None,
        instructions=r.instructions if isinstance(r.instructions, str) else None,
        max_output_tokens=r.max_output_tokens if isinstance(r.max_output_tokens, int) else None,
        model=model,
        output=output,
        parallel_tool_calls=r.parallel_tool_calls is not False,
        previous_response_id=r.previous_response_id if isinstance(r.previous_response_id, str) else None,
        reasoning=r.reasoning if isinstance(r.reasoning, Reasoning) else Reasoning(),
        store=turn.stored,
        temperature=r.temperature if isinstance(r.temperature, float | int) else None,
        text=r.text if isinstance(r.text, TextConfig) else TextConfig(),
        tool_choice=r.tool_choice if isinstance(r.tool_choice, str | ToolChoiceSpec) else "auto",
        tools=r.tools if isinstance(r.tools, list) else [],
        top_p=r.top_p if isinstance(r.top_p, float | int) else None,
        truncation=r.truncation if isinstance(r.truncation, str) else "disabled",
        usage=usage_of(usage),
        user=r.user if isinstance(r.user, str) else None,
        metadata=r.metadata if isinstance(r.metadata, dict) else {},
    )


def call_item(
    call_id: str, name: ToolName, arguments: str, status: str = "completed"
) -> OutFunctionCall | OutCustomToolCall:
    namespace = name.namespace if name.namespace is not None else UNSET
    if name.kind == "custom":
        return OutCustomToolCall(id=new_id("ctc"), call_id=call_id, name=name.name, input=custom_input(arguments),
                                 status=status, namespace=namespace)
    return OutFunctionCall(id=new_id("fc"), call_id=call_id, name=name.name, arguments=arguments, status=status,
                           namespace=namespace)


def output_of(result: ChatResult, turn: Turn) -> list[OutputItem | msgspec.Raw] | msgspec.Raw:
    if result.responses_output is not None:
        return msgspec.Raw(result.responses_output)  # the provider's own items, reasoning included
    choice = result.choices[0] if result.choices else None
    if choice is None:
        return []
    output: list[OutputItem | msgspec.Raw] = []
    message = choice.message
    content: list[OutputText | Refusal] = []
    if message.content:
        content.append(OutputText(text=message.content))
    if isinstance(message.refusal, str) and message.refusal:
        content.append(Refusal(refusal=message.refusal))
    if content:
        status = "incomplete" if choice.finish_reason in INCOMPLETE else "completed"
        output.append(OutMessage(id=new_id("msg"), status=status, content=content))
    calls: list[ToolCall] = message.tool_calls or []
    for call in calls:
        output.append(call_item(call.id, turn.toolbox.named(call.function.name), call.function.arguments))
    return output


def response_json(result: ChatResult, turn: Turn) -> bytes:
    choice = result.choices[0] if result.choices else None
    response = response_of(turn, result.model, output_of(result, turn), "completed", result.usage,
                           choice.finish_reason if choice is not None else None)
    return _json.encode(response)


def items_of(data: bytes) -> list[Item]:
    return _items_decoder.decode(data)


def encode(value: object) -> bytes:
    return _json.encode(value)

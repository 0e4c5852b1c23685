"""The unified request as a Gemini `GenerateContentRequest`: system -> `systemInstruction`, turns as
`user`/`model` contents, sampling (and `reasoning_effort`, as thinking) as `generationConfig`, tools as
`functionDeclarations` with the history's `functionCall` and `functionResponse` parts
(ai.google.dev/api/generate-content, ai.google.dev/gemini-api/docs/function-calling).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from services.providers.parts import data_url, forced_tool_missing, map_parts, tool_arguments, turns
from services.providers.reasoning import effort_of, thinking_of
from shared.errors import InvalidRequest
from shared.messages import (
    AnthropicParams,
    ChatRequest,
    ContentPart,
    DocumentPart,
    Message,
    ResponseFormat,
    Thinking,
    ToolCall,
    ToolChoiceFunction,
)

_TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}

# --- the request body ----------------------------------------------------------------------------


class _Blob(Struct, rename="camel"):
    mime_type: str
    data: str


class _FunctionCallOut(Struct):
    name: str
    args: dict[str, msgspec.Raw]


class _FunctionResponse(Struct):
    name: str
    response: dict[str, Any]


class _Part(Struct, rename="camel", omit_defaults=True):
    text: str | UnsetType = UNSET
    inline_data: _Blob | UnsetType = UNSET
    function_call: _FunctionCallOut | UnsetType = UNSET
    function_response: _FunctionResponse | UnsetType = UNSET


class _Content(Struct, omit_defaults=True):
    parts: list[_Part]
    role: Literal["user", "model"] | UnsetType = UNSET


class _FunctionDeclaration(Struct, rename="camel", omit_defaults=True):
    name: str
    description: str | UnsetType = UNSET
    parameters_json_schema: dict[str, Any] | UnsetType = UNSET


class _Tool(Struct, rename="camel"):
    function_declarations: list[_FunctionDeclaration]


class _FunctionCallingConfig(Struct, rename="camel", omit_defaults=True):
    mode: str
    allowed_function_names: list[str] | UnsetType = UNSET


class _ToolConfig(Struct, rename="camel"):
    function_calling_config: _FunctionCallingConfig


class _ThinkingConfig(Struct, rename="camel", omit_defaults=True):
    thinking_budget: int | UnsetType = UNSET  # Gemini 2.5
    thinking_level: str | UnsetType = UNSET  # Gemini 3 and later


class _GenerationConfig(Struct, rename="camel", omit_defaults=True):
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    max_output_tokens: int | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    candidate_count: int | UnsetType = UNSET
    presence_penalty: float | UnsetType = UNSET
    frequency_penalty: float | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    response_mime_type: str | UnsetType = UNSET
    response_json_schema: dict[str, Any] | UnsetType = UNSET
    thinking_config: _ThinkingConfig | UnsetType = UNSET
    top_k: int | UnsetType = UNSET


class _Request(Struct, rename="camel", omit_defaults=True):
    contents: list[_Content]
    system_instruction: _Content | UnsetType = UNSET
    tools: list[_Tool] | UnsetType = UNSET
    tool_config: _ToolConfig | UnsetType = UNSET
    generation_config: _GenerationConfig | UnsetType = UNSET


_object_decoder = msgspec.json.Decoder(dict[str, Any])


# --- the unified request as Gemini's ---------------------------------------------------------------


def gemini_request(request: ChatRequest, model: str) -> _Request:
    forced_tool_missing(request, "gemini")
    system, contents = _contents(request.messages)
    tools = [
        _FunctionDeclaration(
            name=t.function.name,
            description=t.function.description,
            parameters_json_schema=t.function.parameters,
        )
        for t in request.tools or ()
    ]
    return _Request(
        contents=contents,
        system_instruction=_Content(parts=[_Part(text="\n\n".join(system))]) if system else UNSET,
        tools=[_Tool(function_declarations=tools)] if tools else UNSET,
        tool_config=_tool_config(request) if tools else UNSET,
        generation_config=_generation_config(request, model),
    )


def _generation_config(request: ChatRequest, model: str) -> _GenerationConfig | UnsetType:
    mime: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    if isinstance(fmt := request.response_format, ResponseFormat) and fmt.type != "text":
        mime = "application/json"
        if not isinstance(fmt.json_schema, UnsetType):
            schema = fmt.json_schema.schema
    config = _GenerationConfig(
        temperature=_given(request.temperature),
        top_p=_given(request.top_p),
        max_output_tokens=request.max_output_tokens() or UNSET,
        stop_sequences=request.stop_list() or UNSET,
        candidate_count=_given(request.n),
        presence_penalty=_given(request.presence_penalty),
        frequency_penalty=_given(request.frequency_penalty),
        seed=_given(request.seed),
        response_mime_type=mime,
        response_json_schema=schema,
        thinking_config=_thinking(request.reasoning_effort, model)
        if not isinstance(request.reasoning_effort, UnsetType) else _from_messages(thinking_of(request), model),
        top_k=params.top_k if isinstance(params := request.anthropic, AnthropicParams) else UNSET,
    )
    return config if config != _GenerationConfig() else UNSET


# reasoning_effort -> Gemini 2.5's thinking budget, as Google's own OpenAI-compatible endpoint maps it
# (ai.google.dev/gemini-api/docs/openai: "low", "medium", "high" -> 1K, 8K, 24K tokens; "none" -> off).
_THINKING_BUDGETS = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}


def _thinking(effort: str | None | UnsetType, model: str) -> _ThinkingConfig | UnsetType:
    if not isinstance(effort, str):
        return UNSET
    if model.removeprefix("models/").startswith("gemini-2"):
        if effort not in _THINKING_BUDGETS:
            raise InvalidRequest(
                f"gemini: unknown reasoning_effort {effort!r}", param="reasoning_effort", code="invalid_value"
            )
        return _ThinkingConfig(thinking_budget=_THINKING_BUDGETS[effort])
    # Later models take a level (ai.google.dev/gemini-api/docs/thinking): minimal, low, medium, high.
    return _ThinkingConfig(thinking_level="minimal" if effort == "none" else effort)


_MAX_THINKING_BUDGET = 24_576  # the largest budget every Gemini 2.5 model takes (ai.google.dev, "Thinking")


def _from_messages(thinking: Thinking | None, model: str) -> _ThinkingConfig | UnsetType:
    """A Messages client's thinking: Gemini 2.5 takes its budget (adaptive: -1, Gemini's dynamic thinking;
    disabled: 0 where the model can turn thinking off, its Flash models), later models its effort."""
    if thinking is None:
        return UNSET
    if model.removeprefix("models/").startswith("gemini-2"):
        if thinking.type == "enabled" and isinstance(thinking.budget_tokens, int):
            # Gemini 2.5 refuses budgets above its range (Flash: 24,576); Claude Code asks for 31,999.
            return _ThinkingConfig(thinking_budget=min(thinking.budget_tokens, _MAX_THINKING_BUDGET))
        if thinking.type == "adaptive":
            return _ThinkingConfig(thinking_budget=-1)
        if thinking.type == "disabled" and "flash" in model:
            return _ThinkingConfig(thinking_budget=0)
        return UNSET
    effort = effort_of(thinking)
    return _ThinkingConfig(thinking_level=effort) if effort is not None else UNSET


def _contents(messages: list[Message]) -> tuple[list[str], list[_Content]]:
    """System prompts apart; the rest as `user`/`model` turns, consecutive same-role messages merged."""
    names: dict[str, str] = {}  # tool call id -> function name: a functionResponse is matched by name

    def message_parts(m: Message) -> list[_Part]:
        match m.role:
            case "user":
                return _parts(m.content)
            case "assistant":
                text = m.text()
                parts = [_Part(text=text)] if text else []
                for call in m.tool_calls or ():
                    names[call.id] = call.function.name
                    parts.append(_Part(function_call=_function_call(call)))
                return parts
            case "tool":
                name = names.get(m.tool_call_id or "") or (m.name if isinstance(m.name, str) else "")
                if not name:
                    raise InvalidRequest(
                        f"gemini: tool message {m.tool_call_id!r} answers no earlier tool call",
                        param="messages",
                        code="invalid_tool_call_id",
                    )
                return [_Part(function_response=_FunctionResponse(name=name, response=_result(m.text())))]
        return []  # system prompts: `turns` keeps them apart

    system, found = turns(messages, message_parts)
    return system, [_Content(role="model" if role == "assistant" else "user", parts=parts) for role, parts in found]


def _parts(content: str | list[ContentPart] | None) -> list[_Part]:
    return map_parts(content, lambda text: _Part(text=text), lambda url: _Part(inline_data=_image(url)),
                     _document, provider="gemini")


def _document(part: DocumentPart) -> _Part:
    """A document inline (Gemini reads PDFs and text as `inlineData`); by URL it needs Gemini's Files API."""
    if isinstance(part.data, str) and isinstance(part.media_type, str):
        if part.media_type == "text/plain":
            return _Part(text=part.data)
        return _Part(inline_data=_Blob(mime_type=part.media_type, data=part.data))
    raise InvalidRequest("gemini: documents by URL cannot be read by this provider; send the document inline "
                         "(base64).", param="messages", code="unsupported_content")


def _image(url: str) -> _Blob:
    parsed = data_url(url)
    if parsed is not None:
        return _Blob(mime_type=parsed[0], data=parsed[1])
    # `fileData` wants a Files API URI; fetching arbitrary URLs on the caller's behalf is not ours to do.
    raise InvalidRequest(
        "gemini: an image_url must be a base64 data: URL", param="messages", code="invalid_image_url"
    )


def _function_call(call: ToolCall) -> _FunctionCallOut:
    return _FunctionCallOut(name=call.function.name, args=tool_arguments(call, "gemini"))


def _result(text: str) -> dict[str, Any]:
    """A tool's output as `functionResponse.response`, which must be an object: JSON objects as they are,
    anything else under `result` (the key Gemini's function-calling guide uses)."""
    try:
        return _object_decoder.decode(text)
    except msgspec.DecodeError:
        return {"result": text}


def _tool_config(request: ChatRequest) -> _ToolConfig | UnsetType:
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        config = _FunctionCallingConfig(mode="ANY", allowed_function_names=[choice.function.name])
    elif isinstance(choice, str):
        config = _FunctionCallingConfig(mode=_TOOL_MODES[choice])
    else:
        return UNSET
    return _ToolConfig(function_calling_config=config)


def _given(value: Any) -> Any:
    return UNSET if value is None else value

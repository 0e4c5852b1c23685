"""The Responses API's request shapes (items, content parts, tools) as OpenAI documents them, and their
translation into the unified chat messages and tools.

Items are decoded into one untagged struct rather than a tagged union: an input message may omit its
`type` (the SDK's "easy" message), and an unknown item type must be a 400 that names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from shared.errors import InvalidRequest
from shared.messages import (
    ContentPart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    Message,
    TextPart,
    Tool,
    ToolCall,
)


class Part(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A content part of any kind: input_text, output_text, refusal, input_image, summary_text…"""

    type: str
    text: str | UnsetType = UNSET
    refusal: str | UnsetType = UNSET
    image_url: str | None | UnsetType = UNSET
    file_id: str | None | UnsetType = UNSET
    detail: str | UnsetType = UNSET
    annotations: list[msgspec.Raw] | UnsetType = UNSET
    logprobs: list[msgspec.Raw] | UnsetType = UNSET


class ToolSpec(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A tool: `function`, `custom` (free-form input, optionally a grammar), a `namespace` of either, or a
    built-in tool (web_search, file_search, …) that only a provider with a Responses API can run."""

    type: str
    name: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    parameters: dict[str, Any] | None | UnsetType = UNSET  # a JSON Schema, as the client wrote it
    strict: bool | None | UnsetType = UNSET
    format: dict[str, Any] | UnsetType = UNSET  # a custom tool's input format (text or grammar)
    tools: list[ToolSpec] | UnsetType = UNSET  # a namespace's tools


class Item(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Any input or output item; which fields matter depends on `type` (a message when absent)."""

    type: str | UnsetType = UNSET  # a message when absent
    id: str | UnsetType = UNSET
    status: str | UnsetType = UNSET
    role: str | UnsetType = UNSET
    content: str | list[Part] | None | UnsetType = UNSET
    call_id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    namespace: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET
    input: str | UnsetType = UNSET
    output: str | list[Part] | UnsetType = UNSET
    summary: list[Part] | UnsetType = UNSET
    encrypted_content: str | None | UnsetType = UNSET
    tools: list[ToolSpec] | UnsetType = UNSET  # `additional_tools`


ITEM_TYPES = ("message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
              "reasoning", "additional_tools")
_ROLES = ("user", "assistant", "system", "developer")
CLIENT_TOOLS = ("function", "custom", "namespace")
# The one free-form parameter a custom tool's input travels in through a provider without custom tools.
_CUSTOM_PARAMETERS = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"],
                      "additionalProperties": False}
_json = msgspec.json.Encoder()
_input_of = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class ToolName:
    """What a unified tool call's name stands for in the Responses API."""

    name: str
    kind: Literal["function", "custom"]
    namespace: str | None = None


@dataclass(slots=True)
class Toolbox:
    """The client's tools as unified function tools, and how to name their calls back."""

    tools: list[Tool] = field(default_factory=list)
    names: dict[str, ToolName] = field(default_factory=dict)  # unified function name -> Responses name
    dropped: list[str] = field(default_factory=list)  # built-in tools this path cannot run

    def add(self, spec: ToolSpec, where: str, namespace: str | None = None) -> None:
        if spec.type == "namespace" and namespace is None:
            if not isinstance(spec.name, str) or not spec.name:
                raise InvalidRequest("A `namespace` tool needs a `name`.", param=f"{where}.name")
            for j, inner in enumerate(spec.tools or ()):
                self.add(inner, f"{where}.tools[{j}]", spec.name)
            return
        if spec.type not in ("function", "custom"):
            if namespace is not None:
                raise InvalidRequest(f"A namespace holds function and custom tools, not `{spec.type}`.",
                                     param=f"{where}.type", code="unsupported_tool")
            self.dropped.append(spec.type)
            return
        if not isinstance(spec.name, str) or not spec.name:
            raise InvalidRequest(f"A `{spec.type}` tool needs a `name`.", param=f"{where}.name")
        flat = f"{namespace}__{spec.name}" if namespace else spec.name
        description = spec.description if isinstance(spec.description, str) else UNSET
        if spec.type == "function":
            parameters = spec.parameters if isinstance(spec.parameters, dict) else {"type": "object", "properties": {}}
            function = FunctionDef(name=flat, description=description, parameters=parameters, strict=spec.strict)
        else:
            function = FunctionDef(name=flat, description=_custom_description(spec), parameters=_CUSTOM_PARAMETERS)
        self.tools.append(Tool(function=function))
        self.names[flat] = ToolName(spec.name, "function" if spec.type == "function" else "custom", namespace)

    def unified_name(self, name: str, namespace: str | None) -> str:
        return f"{namespace}__{name}" if namespace else name

    def named(self, unified: str) -> ToolName:
        return self.names.get(unified) or ToolName(unified, "function")


def _custom_description(spec: ToolSpec) -> str:
    """A custom tool's free-form input, told to a model that only knows JSON function arguments."""
    text = spec.description if isinstance(spec.description, str) else ""
    text += "\n\nPut the tool's whole input, as free-form text, in the `input` string."
    fmt = spec.format if isinstance(spec.format, dict) else {}
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        text += f"\nThe input must follow this {fmt.get('syntax', '')} grammar:\n{fmt['definition']}"
    return text.strip()


def custom_input(arguments: str) -> str:
    """A custom tool call's input back out of the `{"input": …}` arguments the model wrote."""
    try:
        decoded = _input_of.decode(arguments)
    except msgspec.DecodeError:
        return arguments
    value = decoded.get("input")
    return value if isinstance(value, str) else arguments


def stored_form(item: Item, id: str) -> Item:
    """An input item as the store keeps it and `input_items` lists it: typed, with an id, its text in parts."""
    kind = item.type if isinstance(item.type, str) else "message"
    content = item.content
    if kind == "message" and isinstance(content, str):
        content = [Part(type="output_text" if item.role == "assistant" else "input_text", text=content)]
    return msgspec.structs.replace(item, type=kind, id=item.id if isinstance(item.id, str) else id, content=content)


def _parts(content: str | list[Part] | None | UnsetType, where: str) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("A message needs its `content`.", param=f"{where}.content")
    parts: list[ContentPart] = []
    for k, part in enumerate(content):
        match part.type:
            case "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text":
                parts.append(TextPart(text=part.text if isinstance(part.text, str) else ""))
            case "refusal":
                parts.append(TextPart(text=part.refusal if isinstance(part.refusal, str) else ""))
            case "input_image":
                if not isinstance(part.image_url, str):
                    raise InvalidRequest("Images are supported by URL or data URL (`image_url`), not by `file_id`.",
                                         param=f"{where}.content[{k}].image_url", code="unsupported_content")
                detail = part.detail if isinstance(part.detail, str) else UNSET
                parts.append(ImagePart(image_url=ImageURL(url=part.image_url, detail=detail)))
            case other:
                raise InvalidRequest(f"Content parts of type `{other}` are not supported by this gateway "
                                     "(input_text, output_text, refusal and input_image are).",
                                     param=f"{where}.content[{k}].type", code="unsupported_content")
    return parts


def _output_text(output: str | list[Part] | UnsetType, where: str) -> str | list[ContentPart]:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        parts = _parts(output, where)
        if isinstance(parts, list) and all(isinstance(p, TextPart) for p in parts):
            return "".join(p.text for p in parts if isinstance(p, TextPart))
        return parts
    raise InvalidRequest("A tool call output needs its `output`.", param=f"{where}.output")


def _required(value: str | UnsetType, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"`{where}.{name}`: field required.", param=f"{where}.{name}")
    return value


def to_messages(items: list[Item], toolbox: Toolbox, where: str = "input") -> list[Message]:
    """Items in order -> unified messages. Tool calls join the assistant message before them (chat
    completions carry calls on an assistant message); reasoning items have no unified form and are left
    out (only a provider with a Responses API could read them)."""
    messages: list[Message] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        match item.type:
            case "message" | msgspec.UnsetType():
                role = item.role
                if role not in _ROLES:
                    raise InvalidRequest(f"`{at}.role` must be one of user, assistant, system or developer.",
                                         param=f"{at}.role")
                content = _parts(item.content, at)
                if role == "assistant":
                    text = content if isinstance(content, str) else "".join(
                        p.text for p in content if isinstance(p, TextPart))
                    messages.append(Message(role="assistant", content=text))
                else:
                    messages.append(Message(role=role, content=content))  # type: ignore[arg-type]
            case "function_call" | "custom_tool_call":
                name = _required(item.name, "name", at)
                call_id = _required(item.call_id, "call_id", at)
                namespace = item.namespace if isinstance(item.namespace, str) else None
                if item.type == "function_call":
                    arguments = _required(item.arguments, "arguments", at)
                else:
                    arguments = _json.encode({"input": _required(item.input, "input", at)}).decode()
                call = ToolCall(id=call_id, function=FunctionCall(name=toolbox.unified_name(name, namespace),
                                                                  arguments=arguments))
                last = messages[-1] if messages else None
                if last is not None and last.role == "assistant":
                    messages[-1] = msgspec.structs.replace(last, tool_calls=[*(last.tool_calls or ()), call])
                else:
                    messages.append(Message(role="assistant", content=None, tool_calls=[call]))
            case "function_call_output" | "custom_tool_call_output":
                messages.append(Message(role="tool", tool_call_id=_required(item.call_id, "call_id", at),
                                        content=_output_text(item.output, at)))
            case "reasoning":
                continue
            case "additional_tools":
                for j, spec in enumerate(item.tools or ()):
                    toolbox.add(spec, f"{at}.tools[{j}]")
            case _ if where != "input":
                continue  # an item a provider's own Responses API produced (a web search call…): its own business
            case other:
                raise InvalidRequest(f"Input items of type `{other}` are not supported by this gateway "
                                     f"({', '.join(ITEM_TYPES)} are).", param=f"{at}.type", code="unsupported_item")
    return messages

"""The gateway's own OpenAPI document: FastAPI's, with each model route's request body described by the
msgspec Struct that body is decoded into (bodies are decoded by msgspec, never by pydantic, so FastAPI
cannot see them; `msgspec.json.schema_components` writes their JSON Schema).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import FastAPI

_REF = "#/components/schemas/{name}"
# Every documented body type, by its component name, with the fields left out of its schema: filled at
# import time by the endpoint modules' `body(...)` calls (as their decorators are).
_BODIES: dict[str, tuple[type, frozenset[str]]] = {}


def body(struct: type, hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A route's `openapi_extra` for a JSON body decoded into `struct`; `hidden` fields are the gateway's
    own (sent by a client, they are extras, not these fields) and are not documented."""
    name = struct.__name__
    if (known := _BODIES.get(name)) is not None and known[0] is not struct:
        raise ValueError(f"two request bodies named {name}")
    _BODIES[name] = (struct, hidden)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "$ref": _REF.format(name=name)}}}}}


def documenting(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """`app.openapi`, with the body schemas added as components (computed once, on the first call)."""
    fastapi_document = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = fastapi_document()
        structs = [struct for struct, _ in _BODIES.values()]
        _, components = msgspec.json.schema_components(structs, ref_template=_REF)
        for name, (_, hidden) in _BODIES.items():
            schema = components[name]
            for field in hidden:
                schema.get("properties", {}).pop(field, None)
            if "required" in schema:
                schema["required"] = [field for field in schema["required"] if field not in hidden]
        doc.setdefault("components", {}).setdefault("schemas", {}).update(_reachable(components))
        app.openapi_schema = doc
        return doc

    return document


def _reachable(components: dict[str, Any]) -> dict[str, Any]:
    """The components the documented bodies refer to, directly or not (a hidden field's type is left out)."""
    prefix = _REF.format(name="")
    seen: set[str] = set()
    todo = list(_BODIES)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(ref.removeprefix(prefix) for ref in _refs(components[name]))
    return {name: schema for name, schema in components.items() if name in seen}


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [ref for key, value in node.items()
                for ref in ([value] if key == "$ref" and isinstance(value, str) else _refs(value))]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []

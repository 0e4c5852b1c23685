"""`GET /admin/logs`: the request log, newest first, behind the admin guard (`admin.require_admin`). The
ingress asks a logger over the bus (`llm.logs.query`); with no logger running the answer is a 503 that says so.

Query parameters: `key`, `tenant`, `model`, `status`, `since` and `until` (`15m`, `2h`, `7d` ago, an ISO
time, or epoch seconds), `limit` (1-1000, default 100), `offset`, `bodies=true`. The answer is a list
(`{"object": "list", "data": [...], "has_more": ...}`); `has_more` means: ask again with `offset` moved on.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from services.ingress.admin import require_admin
from services.ingress.context import Call
from services.ingress.edge import EdgeRoute
from services.ingress.responses import JSON
from shared import bus
from shared.errors import InvalidRequest, Unavailable
from shared.request_log import LogQuery, RequestRecord, ask, parse_time

QUERY_TIMEOUT_SECONDS = 10.0
_FIELDS = ("key", "tenant", "model", "status", "since", "until", "limit", "offset", "bodies")


class LogList(msgspec.Struct, frozen=True, kw_only=True):
    object: Literal["list"] = "list"
    data: list[RequestRecord]
    has_more: bool


def log_query(params: dict[str, str]) -> LogQuery:
    """The query parameters as a `LogQuery`; a 400 naming the bad one."""
    unknown = sorted(set(params) - set(_FIELDS))
    if unknown:
        raise InvalidRequest(f"Unknown query parameter `{unknown[0]}` (known: {', '.join(_FIELDS)}).",
                             param=unknown[0], code="invalid_log_query")
    fields: dict[str, Any] = {}
    for name, value in params.items():
        try:
            if name in ("since", "until"):
                fields[name] = parse_time(value)
            elif name in ("status", "limit", "offset"):
                fields[name] = int(value)
            elif name == "bodies":
                fields[name] = value.lower() in ("true", "1", "yes")
            else:
                fields[name] = value
        except ValueError as exc:
            raise InvalidRequest(f"`{name}`: {exc}", param=name, code="invalid_log_query") from None
    try:
        return msgspec.convert(fields, LogQuery)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid log query: {exc}", code="invalid_log_query") from None


def _router() -> APIRouter:
    routes = APIRouter(dependencies=[Depends(require_admin)], route_class=EdgeRoute, include_in_schema=False,
                       tags=["admin"])

    @routes.get("/admin/logs")
    async def logs(request: Request) -> Response:
        gateway = Call.of(request).gateway
        query = log_query(dict(request.query_params))
        try:
            found = await ask(gateway.bus(), gateway.subjects, query, QUERY_TIMEOUT_SECONDS)
        except bus.NoResponders as exc:
            raise Unavailable("No logger is running: the request log cannot be read (start `llm-edge logger`).",
                              code="logger_unavailable") from exc
        body = msgspec.json.encode(LogList(data=found.records, has_more=found.more))
        return Response(body, media_type=JSON, headers={"cache-control": "no-store"})

    return routes


router = _router()

"""Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`. The same unified
request on the same path as chat completions (cache, routing, fallback, metrics, cost), translated at the
edge, in and out; errors on these paths take Anthropic's shape (`responses.error_response`)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from services.ingress import anthropic_dialect, anthropic_events, openapi
from services.ingress.anthropic_request import MessagesRequest
from services.ingress.counting import count_tokens
from services.ingress.edge import ModelRoute
from services.ingress.exchange import answer, begin, stream_reply
from services.ingress.responses import JSON, sse_response
from shared.messages import ChatRequest

router = APIRouter(route_class=ModelRoute, tags=["messages"])


def _parser(request: Request, *, count: bool = False) -> Callable[[bytes], ChatRequest]:
    beta = request.query_params.get("beta") == "true"
    return lambda body: anthropic_dialect.parse_messages_request(body, request.headers, beta, count=count)


@router.post("/v1/messages", openapi_extra=openapi.body(MessagesRequest))
@router.post("/messages", include_in_schema=False)
async def create_message(request: Request) -> Response:
    ex = await begin(request, _parser(request))
    if ex.chat.stream is not True:
        response = await answer(ex, anthropic_dialect.message_json)
    elif ex.cached is not None:
        response = sse_response(iter([anthropic_events.replay(ex.cached)]), ex.rid, ex.cached.provider, ex.tier)
    else:
        response = await stream_reply(ex, lambda first: anthropic_events.EventWriter.starting(first, ex.rid))
    response.headers["request-id"] = ex.rid  # where Anthropic's SDKs look for it (`_request_id`)
    return response


@router.post("/v1/messages/count_tokens", openapi_extra=openapi.body(MessagesRequest))
@router.post("/messages/count_tokens", include_in_schema=False)
async def count_message_tokens(request: Request) -> Response:
    """The model's targets, keys and limits as for `/v1/messages`; the provider counts (Anthropic) or its
    worker estimates with a tokenizer (`x-llm-edge-estimate: true`)."""
    ex = await begin(request, _parser(request, count=True), cacheable=False)
    count = await count_tokens(ex.call.gateway, ex.payload, ex.headers, ex.deadline)
    headers = {"x-request-id": ex.rid, "request-id": ex.rid, "x-llm-edge-provider": count.provider}
    if count.estimated:
        headers["x-llm-edge-estimate"] = "true"
    return Response(anthropic_dialect.count_json(count), media_type=JSON, headers=headers)

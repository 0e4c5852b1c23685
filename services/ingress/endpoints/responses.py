"""OpenAI's Responses API: `POST /v1/responses` (the conversation so far, by `previous_response_id`, and
this input become one unified request on the common path; the answer is stored for the next turn unless
`store: false`), and reading and deleting what is stored."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Literal
from urllib.parse import quote

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from services.ingress import openapi, responses_dialect, responses_events, responses_store
from services.ingress.context import Call
from services.ingress.edge import EdgeRoute, ModelRoute
from services.ingress.exchange import accept, answer, proceed, stream_reply
from services.ingress.gateway import Gateway
from services.ingress.responses import JSON, sse_response
from services.ingress.responses_dialect import ResponsesRequest
from services.ingress.responses_store import ResponseStore
from shared.errors import GatewayError, InvalidRequest
from shared.messages import StreamChunk

log = logging.getLogger("llm_edge.ingress")

router = APIRouter(route_class=EdgeRoute, tags=["responses"])


async def create_response(request: Request) -> Response:
    call, body = await accept(request)
    gateway = call.gateway
    store = gateway.responses()
    parsed = responses_dialect.decode_request(body)
    tenant = "default" if call.grant is None else call.grant.namespace
    previous = parsed.previous_response_id
    history = await store.history(tenant, previous) if isinstance(previous, str) else []
    native = _native_responses(gateway, parsed.model)
    chat, turn = responses_dialect.to_turn(parsed, history, native)
    if native:
        chat = msgspec.structs.replace(chat, responses_body=responses_dialect.native_body(body, history))
    ex = await proceed(request, call, chat)
    if chat.stream is not True:
        response = await answer(ex, lambda result: responses_dialect.response_json(result, turn))
        if turn.stored and response.status_code == 200:
            await _keep(store, tenant, turn, bytes(response.body))
    elif ex.cached is not None:
        events, final = responses_events.replay(ex.cached, turn)
        if turn.stored:
            await _keep(store, tenant, turn, final)
        response = sse_response(iter([events]), ex.rid, ex.cached.provider, ex.tier)
    else:
        writers: list[responses_events.EventWriter] = []

        def writer(first: StreamChunk) -> responses_events.EventWriter:
            writers.append(responses_events.EventWriter(turn, first.model or chat.model))
            return writers[0]

        response = await stream_reply(ex, writer)
        if turn.stored and isinstance(response, StreamingResponse):
            response.body_iterator = _storing(response.body_iterator, writers[0], store, tenant, turn)
    if turn.toolbox.dropped:
        # The types are the client's text: percent-encoded, a header carries any of them (a line break or a
        # character outside Latin-1 in a raw header value was a 500).
        response.headers[responses_dialect.DROPPED_TOOLS_HEADER] = ",".join(
            sorted({quote(kind, safe="") for kind in turn.toolbox.dropped}))
    return response


for _path in sorted(responses_dialect.PATHS, reverse=True):  # /v1/responses first: the documented one
    router.add_api_route(_path, create_response, methods=["POST"], route_class_override=ModelRoute,
                         include_in_schema=_path == responses_dialect.PATH,
                         openapi_extra=openapi.body(ResponsesRequest))


def _native_responses(gateway: Gateway, model: str) -> bool:
    """Whether a target of `model` may be a provider with a Responses API of its own: only then does the
    unified request carry the Responses body (the router picks the target; the worker decides how to call)."""
    providers = gateway.config.providers
    return any((p := providers.get(t.provider)) is not None and p.native_responses()
               for t in gateway.routes.resolve(model))


async def _keep(store: ResponseStore, tenant: str, turn: responses_dialect.Turn, response: bytes) -> None:
    """A store that cannot write costs the next turn its context, not this turn its answer."""
    try:
        await store.save(tenant, turn, response)
    except GatewayError as exc:
        log.warning("response %s not stored: %s", turn.id, exc.message)


async def _storing(
    frames: AsyncIterable[Any], writer: responses_events.EventWriter, store: ResponseStore, tenant: str,
    turn: responses_dialect.Turn,
) -> AsyncIterator[Any]:
    """The stream, with the finished response stored before `response.completed` leaves: a client that
    continues the conversation the moment it reads that event finds it."""
    async for data in frames:
        if writer.final is not None:
            await _keep(store, tenant, turn, writer.final)
            writer.final = None
        yield data


async def _tenant(request: Request) -> str:
    grant = await Call.of(request).gateway.authenticate(request)
    return "default" if grant is None else grant.namespace


@router.get("/v1/responses/{response_id}")
@router.get("/responses/{response_id}", include_in_schema=False)
async def get_response(request: Request, response_id: str) -> Response:
    stored = await Call.of(request).gateway.responses().load(await _tenant(request), response_id)
    if stored is None:
        raise responses_store.not_found(response_id)
    return Response(stored.response, media_type=JSON)


@router.delete("/v1/responses/{response_id}")
@router.delete("/responses/{response_id}", include_in_schema=False)
async def delete_response(request: Request, response_id: str) -> Response:
    if not await Call.of(request).gateway.responses().delete(await _tenant(request), response_id):
        raise responses_store.not_found(response_id)
    body = responses_dialect.encode({"id": response_id, "object": "response.deleted", "deleted": True})
    return Response(body, media_type=JSON)


@router.get("/v1/responses/{response_id}/input_items")
@router.get("/responses/{response_id}/input_items", include_in_schema=False)
async def input_items(request: Request, response_id: str, order: Literal["asc", "desc"] = "desc",
                      limit: int = 20, after: str | None = None) -> Response:
    stored = await Call.of(request).gateway.responses().load(await _tenant(request), response_id)
    if stored is None:
        raise responses_store.not_found(response_id)
    if not 1 <= limit <= 100:
        raise InvalidRequest("`limit` must be between 1 and 100.", param="limit")
    return Response(responses_store.item_page(stored, order, limit, after), media_type=JSON)

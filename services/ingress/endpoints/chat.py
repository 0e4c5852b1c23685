"""OpenAI's chat completions: `POST /v1/chat/completions`, as one JSON body or an SSE stream."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from services.ingress import openapi, shapes, stream
from services.ingress.edge import ModelRoute
from services.ingress.exchange import answer, begin, stream_reply
from services.ingress.parse import INTERNAL_FIELDS, parse_chat_request
from services.ingress.responses import sse_response
from shared.messages import ChatRequest, StreamOptions

router = APIRouter(route_class=ModelRoute, tags=["chat"])


@router.post("/v1/chat/completions", openapi_extra=openapi.body(ChatRequest, INTERNAL_FIELDS))
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: Request) -> Response:
    ex = await begin(request, parse_chat_request)
    chat = ex.chat
    if chat.stream is not True:
        return await answer(ex, shapes.completion_json)
    include_usage = isinstance(chat.stream_options, StreamOptions) and chat.stream_options.include_usage is True
    if ex.cached is not None:
        # Every chunk is known: one write carries them all (still one SSE event per chunk).
        frames = [b"".join(stream.replay(ex.cached, include_usage))]
        return sse_response(iter(frames), ex.rid, ex.cached.provider, ex.tier)
    return await stream_reply(ex, lambda first: stream.ChunkWriter.starting(first, ex.rid, include_usage))

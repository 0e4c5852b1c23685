"""OpenAI's embeddings: `POST /v1/embeddings` (the work is in `services/ingress/embeddings.py`)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from services.ingress import embeddings, openapi
from services.ingress.edge import ModelRoute
from services.ingress.exchange import accept

router = APIRouter(route_class=ModelRoute, tags=["embeddings"])


@router.post("/v1/embeddings", openapi_extra=openapi.body(embeddings.EmbeddingsBody))
@router.post("/embeddings", include_in_schema=False)
async def create_embeddings(request: Request) -> Response:
    call, body = await accept(request)
    return await embeddings.create_embeddings(call, request, body)

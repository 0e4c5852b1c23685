"""`GET /v1/models`: the public model names, as far as the caller's key may see them."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from services.ingress import shapes
from services.ingress.context import Call
from services.ingress.edge import EdgeRoute
from services.ingress.responses import JSON

router = APIRouter(route_class=EdgeRoute, tags=["models"])


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> Response:
    gateway = Call.of(request).gateway
    names = gateway.routes.public_models()
    if (grant := await gateway.authenticate(request)) is not None and gateway.keyring is not None:
        names = gateway.keyring.visible(grant, names)
    cards = [shapes.ModelCard(id=name) for name in names]
    return Response(shapes.encode(shapes.ModelList(data=cards)), media_type=JSON)

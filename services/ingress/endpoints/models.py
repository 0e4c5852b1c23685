"""`GET /v1/models`: the public model names, as far as the caller's key may see them; `GET /v1/models/{id}`
(the SDKs' `models.retrieve`): one model's card, or OpenAI's 404.

A model exists when the gateway can route it: a configured name, a name a provider answers itself,
`provider/model`, or a naming convention of an enabled provider. A key limited to some models sees only
those (another model is a 404, as if it did not exist, rather than a 403 that would confirm it does)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from services.ingress import shapes
from services.ingress.context import Call
from services.ingress.edge import EdgeRoute
from services.ingress.responses import JSON
from shared.errors import NotFound

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


@router.get("/v1/models/{model_id:path}")
@router.get("/models/{model_id:path}", include_in_schema=False)
async def retrieve_model(request: Request, model_id: str) -> Response:
    gateway = Call.of(request).gateway
    missing = NotFound(f"The model `{model_id}` does not exist or you do not have access to it.", param="model")
    grant = await gateway.authenticate(request)
    if grant is not None and gateway.keyring is not None and not gateway.keyring.visible(grant, [model_id]):
        raise missing
    if model_id in gateway.routes.public_models():
        return Response(shapes.encode(shapes.ModelCard(id=model_id)), media_type=JSON)
    try:
        targets = gateway.routes.resolve(model_id)
    except NotFound:
        raise missing from None
    return Response(shapes.encode(shapes.ModelCard(id=model_id, owned_by=targets[0].provider)), media_type=JSON)

"""What operators and orchestrators read: liveness, readiness, the health report, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from services.ingress import health, shapes
from services.ingress.context import Call
from services.ingress.edge import EdgeRoute
from services.ingress.responses import JSON
from shared.errors import NotFound

router = APIRouter(route_class=EdgeRoute, tags=["operations"])


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    if not Call.of(request).gateway.config.metrics_enabled:  # ENABLE_METRICS=false
        raise NotFound(f"Unknown path: GET {request.scope['path']}", code="not_found")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/health/live")
async def live() -> Response:
    return Response(b'{"status":"alive"}', media_type=JSON)


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    gateway = Call.of(request).gateway
    ok = not gateway.draining and gateway.connection is not None and gateway.connection.connected
    body = b'{"status":"ready"}' if ok else b'{"status":"not ready"}'
    return Response(body, status_code=200 if ok else 503, media_type=JSON)


@router.get("/health")
async def health_report(request: Request) -> Response:
    gateway = Call.of(request).gateway
    redis = gateway.keyring.limiter.redis if gateway.keyring is not None else None
    report = await health.probe(gateway.connection, gateway.subjects, list(gateway.config.providers),
                                None if redis is None else redis.ping)
    status = 503 if report.status == "unhealthy" else 200
    return Response(shapes.encode(report), status_code=status, media_type=JSON)

"""`/health`: asks each service kind over the bus and folds the answers into one verdict.

Healthy: router up, L1 up, L2 up (when configured), every provider up. Degraded: still serving, but the
cache tier, L2 or some provider is down. Unhealthy: no bus, no router or no provider at all.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from msgspec import Struct

from shared import bus
from shared.errors import DeadlineExceeded, GatewayError
from shared.messages import HealthReport, health_decoder
from shared.subjects import Subjects

PROBE_TIMEOUT_SECONDS = 1.0


class Component(Struct, kw_only=True):
    status: Literal["up", "degraded", "down"]
    instance: str | None = None
    checks: dict[str, str] = {}
    error: str | None = None


class HealthView(Struct, kw_only=True):
    status: Literal["healthy", "degraded", "unhealthy"]
    bus: Literal["connected", "disconnected"]
    cache: Component
    router: Component
    providers: dict[str, Component]


async def _probe(connection: bus.Bus, subject: str) -> Component:
    try:
        answer = await connection.ask(subject, b"", {}, PROBE_TIMEOUT_SECONDS)
        report: HealthReport = health_decoder.decode(answer.data)
    except bus.NoResponders:
        return Component(status="down", error="no instance running")
    except DeadlineExceeded:
        return Component(status="down", error="no answer")
    except GatewayError as exc:
        return Component(status="down", error=type(exc).__name__)
    return Component(status=report.status, instance=report.instance, checks=report.checks)


async def probe(connection: bus.Bus | None, subjects: Subjects, providers: list[str]) -> HealthView:
    down = Component(status="down", error="bus not connected")
    if connection is None or not connection.connected:
        return HealthView(
            status="unhealthy", bus="disconnected", cache=down, router=down,
            providers=dict.fromkeys(providers, down),
        )
    kinds = ["cache", "router", *(f"provider.{name}" for name in providers)]
    results = await asyncio.gather(*(_probe(connection, subjects.health(kind)) for kind in kinds))
    cache, router, *provider_results = results
    by_provider = dict(zip(providers, provider_results, strict=True))
    up = [c for c in by_provider.values() if c.status == "up"]
    if router.status == "down" or not up:
        status: Literal["healthy", "degraded", "unhealthy"] = "unhealthy"
    elif cache.status != "up" or len(up) < len(by_provider):
        status = "degraded"
    else:
        status = "healthy"
    return HealthView(status=status, bus="connected", cache=cache, router=router, providers=by_provider)

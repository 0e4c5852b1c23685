"""`/health`: asks each service kind over the bus and folds the answers into one verdict.

Healthy: router up, L1 up, L2 up (when configured), every provider up, the rate-limit Redis up (when
configured). Degraded: still serving, but the cache tier, L2, some provider, some target (its breaker
open) or the rate-limit Redis (limits then hold per process) is down. Unhealthy: no bus, no router, no
provider at all, or every target's breaker open (the router reports itself down then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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
    # The Redis that shares rate limits between ingress replicas; None when none is configured.
    limits: Component | None = None


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


async def _limits(ping: Callable[[], Awaitable[bool]] | None) -> Component | None:
    if ping is None:
        return None
    if await ping():
        return Component(status="up")
    return Component(status="down", error="redis unreachable: rate limits hold per ingress process")


async def probe(connection: bus.Bus | None, subjects: Subjects, providers: list[str],
                limits_ping: Callable[[], Awaitable[bool]] | None = None) -> HealthView:
    down = Component(status="down", error="bus not connected")
    if connection is None or not connection.connected:
        return HealthView(
            status="unhealthy", bus="disconnected", cache=down, router=down,
            providers=dict.fromkeys(providers, down), limits=await _limits(limits_ping),
        )
    kinds = ["cache", "router", *(f"provider.{name}" for name in providers)]
    results, limits = await asyncio.gather(
        asyncio.gather(*(_probe(connection, subjects.health(kind)) for kind in kinds)), _limits(limits_ping))
    cache, router, *provider_results = results
    by_provider = dict(zip(providers, provider_results, strict=True))
    up = [c for c in by_provider.values() if c.status == "up"]
    if router.status == "down" or not up:
        status: Literal["healthy", "degraded", "unhealthy"] = "unhealthy"
    elif (cache.status != "up" or router.status != "up" or len(up) < len(by_provider)
          or (limits is not None and limits.status != "up")):
        status = "degraded"
    else:
        status = "healthy"
    return HealthView(status=status, bus="connected", cache=cache, router=router, providers=by_provider,
                      limits=limits)

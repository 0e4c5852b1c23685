"""One snapshot of a deployment: every service instance on the bus plus the nats-server's own view."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import msgspec

from llm_edge.status.micro import Discovery, ServiceStatus, discover
from llm_edge.status.monitor import MonitorUnavailable, ServerStatus, read_server, with_rates
from shared import bus


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str
    collected_at: datetime
    window_seconds: float
    services: list[ServiceStatus]
    unreadable_replies: int
    server: ServerStatus | None
    monitor_error: str | None


async def collect(
    connection: bus.Bus,
    http: httpx.AsyncClient,
    monitor_url: str | None,
    window: float = 0.5,
    previous: Topology | None = None,
) -> Topology:
    """Discover the services and read the monitoring port at the same time (so it costs one window).

    `previous`, the last snapshot of a `--watch`, turns the server's counters into rates.
    """
    server_task = asyncio.create_task(_server(http, monitor_url))
    discovery: Discovery = await discover(connection, window)
    server, monitor_error = await server_task
    if server is not None and previous is not None:
        server = with_rates(server, previous.server)
    return Topology(
        nats_url=connection.url,
        collected_at=datetime.now(UTC),
        window_seconds=window,
        services=discovery.services,
        unreadable_replies=discovery.unreadable_replies,
        server=server,
        monitor_error=monitor_error,
    )


async def _server(http: httpx.AsyncClient, monitor_url: str | None) -> tuple[ServerStatus | None, str | None]:
    if not monitor_url:
        return None, None
    try:
        return await read_server(http, monitor_url), None
    except MonitorUnavailable as exc:
        return None, str(exc)

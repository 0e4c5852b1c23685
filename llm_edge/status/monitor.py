"""The nats-server monitoring port: `/varz` (server totals) and `/connz` (each connection), over HTTP.

A port that cannot be read is a fact to report, never a failure of `status`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
import msgspec


class _Varz(msgspec.Struct, frozen=True):
    version: str = ""
    now: datetime | None = None
    uptime: str = ""
    connections: int = 0
    total_connections: int = 0
    subscriptions: int = 0
    in_msgs: int = 0
    out_msgs: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    slow_consumers: int = 0
    cpu: float = 0.0
    mem: int = 0


class ConnectionStatus(msgspec.Struct, frozen=True):
    cid: int
    name: str = ""
    ip: str = ""
    port: int = 0
    pending_bytes: int = 0
    in_msgs: int = 0
    out_msgs: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    subscriptions: int = 0


class _Connz(msgspec.Struct, frozen=True):
    connections: list[ConnectionStatus] | None = None


class ServerStatus(msgspec.Struct, frozen=True, kw_only=True):
    monitor_url: str
    version: str
    sampled_at: datetime | None  # the server's clock, the one its counters follow
    uptime: str
    connections: int
    total_connections: int
    subscriptions: int
    in_msgs: int
    out_msgs: int
    in_bytes: int
    out_bytes: int
    slow_consumers: int
    cpu_percent: float
    mem_bytes: int
    # Messages per second since the previous sample; None until there are two samples (`--watch`).
    in_msgs_per_second: float | None = None
    out_msgs_per_second: float | None = None
    connection_list: list[ConnectionStatus] = []


class MonitorUnavailable(Exception):
    """The monitoring port could not be read; the message says why."""


async def read_server(http: httpx.AsyncClient, monitor_url: str) -> ServerStatus:
    base = monitor_url.rstrip("/")
    try:
        varz_response, connz_response = await asyncio.gather(
            http.get(f"{base}/varz"), http.get(f"{base}/connz", params={"limit": 4096})
        )
        varz_response.raise_for_status()
        connz_response.raise_for_status()
        varz = msgspec.json.decode(varz_response.content, type=_Varz)
        connz = msgspec.json.decode(connz_response.content, type=_Connz)
    except httpx.HTTPError as exc:
        raise MonitorUnavailable(f"{base}: {type(exc).__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise MonitorUnavailable(f"{base}: not nats-server monitoring output: {exc}") from exc
    return ServerStatus(
        monitor_url=base,
        version=varz.version,
        sampled_at=varz.now,
        uptime=varz.uptime,
        connections=varz.connections,
        total_connections=varz.total_connections,
        subscriptions=varz.subscriptions,
        in_msgs=varz.in_msgs,
        out_msgs=varz.out_msgs,
        in_bytes=varz.in_bytes,
        out_bytes=varz.out_bytes,
        slow_consumers=varz.slow_consumers,
        cpu_percent=varz.cpu,
        mem_bytes=varz.mem,
        connection_list=sorted(connz.connections or (), key=lambda c: (c.name, c.cid)),
    )


def with_rates(current: ServerStatus, previous: ServerStatus | None) -> ServerStatus:
    """`current` with message rates over the time since `previous` (same server, earlier sample)."""
    if previous is None or current.sampled_at is None or previous.sampled_at is None:
        return current
    seconds = (current.sampled_at - previous.sampled_at).total_seconds()
    if seconds <= 0 or current.in_msgs < previous.in_msgs:  # no time passed, or the server restarted
        return current
    return msgspec.structs.replace(
        current,
        in_msgs_per_second=round((current.in_msgs - previous.in_msgs) / seconds, 1),
        out_msgs_per_second=round((current.out_msgs - previous.out_msgs) / seconds, 1),
    )

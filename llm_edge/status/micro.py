"""Discovery through the NATS services framework: one `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` each,
every reply collected for a short window and joined by instance id.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from shared import bus
from shared.bus.micro import DISCOVERY_SUBJECTS, INFO_TYPE, PING_TYPE, STATS_TYPE

# The wire formats (io.nats.micro.v1.*), as much of them as we read. Fields other implementations may
# leave out or send as null carry defaults.


class _Identity(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: str
    name: str
    version: str = ""


class PingResponse(_Identity, frozen=True, kw_only=True, tag=PING_TYPE):
    pass


class EndpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subject: str = ""
    queue_group: str | None = None


class InfoResponse(_Identity, frozen=True, kw_only=True, tag=INFO_TYPE):
    description: str | None = None
    endpoints: list[EndpointInfo] | None = None


class EndpointStats(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subject: str = ""
    queue_group: str | None = None
    num_requests: int = 0
    num_errors: int = 0
    processing_time: int = 0  # nanoseconds, summed over requests
    last_error: str | None = None


class StatsResponse(_Identity, frozen=True, kw_only=True, tag=STATS_TYPE):
    started: datetime | None = None
    endpoints: list[EndpointStats] | None = None


MicroResponse = PingResponse | InfoResponse | StatsResponse
_decoder = msgspec.json.Decoder(MicroResponse)
_KIND: dict[type, str] = {PingResponse: "ping", InfoResponse: "info", StatsResponse: "stats"}

# What `status` reports.


class EndpointStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subject: str
    queue_group: str
    num_requests: int
    num_errors: int
    average_processing_time_ms: float
    last_error: str


class InstanceStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: str
    started: datetime | None
    endpoints: list[EndpointStatus]
    num_requests: int
    num_errors: int
    average_processing_time_ms: float
    last_error: str
    answered: list[str]  # which of ping / info / stats this instance answered within the window


class ServiceStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    instances: list[InstanceStatus]


class Discovery(msgspec.Struct, frozen=True, kw_only=True):
    services: list[ServiceStatus]
    unreadable_replies: int


async def discover(connection: bus.Bus, window: float) -> Discovery:
    """Ask every service instance on the bus for its ping, info and stats; wait `window` seconds."""
    return join(await bus.gather(connection, DISCOVERY_SUBJECTS, window))


def join(replies: list[bytes]) -> Discovery:
    """Decode the replies and group them: service name -> instances (by id), each from all its replies."""
    by_id: dict[str, dict[str, MicroResponse]] = {}
    unreadable = 0
    for data in replies:
        try:
            reply = _decoder.decode(data)
        except msgspec.DecodeError:  # ValidationError is a DecodeError
            unreadable += 1
            continue
        by_id.setdefault(reply.id, {})[_KIND[type(reply)]] = reply
    groups: dict[str, list[InstanceStatus]] = {}
    descriptions: dict[str, str] = {}
    for parts in by_id.values():
        name = next(iter(parts.values())).name
        info = parts.get("info")
        if isinstance(info, InfoResponse) and info.description:
            descriptions[name] = info.description
        groups.setdefault(name, []).append(_instance(parts))
    services = [
        ServiceStatus(name=name, description=descriptions.get(name, ""),
                      instances=sorted(instances, key=_age))
        for name, instances in sorted(groups.items())
    ]
    return Discovery(services=services, unreadable_replies=unreadable)


def _age(instance: InstanceStatus) -> tuple[datetime, str]:
    """Oldest first, so a restarted or added instance shows up at the bottom of its service."""
    return instance.started or datetime.max.replace(tzinfo=UTC), instance.id


def _instance(parts: dict[str, MicroResponse]) -> InstanceStatus:
    first = next(iter(parts.values()))
    endpoints: list[EndpointStatus] = []
    started = None
    match parts.get("stats"), parts.get("info"):
        case StatsResponse() as stats, _:
            started = stats.started
            endpoints = [_endpoint(e) for e in stats.endpoints or ()]
        case None, InfoResponse() as info:  # no stats within the window: at least name the endpoints
            endpoints = [
                EndpointStatus(name=e.name, subject=e.subject, queue_group=e.queue_group or "",
                               num_requests=0, num_errors=0, average_processing_time_ms=0.0, last_error="")
                for e in info.endpoints or ()
            ]
    requests = sum(e.num_requests for e in endpoints)
    busy_ms = sum(e.average_processing_time_ms * e.num_requests for e in endpoints)
    return InstanceStatus(
        id=first.id,
        version=first.version,
        started=started,
        endpoints=endpoints,
        num_requests=requests,
        num_errors=sum(e.num_errors for e in endpoints),
        average_processing_time_ms=round(busy_ms / requests, 3) if requests else 0.0,
        last_error=next((e.last_error for e in endpoints if e.last_error), ""),
        answered=sorted(parts),
    )


def _endpoint(stats: EndpointStats) -> EndpointStatus:
    average_ns = stats.processing_time / stats.num_requests if stats.num_requests else 0.0
    return EndpointStatus(
        name=stats.name,
        subject=stats.subject,
        queue_group=stats.queue_group or "",
        num_requests=stats.num_requests,
        num_errors=stats.num_errors,
        average_processing_time_ms=round(average_ns / 1e6, 3),
        last_error=stats.last_error or "",
    )

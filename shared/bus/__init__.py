"""The message bus, written once: the only package that imports `nats`.

- `connection`: `Bus` (connect, publish, listen, request-reply, work-queue requests, opening a stream);
- `stream`: the requester's side of a stream (frames in order, silence noticed, cancel);
- `replies`: the one reply multiplexer (unguessable tokens, heartbeats, loss detection);
- `serving`: `Server`, typed handlers as micro endpoints, heartbeats, stream frames, cancels, draining;
- `micro`: registration with the NATS services framework (its private-API use, confined);
- `workqueue`: admission through a JetStream work queue (a cap across worker replicas);
- `context`: what a handler gets (`Context`) and may return (`Raw`).

The protocol (headers, heartbeats, stream frames, cancel) is described in docs/ARCHITECTURE.md.
"""

from shared.bus.connection import Answer, Bus, Stream, Unreachable, connect, connect_once, gather
from shared.bus.context import Context, Raw, deadline_from, remaining
from shared.bus.errors import BusUnavailable, Lost, NoResponders
from shared.bus.replies import HEARTBEAT_SECONDS, LOST_AFTER
from shared.bus.serving import Endpoint, Handler, Server, StreamHandler, raw
from shared.bus.workqueue import QueueConsumer

__all__ = [
    "HEARTBEAT_SECONDS", "LOST_AFTER", "Answer", "Bus", "BusUnavailable", "Context", "Endpoint", "Handler",
    "Lost", "NoResponders", "QueueConsumer", "Raw", "Server", "Stream", "StreamHandler", "Unreachable",
    "connect", "connect_once", "deadline_from", "gather", "raw", "remaining",
]

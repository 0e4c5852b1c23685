"""The bus's own failures, as gateway errors: nobody serves the subject, or whoever served it went silent."""

from __future__ import annotations

from shared.errors import Unavailable


class NoResponders(Unavailable):
    """Nobody subscribes to the subject: the service is not running. Known in under a millisecond."""

    default_code = "no_responders"


class Lost(Unavailable):
    """The instance working on the request went silent (its heartbeats stopped): it died or hangs.

    `started` says whether it was a stream that had already sent a chunk to the client (then it must
    not be retried elsewhere: the client would see the answer restart)."""

    default_code = "responder_lost"

    def __init__(self, message: str, *, where: str = "", started: bool = False) -> None:
        super().__init__(message, where=where)
        self.started = started


class BusUnavailable(Unavailable):
    """The connection to NATS is closed or reconnecting."""

    default_code = "bus_unavailable"

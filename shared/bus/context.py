"""What a handler gets besides its decoded request (`Context`: the request's headers, its raw bytes, its
deadline) and what it may return instead of a Struct (`Raw`: bytes passed on without decoding them).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from shared.subjects import Headers

_EMPTY: dict[str, str] = {}


class Context:
    """One request as the bus delivered it. Handlers read only the headers they need through it."""

    __slots__ = ("data", "headers", "reply")

    def __init__(self, data: bytes = b"", headers: Mapping[str, str] | None = None, reply: str = "") -> None:
        self.data = data  # the request's bytes as received, to forward without encoding them again
        self.headers: Mapping[str, str] = headers if headers is not None else _EMPTY
        self.reply = reply  # where the answer goes (a stream's frames go here too, through the router)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    @property
    def request_id(self) -> str | None:
        """The id for logs: the client's `x-request-id` or the ingress's own. Never used as a key."""
        return self.headers.get(Headers.REQUEST_ID)

    @property
    def bus_id(self) -> str:
        """The unguessable id the bus gave this request (streams and cancels are keyed by it)."""
        return self.headers.get(Headers.BUS_ID, "")

    @property
    def streaming(self) -> bool:
        return self.headers.get(Headers.STREAM) == "1"

    @property
    def deadline(self) -> float | None:
        return deadline_from(self.headers)

    def remaining(self, default: float) -> float:
        return remaining(self.deadline, default)


class Raw:
    """A reply that is already bytes (a cached answer, a provider's encoded result): published as is."""

    __slots__ = ("data", "headers")

    def __init__(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.data = data
        self.headers = headers


def deadline_from(headers: Mapping[str, str] | None) -> float | None:
    """The absolute deadline (epoch seconds) carried by a request, if any."""
    if headers and (value := headers.get(Headers.DEADLINE)):
        try:
            return int(value) / 1000.0
        except ValueError:
            return None
    return None


def remaining(deadline: float | None, default: float) -> float:
    return default if deadline is None else deadline - time.time()

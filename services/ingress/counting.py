"""How the ingress asks for a token count: one request to the routers' count subject, which picks the
target as it does for an answer and asks that provider's worker."""

from __future__ import annotations

import time

from services.ingress.gateway import Gateway
from shared import bus
from shared.errors import DeadlineExceeded, InternalError, Unavailable, from_reply
from shared.messages import ErrorReply, TokenCount


async def count_tokens(gateway: Gateway, payload: bytes, headers: dict[str, str], deadline: float) -> TokenCount:
    try:
        reply, _ = await gateway.bus().request(gateway.subjects.count_tokens, payload, headers,
                                               deadline - time.monotonic())
    except bus.NoResponders as exc:
        raise Unavailable("No router instance is running.", code="no_router") from exc
    except DeadlineExceeded as exc:
        raise DeadlineExceeded("The token count did not complete before its deadline.") from exc
    match reply:
        case TokenCount():
            return reply
        case ErrorReply():
            raise from_reply(reply)
    raise InternalError("unexpected reply on the bus")

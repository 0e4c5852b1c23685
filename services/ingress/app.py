"""The HTTP edge: one FastAPI app whose routes are declared once, one `APIRouter` per dialect or concern
(`services/ingress/endpoints/`), in front of the bus. Every error leaves in the called dialect's shape with
its status, through one function (`responses.exception_response`); the app serves its own OpenAPI document
at `/openapi.json`. `edge.Edge` is the ASGI app uvicorn runs: it gives each request its `Call` and sends
the hot model routes straight to their endpoints (see `services/ingress/edge.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from services.ingress import admin, admin_logs, guard, openapi
from services.ingress.edge import Edge
from services.ingress.endpoints import chat, embeddings, messages, models, ops, responses
from services.ingress.gateway import Gateway
from services.ingress.responses import exception_response
from shared import bus, runtime, tracing
from shared.config import Config

log = logging.getLogger("llm_edge.ingress")

# Every route of the ingress: a new dialect or concern adds its router here.
ROUTERS: tuple[APIRouter, ...] = (chat.router, messages.router, responses.router, embeddings.router, models.router,
                                  ops.router, admin.router, admin_logs.router)


def _probe_or_scrape(scope: MutableMapping[str, Any]) -> bool:
    return str(scope.get("path", "")).startswith(("/health", "/metrics"))


# FastAPI's own spans (FastAPI 0.16x traces every request once a tracer provider is set): none for the
# probes and scrapes that arrive every few seconds (they buried the request traces in Jaeger), and none
# for its internals (dependencies, endpoint). Model requests are traced by `edge.serve`.
_FASTAPI_TELEMETRY: Any = {"exclude": _probe_or_scrape, "operation_spans": False}


def create_app(config: Config, connection: bus.Bus | None = None, *, direct: bool = True) -> Edge:
    """The ingress app; `direct=False` leaves every request to FastAPI's routing (tests compare the two)."""
    gateway = Gateway(config)
    owns_connection = connection is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway.connection = connection or await bus.connect(config.nats_url, "llm-edge-ingress")
        gateway.warn_if_bus_smaller(gateway.connection)
        await gateway.listen_for_fills(gateway.connection)
        following_keys = admin.start(gateway)  # the key store, when the admin API is on
        log.info("ingress ready on http://%s:%d", config.ingress.host, config.ingress.port)
        runtime.notify_ready()
        yield
        gateway.draining = True
        if gateway.request_log is not None:
            await gateway.request_log.close()  # what is queued goes to the bus before it drains
        if following_keys is not None:
            following_keys.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following_keys  # its watch unsubscribed before the connection drains
        await gateway.spend.close()
        if gateway.keyring is not None:
            await gateway.keyring.limiter.close()
        tracing.shutdown()
        if owns_connection and gateway.connection is not None and not gateway.connection.closed:
            await gateway.connection.drain()

    app = FastAPI(title="LLM Edge", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  telemetry=_FASTAPI_TELEMETRY)
    app.state.gateway = gateway
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = openapi.documenting(app)  # type: ignore[method-assign]

    # What goes wrong before a route runs (no such path, a method it lacks) or in FastAPI's parameter
    # validation; a route's own errors are answered by `edge.serve`. Both through `exception_response`.
    async def refused(request: Request, exc: Exception) -> Response:
        return exception_response(exc, request)

    app.add_exception_handler(HTTPException, refused)
    app.add_exception_handler(RequestValidationError, refused)
    return Edge(app, gateway, ROUTERS if direct else ())


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    import uvicorn

    app = create_app(config)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            app.gateway.draining = True  # readiness fails first; in-flight requests and streams finish
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            """uvicorn's shutdown, but drained the way a load balancer expects: stop accepting, and never
            close a keep-alive connection under a client that may be sending on it (that request would be
            lost). A connection closes after a response that said `Connection: close` (every response
            begun from now on says it: FastPath while draining), or at its keep-alive timeout when idle,
            as idle connections always do."""
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                # A response not yet begun will say `Connection: close`. One already begun has promised
                # keep-alive in its head: closing after it would race the client's next request on it
                # (uvicorn's own shutdown loses those), so it goes idle and its next request is told.
                if cycle is not None and not cycle.response_complete and not cycle.response_started:
                    connection.shutdown()
            try:
                async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                    await self._wait_tasks_to_complete()
            except TimeoutError:
                log.error("%d request(s) still running after the grace period; cancelled",
                          len(self.server_state.tasks))
                for task in self.server_state.tasks:
                    task.cancel()
            if not self.force_exit:
                await self.lifespan.shutdown()

    server = Server(
        uvicorn.Config(
            app,
            loop="none",
            http=guard.guarded(config.ingress),  # httptools, with limits for slow and oversized clients
            timeout_keep_alive=config.ingress.keep_alive_seconds,
            lifespan="on",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=30,
        )
    )
    listener = runtime.inherited_listener() or runtime.listening_socket(config.ingress.host, config.ingress.port)
    await server.serve(sockets=[listener])

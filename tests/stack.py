"""An in-process gateway for integration tests: the real service classes, each on its own NATS
connection to a real nats-server, and the real ingress app driven through httpx's ASGI transport.
Each stack gets its own subject prefix, so tests sharing one nats-server never see each other.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import anthropic
import httpx
import openai
import uvicorn

from llm_edge.launcher import free_port
from services.cache.service import CacheService
from services.ingress import guard
from services.ingress.app import create_app
from services.ingress.edge import Edge
from services.providers.settings import SETTINGS
from services.providers.worker import ProviderWorker
from services.router.service import Router
from shared import bus
from shared.config import Config, build

_ids = itertools.count()


def make_config(nats_url: str, **fields: Any) -> Config:
    data = {"prefix": f"t{next(_ids)}", "nats_url": nats_url, "providers": {"mock": {}}} | fields
    return build(data, SETTINGS)


class Stack:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.servers: dict[str, bus.Server] = {}
        self.caches: dict[str, CacheService] = {}
        self.routers: dict[str, Router] = {}
        self.workers: list[ProviderWorker] = []
        self.ingress_bus: bus.Bus | None = None
        self._http: httpx.AsyncClient | None = None
        self.apps: list[Edge] = []
        self.ingresses: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
        self.extra_buses: list[bus.Bus] = []
        self.url = ""

    async def _server(self, key: str, name: str) -> bus.Server:
        nc = await bus.connect(self.config.nats_url, name)
        server = bus.Server(nc, name, "0.1.0", f"test {name}")
        await server.start()
        self.servers[key] = server
        return server

    async def start_cache(self, key: str = "cache") -> CacheService:
        cache = CacheService(self.config)
        await cache.start(await self._server(key, "test-cache"))
        self.caches[key] = cache
        return cache

    async def start_router(self, key: str = "router") -> Router:
        server = await self._server(key, "test-router")
        router = Router(self.config, server.bus)
        await router.start(server)
        self.routers[key] = router
        return router

    async def start_provider(self, name: str, key: str | None = None) -> None:
        worker = ProviderWorker(self.config, name)
        await worker.start(await self._server(key or f"provider.{name}", f"test-{name}"))
        self.workers.append(worker)

    async def start(self, cache: bool = True, providers: bool = True) -> Stack:
        if cache:
            await self.start_cache()
        await self.start_router()
        for name in self.config.providers if providers else ():
            await self.start_provider(name)
        self.ingress_bus = await bus.connect(self.config.nats_url, "test-ingress")
        self.url = await self._serve(create_app(self.config, self.ingress_bus))
        self._http = httpx.AsyncClient(base_url=self.url, timeout=30)
        return self

    async def _serve(self, app: Edge) -> str:
        self.apps.append(app)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=port, loop="none", lifespan="on", log_level="warning",
            access_log=False, proxy_headers=False,
            http=guard.guarded(self.config.ingress),  # the protocol `llm-edge ingress` serves with
        ))
        task = asyncio.create_task(server.serve())
        self.ingresses.append((server, task))
        while not server.started:  # uvicorn offers no awaitable for "listening"
            if task.done():
                task.result()
            await asyncio.sleep(0.001)
        return f"http://127.0.0.1:{port}"

    async def add_ingress(self, direct: bool = True) -> str:
        """Another ingress replica on the same bus (and Redis), with its own connection; its base URL.
        `direct=False`: one that leaves every request to FastAPI's routing (no shortcut, `ingress/edge.py`)."""
        connection = await bus.connect(self.config.nats_url, "test-ingress")
        self.extra_buses.append(connection)
        return await self._serve(create_app(self.config, connection, direct=direct))

    async def settle(self) -> None:
        """Wait until every ingress has written the usage charges and spend of the answers it gave."""
        for app in self.apps:
            await app.gateway.spend.settle()
            if app.gateway.keyring is not None:
                await app.gateway.keyring.limiter.settle()

    async def stop_service(self, key: str) -> None:
        server = self.servers.pop(key)
        await server.drain(grace=5)
        if key in self.caches:
            await self.caches.pop(key).close()

    def openai(self, api_key: str = "unused", url: str | None = None, **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{url or self.url}/v1", api_key=api_key, max_retries=0, **options)

    @property
    def http(self) -> httpx.AsyncClient:
        """A client of the stack's ingress (started by `start()`)."""
        if self._http is None:
            raise RuntimeError("the stack's ingress is not started")
        return self._http

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop_queue()
        for key in list(self.servers):
            await self.stop_service(key)
        for worker in self.workers:
            await worker.stop_queue()
            await worker.close()
        if self._http is not None:
            await self._http.aclose()
        for server, _ in self.ingresses:
            server.should_exit = True
        for _, task in self.ingresses:
            await task
        for connection in [self.ingress_bus, *self.extra_buses]:
            if connection is not None:
                await connection.close()


def error_body(exc: openai.APIStatusError | anthropic.APIStatusError) -> dict[str, Any]:
    """The JSON body of an error answer, as the SDK parsed it (both SDKs type it as `object`)."""
    body = exc.body
    assert isinstance(body, dict), body
    return body

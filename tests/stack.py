"""An in-process gateway for integration tests: the real service classes, each on its own NATS
connection to a real nats-server, and the real ingress app driven through httpx's ASGI transport.
Each stack gets its own subject prefix, so tests sharing one nats-server never see each other.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import msgspec
import openai
import uvicorn

from services.cache.service import CacheService
from services.ingress.app import create_app
from services.launcher import free_port
from services.providers.worker import ProviderWorker
from services.router.service import Router
from shared import bus
from shared.config import Config, _validate

_ids = itertools.count()


def make_config(nats_url: str, **fields: Any) -> Config:
    data = {"prefix": f"t{next(_ids)}", "nats_url": nats_url, "providers": {"mock": {}}} | fields
    return _validate(msgspec.convert(data, Config))


class Stack:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.servers: dict[str, bus.Server] = {}
        self.caches: dict[str, CacheService] = {}
        self.routers: dict[str, Router] = {}
        self.workers: list[ProviderWorker] = []
        self.ingress_nc = None
        self.http: httpx.AsyncClient | None = None
        self.uvicorn: uvicorn.Server | None = None
        self.url = ""

    async def _server(self, key: str, name: str) -> bus.Server:
        nc = await bus.connect(self.config.nats_url, name)
        server = bus.Server(nc, name, "0.1.0", f"test {name}")
        await server.start()
        self.servers[key] = server
        return server

    async def start_cache(self, key: str = "cache") -> CacheService:
        cache = CacheService(self.config, await self._server(key, "test-cache"))
        await cache.start()
        self.caches[key] = cache
        return cache

    async def start_router(self, key: str = "router") -> Router:
        router = Router(self.config, await self._server(key, "test-router"))
        await router.start()
        self.routers[key] = router
        return router

    async def start_provider(self, name: str, key: str | None = None) -> None:
        worker = ProviderWorker(self.config, name, await self._server(key or f"provider.{name}", f"test-{name}"))
        await worker.start()
        self.workers.append(worker)

    async def start(self, cache: bool = True, providers: bool = True) -> Stack:
        if cache:
            await self.start_cache()
        await self.start_router()
        for name in self.config.providers if providers else ():
            await self.start_provider(name)
        self.ingress_nc = await bus.connect(self.config.nats_url, "test-ingress")
        app = create_app(self.config, self.ingress_nc)
        port = free_port()
        self.uvicorn = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=port, loop="none", lifespan="on", log_level="warning",
            access_log=False,
        ))
        self.uvicorn_task = asyncio.create_task(self.uvicorn.serve())
        while not self.uvicorn.started:  # uvicorn offers no awaitable for "listening"
            if self.uvicorn_task.done():
                self.uvicorn_task.result()
            await asyncio.sleep(0.001)
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.AsyncClient(base_url=self.url, timeout=30)
        return self

    async def stop_service(self, key: str) -> None:
        server = self.servers.pop(key)
        await server.drain(grace=5)
        if key in self.caches:
            await self.caches.pop(key).close()

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop_queue()
        for key in list(self.servers):
            await self.stop_service(key)
        for worker in self.workers:
            await worker.stop_queue()
            await worker.close()
        if self.http is not None:
            await self.http.aclose()
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
            await self.uvicorn_task
        if self.ingress_nc is not None and not self.ingress_nc.is_closed:
            await self.ingress_nc.close()

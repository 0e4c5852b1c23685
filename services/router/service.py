"""The router: picks targets for a model, calls provider workers, falls back, and fills the cache.

It passes the provider's reply bytes on to the ingress untouched and publishes the cache fill before
answering. Strategies, retries and breakers plug in at `order()`.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from services.router.routes import Routes
from shared import bus, metrics, tracing
from shared.config import Config, Target
from shared.errors import GatewayError, InvalidRequest, Unavailable, from_reply
from shared.logs import request_id
from shared.messages import ChatResult, ErrorReply, HealthReport
from shared.subjects import SERVICE_ROUTER, Headers, Queues, Subjects

log = logging.getLogger("llm_edge.router")

# Failures that are the caller's own: another target would refuse the same request.
_NO_FALLBACK_STATUS = frozenset({400, 413, 422})
# Request headers a provider worker needs; nothing else is copied onward.
_PASSED_ON = (Headers.REQUEST_ID, Headers.DEADLINE, Headers.TRACEPARENT, Headers.STREAM)


class _ModelOnly(msgspec.Struct):
    model: str


_model_decoder = msgspec.msgpack.Decoder(_ModelOnly)


class Router:
    def __init__(self, config: Config, server: bus.Server) -> None:
        self.config = config
        self.server = server
        self.routes = Routes(config)
        self.subjects = Subjects(config.prefix)
        self.default_timeout = config.ingress.request_timeout_seconds

    async def start(self) -> None:
        await self.server.endpoint("route", self.subjects.route, Queues.ROUTER, self.handle)
        await self.server.health_endpoint(
            self.subjects.health("router"), lambda: HealthReport(service="router", instance=self.server.id)
        )

    def order(self, targets: list[Target]) -> list[Target]:
        """The order in which to try targets (ordered fallback for now)."""
        return targets

    async def handle(self, msg: Msg) -> None:
        headers = msg.headers or {}
        request_id.set(headers.get(Headers.REQUEST_ID))
        with tracing.span("route", headers, SpanKind.SERVER) as span:
            try:
                await self._route(msg, headers)
            except GatewayError as exc:
                tracing.failed(span, exc.http_status, exc.message)
                raise

    async def _route(self, msg: Msg, headers: dict[str, str]) -> None:
        try:
            model = _model_decoder.decode(msg.data).model
        except msgspec.DecodeError as exc:
            raise InvalidRequest("the request could not be decoded") from exc
        deadline = bus.deadline_from(headers)
        onward = {name: headers[name] for name in _PASSED_ON if name in headers}
        tracing.inject(onward)
        streaming = headers.get(Headers.STREAM) == "1"
        if streaming:
            # Chunks go from the worker straight to the ingress; the router hears only the outcome.
            onward[Headers.STREAM_TO] = msg.reply
        error: GatewayError = Unavailable(f"no target could serve `{model}`")
        for target in self.order(self.routes.resolve(model)):
            onward[Headers.TARGET_MODEL] = target.model
            subject = self.subjects.provider_chat(target.provider)
            try:
                reply, raw = await bus.request(
                    self.server.nc, subject, msg.data, onward, bus.remaining(deadline, self.default_timeout)
                )
            except bus.NoResponders:
                metrics.PROVIDER_UP.labels(target.provider).set(0)
                error = Unavailable(
                    f"no worker is running for provider `{target.provider}`",
                    code="no_provider_worker",
                    where=f"provider:{target.provider}",
                )
                continue
            match reply:
                case ChatResult():
                    metrics.PROVIDER_UP.labels(target.provider).set(1)
                    # The fill goes first (a buffered publish, it does not delay the reply) so that a
                    # client repeating the request at once already finds it in every L1.
                    await self._fill(headers, raw.data)
                    if not streaming:
                        await self.server.nc.publish(msg.reply, raw.data)
                    return
                case ErrorReply(stream_started=True):
                    return  # the worker already ended the client's stream with this error
                case ErrorReply():
                    error = from_reply(reply)
                    if reply.status in _NO_FALLBACK_STATUS:
                        raise error
                    metrics.PROVIDER_UP.labels(target.provider).set(0)
                    log.info("target %s/%s failed (%d), trying the next", target.provider, target.model,
                             reply.status)
                case _:
                    raise GatewayError(f"unexpected reply from {subject}")
        raise error

    async def _fill(self, headers: dict[str, str], data: bytes) -> None:
        key = headers.get(Headers.CACHE_KEY)
        if not key or "no-store" in headers.get(Headers.CACHE_CONTROL, ""):
            return
        fill = {Headers.CACHE_KEY: key}
        if ttl := headers.get(Headers.CACHE_TTL):
            fill[Headers.CACHE_TTL] = ttl
        await self.server.nc.publish(self.subjects.cache_fill, data, headers=fill)


async def serve(config: Config, stop: asyncio.Event) -> None:
    metrics.serve(config.metrics_port)
    nc = await bus.connect(config.nats_url, SERVICE_ROUTER)
    server = bus.Server(nc, SERVICE_ROUTER, "0.1.0", "LLM Edge router: targets, fallback, cache fill")
    await server.start()
    await Router(config, server).start()
    log.info("router ready")
    await stop.wait()
    await server.drain()

"""The logger: reads request records from the request-log stream in batches (a durable pull consumer that
every logger replica shares, so each record reaches one of them), writes each batch to the database in one
transaction and only then acks it, deletes rows past their retention, and answers `llm.logs.query`.

A batch the database refuses is not acked: it comes back after a pause, to this replica or another, so a
database that is down loses nothing (the stream holds the records, up to its limits). A logger that is
down loses nothing either: the consumer remembers where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Literal

import msgspec
from prometheus_client import Counter

from services.logger.store import Store, StoreError, open_store
from shared import bus, metrics, runtime
from shared.bus.journal import Delivered, Reader, request_log
from shared.config import Config
from shared.errors import InvalidRequest, Unavailable
from shared.messages import HealthReport
from shared.request_log import LogPage, RequestRecord, batch_decoder, encode, query_decoder
from shared.subjects import SERVICE_LOGGER, Queues, Subjects

log = logging.getLogger("llm_edge.logger")

RETRY_SECONDS = 2.0  # a batch the database refused comes back after this
PURGE_EVERY_SECONDS = 3600.0
_FETCH_WAIT_SECONDS = 1.0
# Room in a query's answer for its headers, below the bus's largest message.
_PAGE_ROOM_BYTES = 64 * 1024


class Logger:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        settings = config.request_log
        self.config = config
        self.subjects = Subjects(config.prefix)
        self.store = store or open_store(settings.database_url, settings.sqlite_path)
        self.batch_size = settings.batch_size
        self.retention = settings.retention_days * 86400.0
        self.instance = ""
        self.written = 0
        self.progress = asyncio.Condition()  # notified after each batch written
        self.failing: str | None = None  # why the last batch was not written, until one is
        self.consuming: asyncio.Task[None] | None = None
        self.purging: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self, server: bus.Server) -> None:
        self.instance = server.id
        self.server = server
        try:
            await self.store.open()
        except StoreError as exc:  # not a reason to stop: the stream keeps the records until it is back
            log.error("the request log's database is unavailable (%s); records wait on the stream", exc)
            self.failing = str(exc)
        self.reader = Reader(server.bus, request_log(self.config), Queues.LOGGER, max_pending=self.batch_size * 4)
        await self.reader.start()
        await server.endpoint("query", self.subjects.logs_query, Queues.LOGGER, bus.Endpoint(bus.raw, self.query))
        await server.health_endpoint(self.subjects.health("logger"), self.health)
        self.consuming = asyncio.create_task(self._consume())
        if self.retention > 0:
            self.purging = asyncio.create_task(self._purge())

    async def stop_reading(self) -> None:
        """Stop reading the stream; the batch being written is finished (and acked) first, and the pull
        under way runs out (within a second), so no record is left held by this instance."""
        self.stopping = True
        if self.purging is not None:
            self.purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.purging
        if self.consuming is not None:
            await self.consuming
        await self.reader.close()

    async def close(self) -> None:
        await self.store.close()

    async def _consume(self) -> None:
        while not self.stopping:
            batch = await self.reader.fetch(self.batch_size, _FETCH_WAIT_SECONDS)
            if batch:
                await self.write(batch)

    async def write(self, batch: list[Delivered]) -> bool:
        """One transaction for the batch, then the acks; a refused batch comes back later."""
        records: list[RequestRecord] = []
        readable: list[Delivered] = []
        for item in batch:
            try:
                records.extend(batch_decoder.decode(item.data))
                readable.append(item)
            except msgspec.DecodeError:
                log.error("a request record cannot be read; dropped")  # no later delivery would read it either
                await Reader.reject(item)
        if not records:
            return True
        try:
            async with Reader.working(readable):
                await self.store.write(records)
        except StoreError as exc:
            if self.failing != str(exc):
                log.error("%d request records not written, retrying in %.0fs: %s", len(records), RETRY_SECONDS, exc)
            self.failing = str(exc)
            await Reader.retry(readable, RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)  # the database's recovery: nothing to wait on but time
            return False
        if self.failing is not None:
            log.info("request records are written again")
            self.failing = None
        await Reader.done(readable)
        self.written += len(records)
        _WRITTEN.inc(len(records))
        async with self.progress:
            self.progress.notify_all()
        return True

    async def until_written(self, count: int) -> None:
        """Until this instance has written at least `count` records."""
        async with self.progress:
            await self.progress.wait_for(lambda: self.written >= count)

    async def _purge(self) -> None:
        while not self.stopping:
            try:
                removed = await self.store.purge(time.time() - self.retention)
                if removed:
                    log.info("deleted %d request records older than %g days", removed, self.retention / 86400)
            except StoreError as exc:
                log.warning("old request records not deleted: %s", exc)
            await asyncio.sleep(PURGE_EVERY_SECONDS)  # the retention sweep's period

    async def query(self, payload: bytes, ctx: bus.Context) -> bus.Raw:
        try:
            query = query_decoder.decode(payload)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"Invalid log query: {exc}", code="invalid_log_query") from exc
        try:
            found = await self.store.query(query)
        except StoreError as exc:
            raise Unavailable("The request log's database is unavailable.", code="log_store_unavailable") from exc
        return bus.Raw(fit(found, self.server.bus.max_payload - _PAGE_ROOM_BYTES))

    async def health(self) -> HealthReport:
        status: Literal["up", "degraded", "down"] = "degraded" if self.failing else "up"
        checks = {"database": "failing" if self.failing else "up", "written": str(self.written),
                  "backlog": str(await self.reader.pending())}
        return HealthReport(service="logger", instance=self.instance, status=status, checks=checks)


def fit(found: LogPage, room: int) -> bytes:
    """The page encoded, cut (with `more` set) where it would outgrow one bus message."""
    data = encode(found)
    if len(data) <= room:
        return data
    records, size = [], 64
    for record in found.records:
        size += len(encode(record))
        if size > room:
            break
        records.append(record)
    return encode(LogPage(records=records, more=True))


_WRITTEN = Counter("llm_edge_request_log_written", "Request records written to the database")


async def serve(config: Config, stop: asyncio.Event) -> None:
    metrics.serve(config.metrics_port, expose=config.metrics_enabled)
    connection = await bus.connect(config.nats_url, SERVICE_LOGGER)
    server = bus.Server(connection, SERVICE_LOGGER, "0.1.0", "LLM Edge logger: the request log's database")
    await server.start()
    logger = Logger(config)
    await logger.start(server)
    log.info("logger ready (%s)", "PostgreSQL" if config.request_log.database_url else
             f"SQLite at {config.request_log.sqlite_path}")
    runtime.notify_ready(runtime.taking_work(connection, stop))
    await stop.wait()
    await logger.stop_reading()
    await server.drain()  # queries under way are answered
    await logger.close()

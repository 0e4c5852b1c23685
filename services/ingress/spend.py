"""Spend and usage per key, tenant and model: requests, tokens (prompt, completion, prompt-cache reads) and
cost, counted when an answer completes and summed over any range of whole hours (UTC).

With Redis (limits.redis_url or cache.redis_url) the counts live in one hash per hour and one per day
(`<prefix>:spend:h:YYYYMMDDHH`, `<prefix>:spend:d:YYYYMMDD`), each field one (key, tenant, model, measure),
each value an integer (cost in nano-dollars, so sums are exact): they survive any restart of the gateway,
and of Redis when it persists (appendonly). Counting never waits: answers are added up in memory and a
background task writes each batch in one pipeline (as limits.py does its charges); while Redis is away the
batch waits for it. Without Redis the same buckets live in this process's memory: per replica, gone when
it stops (the query says so).
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from shared import metrics
from shared.config import Config
from shared.errors import InvalidRequest, Unavailable
from shared.messages import Usage

if TYPE_CHECKING:
    from shared.redis_backoff import RedisBackoff

log = logging.getLogger("llm_edge.ingress.spend")

HOUR, DAY = 3600, 86400
MEASURES = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_nano_usd")
Dimension = Literal["key", "tenant", "model"]
DIMENSIONS: tuple[Dimension, ...] = ("key", "tenant", "model")
_NANO = 1_000_000_000
_MAX_DAYS = 3660  # the longest range one query sums (ten years of day buckets)
_REDIS_TIMEOUT_SECONDS = 2.0  # off the hot path: a pipeline of a batch, or of a query's buckets
_CLOSE_SECONDS = 5.0

Group = tuple[str, str, str]  # key, tenant, model
_field = msgspec.json.Encoder().encode
_unfield = msgspec.json.Decoder(tuple[str, str, str, str]).decode


def hour_bucket(hour: int) -> str:
    return "h:" + time.strftime("%Y%m%d%H", time.gmtime(hour))


def day_bucket(day: int) -> str:
    return "d:" + time.strftime("%Y%m%d", time.gmtime(day))


def slots(start: int, end: int) -> list[tuple[int, int]]:
    """The buckets that hold [start, end) (whole hours) as (start, length): a day's bucket for each whole
    day, hours for the rest."""
    found = []
    at = start
    while at < end:
        span = DAY if at % DAY == 0 and at + DAY <= end else HOUR
        found.append((at, span))
        at += span
    return found


def buckets(start: int, end: int) -> list[str]:
    return [day_bucket(at) if span == DAY else hour_bucket(at) for at, span in slots(start, end)]


class Row(Struct, frozen=True, kw_only=True):
    key: str | None | UnsetType = UNSET  # null: requests made without a key (an open gateway)
    tenant: str | UnsetType = UNSET
    model: str | UnsetType = UNSET
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float


class Report(Struct, frozen=True, kw_only=True):
    object: str = "spend"
    start: str = msgspec.field(name="from")
    end: str = msgspec.field(name="to")
    group_by: list[str]
    durable: bool  # false: this ingress process's own counts since it started (no Redis)
    data: list[Row]
    total: Row


def row(group: dict[str, str], counts: list[int]) -> Row:
    key: str | None | UnsetType = group.get("key", UNSET)
    if key == "":
        key = None
    return Row(key=key, tenant=group.get("tenant", UNSET),
               model=group.get("model", UNSET), requests=counts[0], prompt_tokens=counts[1],
               completion_tokens=counts[2], cached_tokens=counts[3], cost_usd=counts[4] / _NANO)


def iso(at: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class Spend:
    def __init__(self, config: Config) -> None:
        self._prefix = f"{config.prefix}:spend:"
        self._retention = config.spend.hourly_retention_days * DAY
        self._pending: dict[tuple[int, Group], list[int]] = {}
        self._memory: dict[str, dict[bytes, int]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._counters: dict[Group, Any] = {}  # the Prometheus child of each group (labels() costs a lock)
        self._redis: RedisBackoff | None = None
        if url := config.limits_redis_url:
            from shared.redis_backoff import RedisBackoff  # redis-py costs ~20 MB: only when used

            self._redis = RedisBackoff(url, _REDIS_TIMEOUT_SECONDS, log, down="redis unavailable for spend; "
                                       "counts wait in memory", up="redis is back for spend")

    @property
    def durable(self) -> bool:
        return self._redis is not None

    def record(self, key: str, tenant: str, model: str, usage: Usage | None, cost: float) -> None:
        """Count one answer; never waits (without Redis, the counts stay pending until a report reads them)."""
        group = (key, tenant, model)
        if cost > 0:
            if (counter := self._counters.get(group)) is None:
                counter = self._counters[group] = metrics.SPEND.labels(*group)
            counter.inc(cost)
        slot = (int(time.time()) // HOUR * HOUR, group)
        if (counts := self._pending.get(slot)) is None:
            counts = self._pending[slot] = [0, 0, 0, 0, 0]
        counts[0] += 1
        if usage is not None:
            counts[1] += usage.prompt_tokens
            counts[2] += usage.completion_tokens
            counts[3] += usage.cache_read_tokens
        counts[4] += round(cost * _NANO)
        if self._redis is not None and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _take(self) -> dict[tuple[int, Group], list[int]]:
        batch, self._pending = self._pending, {}
        return batch

    def _increments(self, batch: dict[tuple[int, Group], list[int]]) -> Iterable[tuple[str, bytes, int]]:
        for (hour, group), counts in batch.items():
            for measure, count in zip(MEASURES, counts, strict=True):
                if count:
                    name = _field((*group, measure))
                    yield hour_bucket(hour), name, count
                    yield day_bucket(hour // DAY * DAY), name, count

    def _keep(self, batch: dict[tuple[int, Group], list[int]]) -> None:
        for bucket, name, count in self._increments(batch):
            fields = self._memory.setdefault(bucket, {})
            fields[name] = fields.get(name, 0) + count

    async def _flush(self) -> None:
        while self._pending:
            batch = self._take()
            if not await self._write(batch):
                # Redis is away: the counts wait for it (bounded by hours x keys x models, not by requests).
                for slot, counts in batch.items():
                    pending = self._pending.setdefault(slot, [0, 0, 0, 0, 0])
                    for i, count in enumerate(counts):
                        pending[i] += count
                await asyncio.sleep(1.0)  # a back-off before trying again, not a synchronisation

    async def _write(self, batch: dict[tuple[int, Group], list[int]]) -> bool:
        assert self._redis is not None
        client = self._redis.client

        async def write() -> bool:
            pipe = client.pipeline(transaction=False)
            hours = set()
            for bucket, name, count in self._increments(batch):
                pipe.hincrby(self._prefix + bucket, name, count)
                if bucket.startswith("h:"):
                    hours.add(bucket)
            for bucket in hours:
                pipe.expire(self._prefix + bucket, self._retention + DAY)
            await pipe.execute()
            return True

        return await self._redis.call(write, False)

    async def settle(self) -> None:
        """Wait until every answer counted so far has been written (tests, shutdown)."""
        while self._flusher is not None and not self._flusher.done():
            await self._flusher

    async def close(self) -> None:
        if self._redis is None:
            return
        try:
            await asyncio.wait_for(self.settle(), _CLOSE_SECONDS)
        except TimeoutError:
            log.warning("spend of %d group(s) not written: redis did not come back before shutdown",
                        len(self._pending))
        await self._redis.close()

    async def report(self, start: int, end: int, group_by: tuple[Dimension, ...]) -> Report:
        """The sums over [start, end) (whole hours, UTC), one row per group, largest cost first."""
        self.check_range(start, end)
        names = buckets(start, end)
        contents: list[dict[bytes, int]] | list[dict[bytes, bytes]]
        if self._redis is None:
            self._keep(self._take())
            contents = [self._memory.get(name, {}) for name in names]
        else:
            await self.settle()  # this replica's own answers so far are in
            contents = await self._read(names)
        totals: dict[tuple[str, ...], list[int]] = {}
        grand = [0, 0, 0, 0, 0]
        positions = [DIMENSIONS.index(dimension) for dimension in group_by]
        for fields in contents:
            for name, value in fields.items():
                *group, measure = _unfield(name)
                i = MEASURES.index(measure)
                counts = totals.setdefault(tuple(group[p] for p in positions), [0, 0, 0, 0, 0])
                counts[i] += int(value)
                grand[i] += int(value)
        rows = [row(dict(zip(group_by, group, strict=True)), counts) for group, counts in totals.items()]
        rows.sort(key=lambda r: (-r.cost_usd, -r.requests))
        return Report(start=iso(start), end=iso(end), group_by=list(group_by), durable=self.durable, data=rows,
                      total=row({}, grand))

    def check_range(self, start: int, end: int) -> None:
        if start % HOUR or end % HOUR:
            raise InvalidRequest("`from` and `to` must fall on whole hours (UTC).", param="from")
        if end <= start:
            raise InvalidRequest("`to` must be later than `from`.", param="to")
        if end - start > _MAX_DAYS * DAY:
            raise InvalidRequest(f"A range may span at most {_MAX_DAYS} days.", param="from")
        kept_since = int(time.time()) // HOUR * HOUR - self._retention
        if self._redis is not None and any(span == HOUR and at < kept_since for at, span in slots(start, end)):
            raise InvalidRequest(f"Hourly spend is kept for {self._retention // DAY} days: before {iso(kept_since)} "
                                 "`from` and `to` must fall on whole days (UTC).", param="from")

    async def _read(self, names: list[str]) -> list[dict[bytes, bytes]]:
        assert self._redis is not None
        client = self._redis.client

        async def read() -> list[dict[bytes, bytes]]:
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self._prefix + name)
            return list(await pipe.execute())

        contents = await self._redis.call(read, None, probe=True)
        if contents is None:
            raise Unavailable("The spend store (Redis) is not answering.", code="spend_unavailable")
        return contents


def period_range(period: str, now: float) -> tuple[int, int]:
    """`today` or `month` (UTC, the whole day or calendar month containing now)."""
    tm = time.gmtime(now)
    if period == "today":
        start = calendar.timegm((tm.tm_year, tm.tm_mon, tm.tm_mday, 0, 0, 0))
        return start, start + DAY
    if period == "month":
        year, month = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
        return calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0)), calendar.timegm((year, month, 1, 0, 0, 0))
    raise InvalidRequest("`period` is `today` or `month` (or give `from` and `to`).", param="period")

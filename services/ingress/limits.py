"""Per-key limits: requests and tokens per window (GCRA), and a spend budget per period.

Each limit is one number per key, its "theoretical arrival time" (TAT): requests move it forward by
`window / rpm` each, tokens by `tokens * window / tpm`; it never lags behind now. A request is admitted
while the requests TAT stays within one window of now (so `rpm` requests may arrive at once, then one
every `window / rpm`), while the tokens TAT is less than a window ahead (tokens used so far are under
`tpm`: checked before the call, charged with the answer's real usage after it) and while the period's
spend is under the budget. The same rules run in Redis (limits_redis.py) for limits shared by every
ingress replica, and here, per process, when there is no Redis or it cannot be reached.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shared import metrics
from shared.config import ApiKey, Config
from shared.errors import GatewayError, QuotaExceeded, RateLimited

if TYPE_CHECKING:
    from services.ingress.limits_redis import RedisLimits

log = logging.getLogger("llm_edge.ingress.limits")

Limit = Literal["requests", "tokens", "budget"]


@dataclass(frozen=True, slots=True)
class Rule:
    """A key's limits in the units the arithmetic uses."""

    name: str
    window: float
    rpm: int | None
    tpm: int | None
    budget: float | None

    @classmethod
    def of(cls, key: ApiKey, window: float) -> Rule:
        return cls(key.name, window, key.rpm, key.tpm, key.budget_usd)

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.budget is not None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A key's state as the admission saw it (after counting the request when it was admitted)."""

    now: float
    requests_tat: float
    tokens_tat: float
    spent: float
    denied: Limit | None = None


def verdict(rule: Rule, now: float, requests_tat: float, tokens_tat: float, spent: float) -> Limit | None:
    """Which limit refuses a new request, or None. (limits_redis.py's script applies the same rules.)"""
    if rule.budget is not None and spent >= rule.budget:
        return "budget"
    if rule.tpm is not None and tokens_tat - now >= rule.window:
        return "tokens"
    if rule.rpm is not None and max(requests_tat, now) + rule.window / rule.rpm - now > rule.window + 1e-9:
        return "requests"
    return None


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it in x-ratelimit-reset-*: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def headers(rule: Rule, snap: Snapshot) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits the key has."""
    out: dict[str, str] = {}
    for kind, limit, tat in (("requests", rule.rpm, snap.requests_tat), ("tokens", rule.tpm, snap.tokens_tat)):
        if limit is None:
            continue
        ahead = max(0.0, tat - snap.now)
        used = ahead * limit / rule.window
        out[f"x-ratelimit-limit-{kind}"] = str(limit)
        out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(limit - used + 1e-9)))
        out[f"x-ratelimit-reset-{kind}"] = go_duration(ahead)
    return out


def retry_after(rule: Rule, snap: Snapshot, period_end: float | None) -> float | None:
    """Seconds until a refused request would be admitted (None: not by waiting)."""
    waits = []
    if rule.rpm is not None:
        waits.append(snap.requests_tat + rule.window / rule.rpm - snap.now - rule.window)
    if rule.tpm is not None:
        waits.append(snap.tokens_tat - snap.now - rule.window)
    if snap.denied == "budget":
        return None if period_end is None else max(1.0, period_end - time.time())
    return max(0.001, *waits)


def refusal(rule: Rule, snap: Snapshot, period_end: float | None) -> GatewayError:
    """The error a refused request gets, worded like OpenAI's (the key's name, never the key)."""
    wait = retry_after(rule, snap, period_end)
    if snap.denied == "budget":
        return QuotaExceeded(
            f"You exceeded the budget of key '{rule.name}' (${rule.budget:g})"
            + ("; it renews with the next period." if period_end is not None else "."),
            retry_after=wait,
        )
    if snap.denied == "tokens":
        used = max(0.0, snap.tokens_tat - snap.now) * (rule.tpm or 0) / rule.window
        what = f"tokens per min (TPM): Limit {rule.tpm}, Used {math.ceil(used)}"
    else:
        what = f"requests per min (RPM): Limit {rule.rpm}, Used {rule.rpm}, Requested 1"
    return RateLimited(
        f"Rate limit reached for key '{rule.name}' on {what}. Please try again in {go_duration(wait or 0)}.",
        error_type=snap.denied, retry_after=wait,
    )


def period(kind: str, now: float) -> tuple[str, float | None]:
    """The budget period containing `now` (wall clock): its name and when it ends (None: never)."""
    if kind == "total":
        return "total", None
    tm = time.gmtime(now)
    year, month = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
    return f"{tm.tm_year:04d}-{tm.tm_mon:02d}", float(calendar.timegm((year, month, 1, 0, 0, 0)))


class _State:
    __slots__ = ("period", "requests_tat", "spent", "tokens_tat")

    def __init__(self) -> None:
        self.requests_tat = 0.0
        self.tokens_tat = 0.0
        self.spent = 0.0
        self.period = ""


class LocalLimits:
    """The limits of one process (monotonic clock). With Redis it shadows this process's traffic, so
    that a fallback starts from what this replica has used rather than from nothing."""

    def __init__(self, budget_period: str) -> None:
        self._states: dict[str, _State] = {}
        self._budget_period = budget_period

    def _state(self, rule: Rule, budget_period: str) -> _State:
        state = self._states.get(rule.name)
        if state is None:
            state = self._states[rule.name] = _State()
        if state.period != budget_period:
            state.period, state.spent = budget_period, 0.0
        return state

    def admit(self, rule: Rule, budget_period: str, force: bool = False) -> Snapshot:
        """Count a request unless a limit refuses it (`force`: count it anyway, capped at one window)."""
        now = time.monotonic()
        state = self._state(rule, budget_period)
        denied = None if force else verdict(rule, now, state.requests_tat, state.tokens_tat, state.spent)
        if denied is None and rule.rpm is not None:
            state.requests_tat = min(max(state.requests_tat, now) + rule.window / rule.rpm, now + rule.window)
        return Snapshot(now, max(state.requests_tat, now), max(state.tokens_tat, now), state.spent, denied)

    def charge(self, rule: Rule, budget_period: str, tokens: int, cost: float) -> None:
        state = self._state(rule, budget_period)
        if rule.tpm is not None and tokens > 0:
            state.tokens_tat = max(state.tokens_tat, time.monotonic()) + tokens * rule.window / rule.tpm
        state.spent += cost


class Limiter:
    """Admission before the call, charges after it; Redis when configured, this process otherwise."""

    def __init__(self, config: Config, redis: RedisLimits | None) -> None:
        self.window = config.limits.window_seconds
        self.budget_period = config.limits.budget_period
        self.local = LocalLimits(self.budget_period)
        self.redis = redis
        self._pending: dict[str, tuple[Rule, str, int, float]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def admit(self, rule: Rule) -> Snapshot:
        """The key's state after counting this request; raises the refusal when a limit says no."""
        name, end = period(self.budget_period, time.time()) if rule.budget is not None else ("", None)
        snap = None
        if self.redis is not None:
            snap = await self.redis.admit(rule, name)
            if snap is None:
                metrics.LIMITER_FALLBACKS.inc()
            elif snap.denied is None:
                self.local.admit(rule, name, force=True)
        if snap is None:
            snap = self.local.admit(rule, name)
        if snap.denied is not None:
            metrics.RATE_LIMITED.labels(rule.name, snap.denied).inc()
            raise Refused(snap, refusal(rule, snap, end))
        return snap

    def charge(self, rule: Rule, tokens: int, cost: float) -> None:
        """Count an answer's real usage; never waits (the Redis write runs in the background)."""
        if (rule.tpm is None or tokens <= 0) and (rule.budget is None or cost <= 0):
            return
        tokens = tokens if rule.tpm is not None else 0
        cost = cost if rule.budget is not None else 0.0
        name = period(self.budget_period, time.time())[0] if rule.budget is not None else ""
        self.local.charge(rule, name, tokens, cost)
        if self.redis is None:
            return
        # One pending entry per key: charges that arrive while a write is in flight are added together,
        # so the backlog is bounded by the number of keys whatever the request rate.
        if (pending := self._pending.get(rule.name)) is not None and pending[1] == name:
            tokens, cost = tokens + pending[2], cost + pending[3]
        self._pending[rule.name] = (rule, name, tokens, cost)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        assert self.redis is not None
        while self._pending:
            batch, self._pending = self._pending, {}
            await asyncio.gather(*(self.redis.charge(*entry) for entry in batch.values()))

    async def settle(self) -> None:
        """Wait until every charge made so far has reached the store (tests, shutdown)."""
        while self._flusher is not None and not self._flusher.done():
            await self._flusher

    async def close(self) -> None:
        await self.settle()
        if self.redis is not None:
            await self.redis.close()


class Refused(Exception):
    """Admission refused: carries the snapshot (for the headers) and the error for the client."""

    def __init__(self, snap: Snapshot, error: GatewayError) -> None:
        super().__init__(error.message)
        self.snap = snap
        self.error = error


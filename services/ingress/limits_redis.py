"""The limits' counters in Redis, shared by every ingress replica: one Lua script per admission (one
round trip, atomic, on Redis's clock so replicas' clocks never disagree) and one per charge.

Redis being down or slow never fails or stalls a request: every call is bounded by a timeout, a failure
makes the caller fall back to its per-process limits, and Redis is left alone for a short back-off
instead of each request paying the timeout again.
"""

from __future__ import annotations

import logging
from typing import cast

from services.ingress.limits import Limit, Rule, Snapshot
from shared.redis_backoff import RedisBackoff

log = logging.getLogger("llm_edge.ingress.limits")

# Kept a little longer than the longest budget period it counts (a calendar month).
_BUDGET_TTL_SECONDS = 35 * 86400

# The rules of limits.verdict, applied where the counters are. KEYS: requests TAT, tokens TAT, spend.
# ARGV: window seconds, rpm, tpm (0: none), budget (negative: none). Returns the verdict ("" when
# admitted) and the state after it, as strings (Lua numbers would be cut to integers).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window, rpm, tpm, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local req = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local tok = now
if tpm > 0 then tok = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now) end
local spent = 0
if budget >= 0 then spent = tonumber(redis.call('GET', KEYS[3]) or '0') end
local denied = ''
if budget >= 0 and spent >= budget then denied = 'budget'
elseif tpm > 0 and tok - now >= window then denied = 'tokens'
elseif rpm > 0 and req + window / rpm - now > window + 1e-9 then denied = 'requests'
end
if denied == '' and rpm > 0 then
  req = req + window / rpm
  redis.call('SET', KEYS[1], string.format('%.6f', req), 'PX', math.ceil((req - now) * 1000) + 1)
end
return {denied, string.format('%.6f', now), string.format('%.6f', req), string.format('%.6f', tok),
        string.format('%.10g', spent)}
"""

# KEYS: tokens TAT, spend. ARGV: window seconds, tpm (0: none), tokens, cost, spend TTL seconds (0: none).
_CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window, tpm, tokens, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if tpm > 0 and tokens > 0 then
  local tok = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + tokens * window / tpm
  redis.call('SET', KEYS[1], string.format('%.6f', tok), 'PX', math.ceil((tok - now) * 1000) + 1)
end
if cost > 0 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[4])
  if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
end
return 1
"""


class RedisLimits:
    def __init__(self, url: str, timeout: float, prefix: str) -> None:
        self._redis = RedisBackoff(
            url,
            timeout,
            log,
            down="redis unavailable for rate limits, enforcing them per process",
            up="redis is back for rate limits",
        )
        self._prefix = f"{prefix}:limits:"
        self._admit = self._redis.client.register_script(_ADMIT)
        self._charge = self._redis.client.register_script(_CHARGE)

    @property
    def healthy(self) -> bool:
        return self._redis.healthy

    async def ping(self) -> bool:
        """Whether Redis answers now (for /health), within the configured timeout."""

        async def ping() -> bool:
            await self._redis.client.ping()
            return True

        return await self._redis.call(ping, False, probe=True)

    def _keys(self, rule: Rule, period: str) -> list[str]:
        # One hash tag per key name: a key's counters sit in one Redis Cluster slot, as a script needs.
        base = f"{self._prefix}{{{rule.name}}}:"
        return [base + "requests", base + "tokens", f"{base}usd:{period}"]

    async def admit(self, rule: Rule, period: str) -> Snapshot | None:
        """The key's state after counting the request; None when Redis cannot answer (fall back)."""
        args = [rule.window, rule.rpm or 0, rule.tpm or 0, -1 if rule.budget is None else rule.budget]
        reply = await self._redis.call(lambda: self._admit(keys=self._keys(rule, period), args=args), None)
        if reply is None:
            return None
        denied, now, req, tok, spent = reply
        refused = cast("Limit | None", denied.decode() or None)
        return Snapshot(float(now), float(req), float(tok), float(spent), refused)

    async def charge(self, rule: Rule, period: str, tokens: int, cost: float) -> None:
        """Counts an answered request's tokens and cost; when Redis cannot, only the local limits have."""
        keys = self._keys(rule, period)[1:]
        ttl = _BUDGET_TTL_SECONDS if period != "total" else 0
        args: list[float | str] = [rule.window, rule.tpm or 0, tokens, f"{cost:.12f}", ttl]
        await self._redis.call(lambda: self._charge(keys=keys, args=args), None)

    async def close(self) -> None:
        await self._redis.close()

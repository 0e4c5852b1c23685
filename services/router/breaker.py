"""Circuit breakers, one per target: closed -> open on consecutive failures or an error rate over a
window; open -> half-open after a cooldown, letting one probe through; the probe closes or reopens it.

A breaker is there to send calls elsewhere. When a model has nowhere else to go (every target open), the
router asks for a *last resort* probe: the breaker lets one call through without waiting out its cooldown
(a new one once the last has been out `probe_interval_seconds`), so the model comes back one call after
its provider does, while every other caller still gets an immediate 503. This is Envoy's panic routing,
trickled: a cooldown would keep a single-target model down 15 s after a 2 s burst of 5xx.

Counted across router replicas (docs/ROUTING.md): each replica counts its own calls (`record`) and the
observations the others broadcast (`count_remote`): every failure, and the first success after failures
(which ends a run of failures everywhere), each carrying the successes seen since that replica's last
observation. Changes of state are returned as events so the router can broadcast them: every replica
applies the same state.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from shared.config import BreakerConfig

State = Literal["closed", "open", "half_open"]


class Breaker:
    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state: State = "closed"
        self.opened_at = 0.0
        self.consecutive = 0
        # (when, successes, failures) in the window; the totals kept in step so a check costs O(1).
        self.calls: deque[tuple[float, int, int]] = deque()
        self.total = 0
        self.failures = 0
        self.probing = False
        self.probe_started = 0.0
        # This replica's successes not yet told to the others, by the second they came in (bounded by the
        # window: older ones no longer count anywhere).
        self.unreported: deque[tuple[int, int]] = deque()

    def allow(self, now: float, last_resort: bool = False) -> bool:
        """May a request go to this target now? In half-open, exactly one probe is let through; as a
        `last_resort` (no other target can take it), without waiting for the cooldown."""
        if not (self.available(now) or (last_resort and self.can_probe(now))):
            return False
        if self.state == "closed":
            return True
        self.state = "half_open"
        self.probing = True
        self.probe_started = now
        return True

    def available(self, now: float) -> bool:
        """Like `allow` but without taking the probe: for ordering and health."""
        if self.state == "open":
            return now - self.opened_at >= self.config.cooldown_seconds
        return not (self.state == "half_open" and self.probing)

    def can_probe(self, now: float) -> bool:
        """Could a last-resort probe go now: no probe out, or the last one out for a probe interval (a
        hung call must not keep the model shut until its timeout)."""
        return (self.state == "closed" or not self.probing
                or now - self.probe_started >= self.config.probe_interval_seconds)

    def release(self) -> None:
        """A call let through by `allow` ended with no verdict on the target (a dead worker, the client's
        own deadline): a half-open breaker lets the next call probe instead."""
        self.probing = False

    def worth_reporting(self, ok: bool) -> bool:
        """Should this outcome (about to be recorded) be broadcast to the other replicas? Every failure
        while closed, and the first success after failures; other successes ride along with the next."""
        return self.state == "closed" and (not ok or self.consecutive > 0)

    def take_unreported(self, now: float) -> int:
        """The successes to tell the others with an observation: those of the last window."""
        count = sum(n for second, n in self.unreported if now - second <= self.config.window_seconds)
        self.unreported.clear()
        return count

    def record(self, ok: bool, now: float, reported: bool = False) -> State | None:
        """Count one call's outcome; the new state when it changed. A success not `reported` to the other
        replicas is remembered, to be told with the next observation."""
        before = self.state
        self.probing = False
        if self.state == "half_open":
            self._set("closed" if ok else "open", now)
            return self.state if self.state != before else None
        if ok and not reported:
            second = int(now)
            if self.unreported and self.unreported[-1][0] == second:
                self.unreported[-1] = (second, self.unreported[-1][1] + 1)
            else:
                self.unreported.append((second, 1))
                while now - self.unreported[0][0] > self.config.window_seconds:
                    self.unreported.popleft()
        return self._count(now, ok, 1 if ok else 0, 0 if ok else 1)

    def count_remote(self, failed: bool, successes: int, now: float) -> State | None:
        """Count another replica's observation: `successes` calls that succeeded, then one that failed
        (`failed`) or succeeded after failures. Only a closed breaker counts: the other states change by
        the events of the replica that probes."""
        if self.state != "closed":
            return None
        return self._count(now, not failed, successes + (0 if failed else 1), 1 if failed else 0)

    def _count(self, now: float, ok: bool, successes: int, failures: int) -> State | None:
        before = self.state
        self.calls.append((now, successes, failures))
        self.total += successes + failures
        self.failures += failures
        while self.calls and now - self.calls[0][0] > self.config.window_seconds:
            _, gone_ok, gone_failed = self.calls.popleft()
            self.total -= gone_ok + gone_failed
            self.failures -= gone_failed
        self.consecutive = 0 if ok else self.consecutive + 1
        rate_tripped = (self.total >= self.config.min_calls
                        and self.failures / self.total >= self.config.error_rate)
        if self.state == "closed" and (self.consecutive >= self.config.consecutive_failures or rate_tripped):
            self._set("open", now)
        return self.state if self.state != before else None

    def apply(self, state: State, now: float) -> None:
        """Adopt a state another replica decided."""
        if state != self.state:
            self._set(state, now)

    def _set(self, state: State, now: float) -> None:
        self.state = state
        self.probing = False
        if state == "open":
            self.opened_at = now
        if state == "closed":
            self.consecutive = 0
            self.calls.clear()
            self.total = 0
            self.failures = 0

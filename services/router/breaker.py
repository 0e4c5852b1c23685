"""Circuit breakers, one per target: closed -> open on consecutive failures or an error rate over a
window; open -> half-open after a cooldown, letting one probe through; the probe closes or reopens it.

Changes are returned as events so the router can broadcast them: every replica applies the same state.
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
        self.calls: deque[tuple[float, bool]] = deque()
        self.failures = 0  # failed calls in `calls`, kept in step so a check costs O(1), not O(window)
        self.probing = False

    def allow(self, now: float) -> bool:
        """May a request go to this target now? In half-open, exactly one probe is let through."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if now - self.opened_at < self.config.cooldown_seconds:
                return False
            self.state = "half_open"
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def available(self, now: float) -> bool:
        """Like `allow` but without taking the probe: for ordering and health."""
        if self.state == "open":
            return now - self.opened_at >= self.config.cooldown_seconds
        return not (self.state == "half_open" and self.probing)

    def release(self) -> None:
        """A call let through by `allow` ended with no verdict on the target (a dead worker, the client's
        own deadline): a half-open breaker lets the next call probe instead."""
        self.probing = False

    def record(self, ok: bool, now: float) -> State | None:
        """Count one call's outcome; the new state when it changed."""
        before = self.state
        self.probing = False
        if self.state == "half_open":
            self._set("closed" if ok else "open", now)
            return self.state if self.state != before else None
        self.calls.append((now, ok))
        self.failures += not ok
        while self.calls and now - self.calls[0][0] > self.config.window_seconds:
            self.failures -= not self.calls.popleft()[1]
        self.consecutive = 0 if ok else self.consecutive + 1
        rate_tripped = (len(self.calls) >= self.config.min_calls
                        and self.failures / len(self.calls) >= self.config.error_rate)
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
            self.failures = 0

"""How long to wait before retrying a target: exponential backoff with full jitter, or the provider's
`Retry-After` when it gave one; never past the deadline (None: do not retry, move on)."""

from __future__ import annotations

import random

from shared.config import RetryConfig


def backoff(attempt: int, config: RetryConfig, rng: random.Random) -> float:
    """Attempt 1 is the first retry: uniform in [0, min(max, base * 2**(attempt-1))]."""
    ceiling = min(config.backoff_max_seconds, config.backoff_base_seconds * 2 ** (attempt - 1))
    return rng.uniform(0.0, ceiling)


def wait_before_retry(
    attempt: int, retry_after: float | None, time_left: float, config: RetryConfig, rng: random.Random
) -> float | None:
    if retry_after is not None:
        if retry_after > config.max_retry_after_seconds:
            return None
        delay = retry_after
    else:
        delay = backoff(attempt, config, rng)
    # Leave the retry itself some of the remaining time; otherwise moving on is the better use of it.
    return delay if delay < time_left * 0.5 else None

"""Routing strategies over tables of target states, breaker transitions, backoff bounds."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.router.breaker import Breaker
from services.router.retry import backoff, wait_before_retry
from services.router.strategy import TargetStats, order, price
from shared.config import BreakerConfig, RetryConfig, Target

A = Target(provider="a", model="gpt-4o")
B = Target(provider="b", model="gpt-4o-mini")
C = Target(provider="c", model="claude-sonnet-4-5")


def keys(targets: list[Target]) -> list[str]:
    return [t.provider for t in targets]


def test_fallback_keeps_the_configured_order() -> None:
    assert keys(order("fallback", [A, B, C], {}, random.Random(1))) == ["a", "b", "c"]


def test_weighted_draws_first_targets_by_weight_and_keeps_the_rest_as_fallbacks() -> None:
    heavy, light = Target(provider="h", model="m", weight=3), Target(provider="l", model="m", weight=1)
    rng = random.Random(7)
    firsts = Counter(order("weighted", [heavy, light], {}, rng)[0].provider for _ in range(10_000))
    assert abs(firsts["h"] / 10_000 - 0.75) < 0.02
    assert sorted(keys(order("weighted", [heavy, light], {}, rng))) == ["h", "l"]


def test_weighted_with_zero_weight_is_last_resort_only() -> None:
    off = Target(provider="off", model="m", weight=0)
    for seed in range(50):
        assert keys(order("weighted", [off, A, B], {}, random.Random(seed)))[-1] == "off"


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        ({"a/gpt-4o": 0.5, "b/gpt-4o-mini": 0.1, "c/claude-sonnet-4-5": 0.3}, ["b", "c", "a"]),
        ({"a/gpt-4o": 0.5, "b/gpt-4o-mini": 0.1}, ["c", "b", "a"]),  # never measured: tried first
    ],
)
def test_least_latency_orders_by_moving_average(latencies: dict[str, float], expected: list[str]) -> None:
    stats = {key: TargetStats(latency=value) for key, value in latencies.items()}
    assert keys(order("least_latency", [A, B, C], stats, random.Random(1))) == expected


def test_moving_average_follows_observations() -> None:
    stats = TargetStats()
    stats.observe(1.0)
    for _ in range(30):
        stats.observe(0.1)
    assert stats.latency == pytest.approx(0.1, abs=0.01)


def test_lowest_cost_uses_the_pricing_table_and_configured_prices() -> None:
    assert keys(order("lowest_cost", [A, C, B], {}, random.Random(1))) == ["b", "a", "c"]
    cheap = Target(provider="x", model="unknown-model", input_price=0.01, output_price=0.01)
    unpriced = Target(provider="y", model="unknown-model")
    assert keys(order("lowest_cost", [unpriced, A, cheap], {}, random.Random(1))) == ["x", "a", "y"]
    assert price(unpriced) is None


def test_hybrid_balances_latency_against_price() -> None:
    stats = {"a/gpt-4o": TargetStats(latency=0.1), "b/gpt-4o-mini": TargetStats(latency=1.0)}
    assert keys(order("hybrid", [A, B], stats, random.Random(1), latency_weight=1.0)) == ["a", "b"]
    assert keys(order("hybrid", [A, B], stats, random.Random(1), latency_weight=0.0)) == ["b", "a"]


CONFIG = BreakerConfig(consecutive_failures=3, error_rate=0.5, window_seconds=10, min_calls=10,
                       cooldown_seconds=5)


def test_breaker_opens_on_consecutive_failures() -> None:
    breaker = Breaker(CONFIG)
    assert breaker.record(False, 0) is None and breaker.record(False, 1) is None
    assert breaker.record(False, 2) == "open"
    assert not breaker.allow(3)


def test_breaker_opens_on_error_rate_over_the_window() -> None:
    breaker = Breaker(CONFIG)
    for i in range(10):
        breaker.record(i % 2 == 0, i * 0.1)  # alternating: never 3 in a row, but half fail
    assert breaker.state == "open"


def test_old_calls_leave_the_window() -> None:
    breaker = Breaker(CONFIG)
    for i in range(9):
        breaker.record(i % 2 == 0, 0)
    breaker.record(True, 20)  # the first nine are out of the 10 s window by now
    assert breaker.state == "closed"


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    breaker = Breaker(CONFIG)
    for t in range(3):
        breaker.record(False, t)
    assert not breaker.allow(6.9)
    assert breaker.allow(7.1)  # cooldown over: one probe
    assert breaker.state == "half_open"
    assert not breaker.allow(7.2)  # and only one
    assert breaker.record(True, 7.5) == "closed"
    assert breaker.allow(7.6)


def test_failed_probe_reopens() -> None:
    breaker = Breaker(CONFIG)
    for t in range(3):
        breaker.record(False, t)
    assert breaker.allow(8)
    assert breaker.record(False, 8.5) == "open"
    assert not breaker.allow(9)
    assert breaker.allow(13.6)


def test_a_last_resort_probe_skips_the_cooldown_one_at_a_time() -> None:
    """With nowhere else to go, the model is not shut for a cooldown: one call at a time still probes."""
    breaker = Breaker(CONFIG)  # probe_interval_seconds: 1.0 by default
    for t in range(3):
        breaker.record(False, t)
    assert not breaker.allow(2.1)  # an ordinary call waits out the cooldown (5 s)...
    assert breaker.allow(2.1, last_resort=True)  # ...a last resort probes at once
    assert not breaker.allow(2.5, last_resort=True)  # one probe out: the others are refused
    assert breaker.record(False, 2.6) == "open"  # it failed
    assert breaker.allow(2.7, last_resort=True)  # the next probe need not wait
    assert breaker.record(True, 2.8) == "closed"  # the provider is back: so is the model
    assert breaker.allow(2.9)


def test_a_hung_last_resort_probe_does_not_hold_the_model_shut() -> None:
    breaker = Breaker(CONFIG)
    for t in range(3):
        breaker.record(False, t)
    assert breaker.allow(3, last_resort=True)  # this probe hangs
    assert not breaker.can_probe(3.9)
    assert breaker.can_probe(4.0) and breaker.allow(4.0, last_resort=True)  # a probe interval later, another
    assert breaker.record(True, 4.1) == "closed"


def test_breaker_adopts_a_state_from_another_replica() -> None:
    breaker = Breaker(CONFIG)
    breaker.apply("open", 100)
    assert not breaker.allow(101) and breaker.allow(105.5)


RETRY = RetryConfig(attempts=3, backoff_base_seconds=0.5, backoff_max_seconds=4, max_retry_after_seconds=10)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)])
def test_backoff_stays_within_its_exponential_bound(attempt: int, ceiling: float) -> None:
    rng = random.Random(3)
    delays = [backoff(attempt, RETRY, rng) for _ in range(2000)]
    assert min(delays) >= 0 and max(delays) <= ceiling
    assert max(delays) > ceiling * 0.9  # jitter spreads over the whole range


def test_retry_after_is_honoured_within_limits() -> None:
    rng = random.Random(1)
    assert wait_before_retry(1, 2.0, time_left=60, config=RETRY, rng=rng) == 2.0
    assert wait_before_retry(1, 11.0, time_left=60, config=RETRY, rng=rng) is None  # too long: move on
    assert wait_before_retry(1, 2.0, time_left=3, config=RETRY, rng=rng) is None  # past the deadline
    assert wait_before_retry(1, None, time_left=60, config=RETRY, rng=rng) <= 0.5  # type: ignore[operator]


def test_least_latency_re_measures_other_targets_now_and_then() -> None:
    stats = {"a/gpt-4o": TargetStats(latency=0.5), "b/gpt-4o-mini": TargetStats(latency=0.1)}
    rng = random.Random(11)
    firsts = Counter(order("least_latency", [A, B], stats, rng)[0].provider for _ in range(10_000))
    assert 0.03 < firsts["a"] / 10_000 < 0.07  # about EXPLORE (5 %) of requests try the slower one


def test_another_replicas_observations_count_here() -> None:
    breaker = Breaker(CONFIG)
    breaker.record(False, 0)
    assert breaker.count_remote(failed=True, successes=0, now=1) is None
    assert breaker.count_remote(failed=True, successes=0, now=2) == "open"  # 1 here + 2 there = 3 in a row


def test_a_success_elsewhere_ends_a_run_of_failures_and_successes_ride_along() -> None:
    breaker = Breaker(CONFIG)
    breaker.record(False, 0)
    breaker.record(False, 1)
    breaker.count_remote(failed=False, successes=0, now=2)  # the first success after failures, elsewhere
    assert breaker.consecutive == 0
    for t in range(3, 8):
        assert not breaker.worth_reporting(True)  # no run of failures: successes are not broadcast...
        breaker.record(True, t)
    assert breaker.worth_reporting(False)
    assert breaker.take_unreported(8) == 5  # ...but told with the next failure
    assert breaker.take_unreported(8) == 0

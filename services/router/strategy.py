"""Routing strategies: the order in which to try a model's targets, given what this replica knows.

Pure functions over `TargetStats` so they are tested over tables of states. Targets whose breaker is
open are dropped by the caller before ordering.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.config import Strategy, Target
from shared.pricing import configured, table

# A target never measured is assumed this fast, so it gets tried and measured.
_UNMEASURED_SECONDS = 0.0
_EWMA_ALPHA = 0.2
# Share of least-latency requests that try a random other target first, so that a target measured slow
# once (a cold start, a blip) is measured again instead of being avoided for ever.
EXPLORE = 0.05
# Tokens assumed per call when comparing prices (input-heavy, as chat traffic is).
_TYPICAL_INPUT, _TYPICAL_OUTPUT = 1000, 250


@dataclass
class TargetStats:
    """What one replica has observed of one target."""

    latency: float | None = None  # moving average, seconds (time to first chunk for streams)

    def observe(self, seconds: float) -> None:
        self.latency = seconds if self.latency is None else (
            _EWMA_ALPHA * seconds + (1 - _EWMA_ALPHA) * self.latency)


def price(target: Target) -> float | None:
    """USD for a typical call on `target` (configured prices first, then the pricing table)."""
    known = configured(table().price(target.model), target.input_price, target.output_price)
    if known is None:
        return None
    return (_TYPICAL_INPUT * known.input + _TYPICAL_OUTPUT * known.output) * 1e-6


def order(
    strategy: Strategy, targets: list[Target], stats: dict[str, TargetStats], rng: random.Random,
    latency_weight: float = 0.5,
) -> list[Target]:
    if len(targets) <= 1 or strategy == "fallback":
        return list(targets)
    if strategy == "weighted":
        return _weighted(targets, rng)
    if strategy == "least_latency":
        ranked = sorted(targets, key=lambda t: _latency(t, stats))
        if rng.random() < EXPLORE:
            explored = rng.choice(ranked[1:])
            ranked.remove(explored)
            ranked.insert(0, explored)
        return ranked
    if strategy == "lowest_cost":
        return sorted(targets, key=lambda t: (price(t) is None, price(t) or 0.0))
    return _hybrid(targets, stats, latency_weight)


def _latency(target: Target, stats: dict[str, TargetStats]) -> float:
    seen = stats.get(target.key)
    return _UNMEASURED_SECONDS if seen is None or seen.latency is None else seen.latency


def _weighted(targets: list[Target], rng: random.Random) -> list[Target]:
    """A weighted draw without replacement: the first by weight, the rest as fallbacks, also by weight."""
    pool = [t for t in targets if t.weight > 0]
    picked: list[Target] = []
    while pool:
        choice = rng.choices(pool, weights=[t.weight for t in pool])[0]
        picked.append(choice)
        pool.remove(choice)
    return picked + [t for t in targets if t.weight <= 0]


def _hybrid(targets: list[Target], stats: dict[str, TargetStats], latency_weight: float) -> list[Target]:
    """Latency and price each scaled to 0..1 across the candidates, mixed by `latency_weight`."""
    latencies = [_latency(t, stats) for t in targets]
    prices = [price(t) for t in targets]
    known = [p for p in prices if p is not None]
    top_price = max(known) if known else 0.0
    prices_filled = [p if p is not None else top_price for p in prices]

    def scaled(values: list[float]) -> list[float]:
        low, high = min(values), max(values)
        return [0.0 if high == low else (v - low) / (high - low) for v in values]

    scores = [latency_weight * lat + (1 - latency_weight) * cost
              for lat, cost in zip(scaled(latencies), scaled(prices_filled), strict=True)]
    return [t for _, _, t in sorted(zip(scores, range(len(targets)), targets, strict=True))]

"""The per-request metrics (plain numbers, shared/metrics.py) expose exactly what prometheus_client's own
Counter, Gauge and Histogram would for the same updates: names, types, labels, buckets and sums."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from shared import metrics


def _exposition(registry: CollectorRegistry) -> str:
    # `_created` is each child's creation time: the two registries' children are made moments apart.
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def test_the_fast_metrics_expose_what_prometheus_clients_own_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counters = (metrics.FastCounter("t_requests", "Requests", ["provider", "status"], registry=ours),
                Counter("t_requests", "Requests", ["provider", "status"], registry=theirs))
    gauges = (metrics.FastGauge("t_active", "In flight", ["service"], registry=ours),
              Gauge("t_active", "In flight", ["service"], registry=theirs))
    buckets = (0.005, 0.01, 0.05, 1)
    histograms = (metrics.FastHistogram("t_seconds", "Duration", ["model"], buckets=buckets, registry=ours),
                  Histogram("t_seconds", "Duration", ["model"], buckets=buckets, registry=theirs))
    for counter in counters:
        counter.labels("a", "200").inc()
        counter.labels("a", "200").inc(2.5)
        counter.labels("b", "502").inc()
    for gauge in gauges:
        gauge.labels("ingress").inc()
        gauge.labels("ingress").inc()
        gauge.labels("ingress").dec()
        gauge.labels("router").set(4)
    for histogram in histograms:
        for value in (0.001, 0.005, 0.0051, 0.02, 0.05, 0.7, 3.0):  # on a bound, between, and past the last
            histogram.labels("m").observe(value)

    assert _exposition(ours) == _exposition(theirs)
    assert ours.get_sample_value("t_seconds_bucket", {"model": "m", "le": "0.005"}) == 2  # `le` is inclusive
    assert ours.get_sample_value("t_seconds_bucket", {"model": "m", "le": "+Inf"}) == 7
    assert ours.get_sample_value("t_requests_total", {"provider": "a", "status": "200"}) == 3.5


def test_a_fast_metric_refuses_what_prometheus_client_refuses() -> None:
    registry = CollectorRegistry()
    counter = metrics.FastCounter("t_refused", "Refused", ["a", "b"], registry=registry)
    with pytest.raises(ValueError):
        counter.labels("only one")
    with pytest.raises(ValueError):
        counter.labels("x", "y").inc(-1)
    with pytest.raises(ValueError):  # the registry's own check: a name registered twice
        metrics.FastCounter("t_refused", "Again", ["a", "b"], registry=registry)

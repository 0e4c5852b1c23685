"""Spend's pure parts: which buckets hold a range, the named periods, the query's parameters, and the
per-process counting without Redis (an exact sum, by any grouping)."""

from __future__ import annotations

import calendar
import time

import pytest

from services.ingress.admin import dimensions, spend_range
from services.ingress.spend import DAY, HOUR, Spend, buckets, period_range, slots
from services.providers.settings import SETTINGS
from shared.config import build
from shared.errors import InvalidRequest
from shared.messages import PromptTokensDetails, Usage

MIDNIGHT = calendar.timegm((2026, 11, 29, 0, 0, 0))


def test_whole_days_are_read_from_day_buckets_and_the_rest_from_hours() -> None:
    assert buckets(MIDNIGHT, MIDNIGHT + DAY) == ["d:20261129"]
    assert buckets(MIDNIGHT - 2 * HOUR, MIDNIGHT + DAY + HOUR) == [
        "h:2026112822", "h:2026112823", "d:20261129", "h:2026113000"]
    assert buckets(MIDNIGHT + HOUR, MIDNIGHT + 3 * HOUR) == ["h:2026112901", "h:2026112902"]
    assert sum(span for _, span in slots(MIDNIGHT - 5 * HOUR, MIDNIGHT + 40 * DAY)) == 40 * DAY + 5 * HOUR


def test_named_periods_are_the_utc_day_and_calendar_month() -> None:
    now = MIDNIGHT + 13 * HOUR + 5
    assert period_range("today", now) == (MIDNIGHT, MIDNIGHT + DAY)
    november = (calendar.timegm((2026, 11, 1, 0, 0, 0)), calendar.timegm((2026, 12, 1, 0, 0, 0)))
    assert period_range("month", now) == november
    december = calendar.timegm((2026, 12, 31, 23, 0, 0))
    assert period_range("month", december)[1] == calendar.timegm((2027, 1, 1, 0, 0, 0))
    with pytest.raises(InvalidRequest):
        period_range("week", now)


def test_from_and_to_are_widened_to_whole_hours_and_read_in_any_usual_form() -> None:
    assert spend_range(None, "2026-11-29", "2026-11-30") == (MIDNIGHT, MIDNIGHT + DAY)
    assert spend_range(None, "2026-11-29T01:30:00Z", "2026-11-29T02:00:01+00:00") == (
        MIDNIGHT + HOUR, MIDNIGHT + 3 * HOUR)
    assert spend_range(None, str(MIDNIGHT + 10), str(MIDNIGHT + HOUR)) == (MIDNIGHT, MIDNIGHT + HOUR)
    assert spend_range(None, "2026-11-29T01:00:00+01:00", "2026-11-29T03:00") == (MIDNIGHT, MIDNIGHT + 3 * HOUR)
    for period, start, end in (("today", "2026-11-29", None), (None, "2026-11-29", None), (None, "soon", "later")):
        with pytest.raises(InvalidRequest):
            spend_range(period, start, end)


def test_group_by_is_a_list_of_known_dimensions_in_the_order_given() -> None:
    assert dimensions("model, key") == ("model", "key")
    for bad in ("", "key,key", "colour", "key,,colour"):
        with pytest.raises(InvalidRequest):
            dimensions(bad)


async def test_without_redis_the_counts_are_this_process_own_and_exact() -> None:
    spend = Spend(build({}, SETTINGS))
    now = int(time.time()) // HOUR * HOUR  # the range below holds this hour and the next
    cached = Usage(prompt_tokens=100, completion_tokens=5, total_tokens=105,
                   prompt_tokens_details=PromptTokensDetails(cached_tokens=40))
    for _ in range(1000):  # a thousand tenth-of-a-cent answers sum to exactly one dollar
        spend.record("alpha", "red", "gpt-4o", cached, 0.001)
    spend.record("beta", "blue", "gpt-4o", None, 0.25)
    spend.record("", "default", "mock", Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2), 0.0)
    report = await spend.report(now, now + 2 * HOUR, ("key",))
    assert report.durable is False
    rows = {row.key: row for row in report.data}
    assert rows["alpha"].cost_usd == 1.0 and rows["alpha"].requests == 1000
    assert (rows["alpha"].prompt_tokens, rows["alpha"].cached_tokens) == (100_000, 40_000)
    assert rows[None].requests == 1  # no key (an open gateway)
    assert report.total.cost_usd == 1.25 and report.total.requests == 1002
    by_model = await spend.report(now, now + 2 * HOUR, ("model", "tenant"))
    assert [(r.model, r.tenant, r.cost_usd) for r in by_model.data] == [
        ("gpt-4o", "red", 1.0), ("gpt-4o", "blue", 0.25), ("mock", "default", 0.0)]
    earlier = await spend.report(now - DAY, now, ("key",))
    assert earlier.data == [] and earlier.total.requests == 0

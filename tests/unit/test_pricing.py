"""Cost by hand against the shipped pricing table, cached input tokens included."""

from __future__ import annotations

import pytest

from shared.messages import PromptTokensDetails, Usage
from shared.pricing import table


def test_cost_matches_the_table_by_hand() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)
    # gpt-4o: $2.50 in, $10.00 out per million tokens
    assert table().cost("gpt-4o", usage) == pytest.approx(1000 * 2.50e-6 + 500 * 10.00e-6)


def test_cached_input_tokens_are_priced_at_the_cached_rate() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500,
                  prompt_tokens_details=PromptTokensDetails(cached_tokens=400))
    # claude-sonnet-4-5: $3.00 in, $0.30 cached, $15.00 out
    assert table().cost("claude-sonnet-4-5", usage) == pytest.approx(
        600 * 3.00e-6 + 400 * 0.30e-6 + 500 * 15.00e-6)


def test_dated_snapshots_take_the_longest_matching_name() -> None:
    assert table().price("gpt-4o-mini-2024-07-18") == table().models["gpt-4o-mini"]
    assert table().price("gpt-4o-2024-08-06") == table().models["gpt-4o"]


def test_unknown_models_are_unpriced() -> None:
    assert table().cost("llama-3-70b", Usage(prompt_tokens=10, completion_tokens=10)) is None


def test_the_table_says_where_it_comes_from() -> None:
    assert table().source and table().checked

"""Cost by hand against the shipped pricing table: cached reads, five-minute and one-hour cache writes,
long-prompt tiers, Bedrock's cross-region profiles, configured target prices; and every model the project
names has a price or is left out on purpose."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from services.providers.anthropic.adapter import MessageUsage
from services.providers.anthropic.adapter import unified_usage as anthropic_usage
from services.providers.bedrock.adapter import TokenUsage
from services.providers.bedrock.adapter import unified_usage as bedrock_usage
from shared.messages import PromptTokensDetails, Usage
from shared.pricing import configured, parse_prices_header, prices_header, table
from shared.routes import CONVENTIONS

ROOT = Path(__file__).resolve().parents[2]


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


def test_anthropic_cache_writes_cost_1_25x_for_five_minutes_and_2x_for_an_hour() -> None:
    # The usage Anthropic's prompt-caching docs print for "1-hour cache duration" (tests/fixtures/README.md):
    # 2048 uncached, 1800 read, 248 written (148 for 5 minutes, 100 for an hour), 503 out.
    reported = msgspec.json.decode(
        b'{"input_tokens": 2048, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": 248,'
        b' "output_tokens": 503,'
        b' "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100}}',
        type=MessageUsage)
    usage = anthropic_usage(reported)
    assert (usage.prompt_tokens, usage.cache_creation_tokens, usage.cache_creation_1h_tokens) == (4096, 248, 100)
    # claude-sonnet-4-5: $3 in, $3.75 5-minute write, $6 1-hour write, $0.30 read, $15 out
    assert table().cost("claude-sonnet-4-5-20250929", usage) == pytest.approx(
        2048 * 3e-6 + 1800 * 0.30e-6 + 148 * 3.75e-6 + 100 * 6e-6 + 503 * 15e-6)
    price = table().models["claude-sonnet-4-5"]
    assert price.cache_write == 1.25 * price.input and price.cache_write_1h == 2 * price.input


def test_bedrock_cache_writes_are_five_minute_writes() -> None:
    usage = bedrock_usage(TokenUsage(input_tokens=100, output_tokens=10, cache_read_input_tokens=200,
                                     cache_write_input_tokens=700))
    # global Claude Sonnet 4.5: $3 in, $3.75 write, $0.30 read, $15 out
    assert table().cost("global.anthropic.claude-sonnet-4-5-20250929-v1:0", usage) == pytest.approx(
        100 * 3e-6 + 200 * 0.30e-6 + 700 * 3.75e-6 + 10 * 15e-6)


def test_a_long_prompt_prices_every_token_at_the_higher_tier() -> None:
    # gemini-2.5-pro: $1.25 in, $0.125 cached, $10 out up to 200k prompt tokens; $2.50, $0.25, $15 above.
    at_threshold = Usage(prompt_tokens=200_000, completion_tokens=1000,
                         prompt_tokens_details=PromptTokensDetails(cached_tokens=50_000))
    above = Usage(prompt_tokens=200_001, completion_tokens=1000,
                  prompt_tokens_details=PromptTokensDetails(cached_tokens=50_000))
    assert table().cost("gemini-2.5-pro", at_threshold) == pytest.approx(
        150_000 * 1.25e-6 + 50_000 * 0.125e-6 + 1000 * 10e-6)
    assert table().cost("gemini-2.5-pro", above) == pytest.approx(
        150_001 * 2.50e-6 + 50_000 * 0.25e-6 + 1000 * 15e-6)


def test_a_long_claude_prompt_takes_the_long_context_rates_with_the_cache_multipliers_on_top() -> None:
    # claude-sonnet-4-5 above 200k input tokens (reads and writes count): $6 in, $7.50 5-minute write, $12
    # 1-hour write, $0.60 read, $22.50 out.
    usage = Usage(prompt_tokens=250_000, completion_tokens=2000, prompt_tokens_details=PromptTokensDetails(
        cached_tokens=100_000), cache_creation_tokens=60_000, cache_creation_1h_tokens=10_000)
    assert table().cost("claude-sonnet-4-5-20250929", usage) == pytest.approx(
        90_000 * 6e-6 + 100_000 * 0.60e-6 + 50_000 * 7.50e-6 + 10_000 * 12e-6 + 2000 * 22.50e-6)


def test_cached_reads_without_a_price_of_their_own_are_priced_as_input() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=0, prompt_tokens_details=PromptTokensDetails(cached_tokens=600))
    assert table().models["gemini-2.5-flash-lite"].cached_input is None
    assert table().cost("gemini-2.5-flash-lite", usage) == pytest.approx(1000 * 0.10e-6)


def test_dated_snapshots_and_versions_take_their_models_price() -> None:
    models = table().models
    assert table().price("gpt-4o-mini-2024-07-18") == models["gpt-4o-mini"]
    assert table().price("gpt-4o-2024-08-06") == models["gpt-4o"]
    assert table().price("claude-opus-4-20250514") == models["claude-opus-4"]
    assert table().price("claude-3-opus-latest") == models["claude-3-opus"]
    assert table().price("gemini-2.0-flash-001") == models["gemini-2.0-flash"]
    assert table().price("anthropic.claude-3-haiku-20240307-v1:0") == models["anthropic.claude-3-haiku"]
    assert table().price("amazon.nova-pro-v1:0") == models["amazon.nova-pro"]


def test_another_model_is_not_priced_as_the_one_it_starts_with() -> None:
    assert table().price("gpt-5-pro") is None  # not gpt-5's price
    assert table().price("o3-deep-research") is None
    assert table().price("claude-opus-4-1-20250805") == table().models["claude-opus-4-1"]  # not claude-opus-4
    assert table().price("gemini-2.5-flash-lite") != table().price("gemini-2.5-flash")


def test_bedrock_geographic_profiles_cost_10_percent_more_than_global_ones() -> None:
    model = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    global_price = table().price(f"global.{model}")
    for profile in (model, f"us.{model}", f"eu.{model}", f"apac.{model}"):
        price = table().price(profile)
        assert global_price is not None and price is not None
        assert (price.input, price.output) == pytest.approx((global_price.input * 1.1, global_price.output * 1.1))
    # Before Claude Sonnet 4.5 there is no such premium: the geographic profile takes the model's price.
    assert table().price("us.anthropic.claude-3-5-haiku-20241022-v1:0") == table().models["anthropic.claude-3-5-haiku"]


def test_unknown_models_are_unpriced() -> None:
    assert table().cost("llama-3-70b", Usage(prompt_tokens=10, completion_tokens=10)) is None


def test_every_entry_says_where_it_comes_from() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table().checked)
    for model, price in table().models.items():
        assert price.source, model
        if model != "mock":
            assert re.search(r"\b20\d\d-\d\d-\d\d\b", price.source), f"{model}: no date in its source"
    assert all(table().unpriced.values())


def test_no_model_is_both_priced_and_unpriced() -> None:
    assert [m for m in table().models if table().unpriced_reason(m)] == []


def test_configured_target_prices_replace_input_and_output_and_keep_the_cache_prices() -> None:
    known = table().models["gemini-2.5-pro"]
    price = configured(known, 1.0, None)
    assert price is not None
    assert (price.input, price.output, price.cached_input, price.above) == (1.0, 10.0, 0.125, None)
    fresh = configured(None, 1.0, 2.0)
    assert fresh is not None and (fresh.input, fresh.output, fresh.cached_input) == (1.0, 2.0, None)
    assert configured(None, 1.0, None) is None  # half a price for an unknown model is no price
    assert configured(known, None, None) is known


@pytest.mark.parametrize(("prices", "header"), [((1.0, 2.5), "1.0,2.5"), ((None, 2.5), ",2.5"), ((0.0, None), "0.0,")])
def test_target_prices_cross_the_bus_as_a_header(prices: tuple[float | None, float | None], header: str) -> None:
    assert prices_header(*prices) == header
    assert parse_prices_header(header) == prices


def test_a_malformed_prices_header_is_no_prices() -> None:
    assert prices_header(None, None) is None
    for bad in (None, "", "1.0", "a,b", "1,2,3"):
        assert parse_prices_header(bad) == (None, None)


# --- Every model the project names has a price or is left out on purpose ------------------------------------

# Model names in the README, the docs, the recorded fixtures, the mock upstream and the deploy files.
_NAMED_IN = ["README.md", "docs", "tests/fixtures", "tests/mockupstream", "deploy"]
_MODEL = re.compile(
    r"(?<![\w.-])(?:(?:us|eu|apac|global)\.)?(?:"
    r"(?:anthropic|amazon|meta|mistral|cohere)\.[a-z0-9-]+[\w.:-]*?-v\d+(?::\d+)?"
    r"|gpt-[a-z0-9.-]*[a-z0-9]|chatgpt-[a-z0-9.-]*[a-z0-9]|o[134](?:-[a-z]+)?"
    r"|claude-[a-z0-9.-]*[a-z0-9]|gemini-[a-z0-9.-]*[a-z0-9])(?![\w.*-])")
# Words of that shape that are not models, and why.
_NOT_MODELS = {
    "claude-api": "a product name in the fixtures' README",
    "claude-code": "a product name in the fixtures' README",
    "gemini-cli": "a product name in the fixtures' README",
    "gemini-api": "a quota metric's name in Gemini's rate-limit error",
    "gemini-9-ultra": "a made-up model in the model-not-found fixture",
    "claude-docs": "a repository's name in the fixtures' README",
    "o4": "a family in the README's list of reasoning models (o4-mini is priced)",
}
# Bedrock ids as operators name them (the mock answers any id, so the files above name few of them).
_BEDROCK = [
    "anthropic.claude-sonnet-4-5-20250929-v1:0", "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "eu.anthropic.claude-haiku-4-5-20251001-v1:0", "global.anthropic.claude-opus-4-5-20251101-v1:0",
    "anthropic.claude-3-haiku-20240307-v1:0", "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0", "us.amazon.nova-micro-v1:0",
    "meta.llama3-1-70b-instruct-v1:0", "mistral.mistral-large-2407-v1:0", "cohere.command-r-plus-v1:0",
]


def named_models() -> set[str]:
    files = [p for name in _NAMED_IN for p in ([ROOT / name] if (ROOT / name).is_file() else (ROOT / name).rglob("*"))]
    text = "\n".join(p.read_text(errors="replace") for p in files if p.is_file())
    return set(_MODEL.findall(text)) - set(_NOT_MODELS)


def test_the_scan_finds_the_models_the_files_name() -> None:
    # Guards the scan itself: a regex that found nothing would pass the test below vacuously.
    assert {"gpt-4o-2024-08-06", "claude-sonnet-4-5-20250929", "gemini-2.5-flash",
            "anthropic.claude-3-5-haiku-20241022-v1:0"} <= named_models()


@pytest.mark.parametrize("model", sorted(named_models()) + _BEDROCK)
def test_every_named_model_is_priced_or_unpriced_on_purpose(model: str) -> None:
    assert table().price(model) is not None or table().unpriced_reason(model), \
        f"{model}: add its price to shared/data/pricing.yaml, or list it under `unpriced` with the reason"


@pytest.mark.parametrize(("prefix", "provider"), CONVENTIONS)
def test_every_convention_has_priced_models_or_says_why_not(prefix: str, provider: str) -> None:
    priced = [m for m in table().models if m.startswith(prefix)]
    assert priced or table().unpriced_reason(prefix + "x") or table().unpriced_reason(prefix), (prefix, provider)

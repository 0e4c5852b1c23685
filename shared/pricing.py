"""The pricing table (shipped as data) and the cost of one answer: prompt-cache reads and writes (five-minute
and one-hour) and long-prompt tiers priced as the provider prices them."""

from __future__ import annotations

import re
from functools import cache, lru_cache
from importlib import resources

import msgspec
from msgspec import Struct

from shared.messages import Usage

PER_TOKEN = 1e-6  # the table is in USD per million tokens

# What may follow a table key in a model name for the key's price to apply: dated snapshots (`-2024-08-06`,
# `-20250929`, `-0613`, Vertex's `@20250929`), numbered versions (`-001`), `-latest`, Bedrock's `-v1:0`. Anything
# else is another model (`gpt-5` does not price `gpt-5-pro`, `gemini-2.5-flash` not `gemini-2.5-flash-lite`).
_VERSION_SUFFIX = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-\d{3,4}|-latest|-v\d+(?::\d+)?)*")
# Bedrock's cross-region inference profiles name the model after a geography: `us.anthropic.claude-...`.
_BEDROCK_GEO = re.compile(r"^(?:us|us-gov|eu|apac|jp|au|ca|global)\.(?=[a-z0-9-]+\.)")


class Tier(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prices for a request whose prompt is longer than `prompt_tokens`: every token of it, not only the
    tokens past the threshold (as Gemini and Anthropic bill their long-context tiers)."""

    prompt_tokens: int
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None


class Price(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    input: float
    output: float
    # Prompt-cache reads; None when the source gives no separate price (they are then priced as input).
    cached_input: float | None = None
    # Prompt-cache writes (five-minute, and one-hour when the provider has them); None: priced as input.
    cache_write: float | None = None
    cache_write_1h: float | None = None
    above: Tier | None = None  # a long-prompt tier
    source: str = ""  # where the figures come from, and when they were read

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The prices that apply to a request with this many prompt tokens (cached and written included)."""
        tier = self.above
        if tier is None or prompt_tokens <= tier.prompt_tokens:
            return self
        return Price(input=tier.input, output=tier.output, cached_input=tier.cached_input,
                     cache_write=tier.cache_write, cache_write_1h=tier.cache_write_1h, source=self.source)

    @property
    def cache_write_price(self) -> float:
        """A five-minute prompt-cache write's price."""
        return _or(self.cache_write, self.input)

    def cost(self, usage: Usage) -> float:
        price = self.for_prompt(usage.prompt_tokens)
        read, written = usage.cache_read_tokens, usage.cache_creation_tokens
        written_1h = min(written, usage.cache_creation_1h_tokens)
        uncached = max(0, usage.prompt_tokens - read - written)
        return PER_TOKEN * (
            uncached * price.input
            + read * _or(price.cached_input, price.input)
            + (written - written_1h) * price.cache_write_price
            + written_1h * _or(price.cache_write_1h, price.cache_write, price.input)
            + usage.completion_tokens * price.output
        )


def _or(*prices: float | None) -> float:
    return next(p for p in prices if p is not None)


class PriceTable(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    checked: str
    models: dict[str, Price]
    # Models (or name prefixes) left out on purpose -> why. Their answers are counted as unpriced.
    unpriced: dict[str, str] = {}

    def price(self, model: str) -> Price | None:
        """`model`'s price: a key equal to it, or one it extends by a version or date suffix only; for a
        Bedrock cross-region profile without an entry of its own, the in-region model's price."""
        found = self._lookup(model)
        if found is None and (geo := _BEDROCK_GEO.match(model)):
            found = self._lookup(model[geo.end():])
        return found

    def _lookup(self, model: str) -> Price | None:
        if (exact := self.models.get(model)) is not None:
            return exact
        keys = [k for k in self.models if model.startswith(k) and _VERSION_SUFFIX.fullmatch(model, len(k))]
        return self.models[max(keys, key=len)] if keys else None

    def unpriced_reason(self, model: str) -> str | None:
        """Why `model` is left out of the table on purpose, or None. An `unpriced` key matches as a `models`
        key does, or, ending in `*`, as a plain prefix (a family: `meta.llama*`)."""
        for name in (model, model[geo.end():] if (geo := _BEDROCK_GEO.match(model)) else model):
            for key, reason in self.unpriced.items():
                if key.endswith("*") and name.startswith(key[:-1]):
                    return reason
                if name.startswith(key) and _VERSION_SUFFIX.fullmatch(name, len(key)):
                    return reason
        return None

    def cost(self, model: str, usage: Usage) -> float | None:
        """USD for `usage` on `model`; None when the model is not in the table."""
        price = self.price(model)
        return None if price is None else price.cost(usage)


def configured(known: Price | None, input_price: float | None, output_price: float | None) -> Price | None:
    """A target's configured prices over the table's `known` price: they replace its input and output
    prices (and its long-prompt tier, which they are assumed to account for); its cache prices stay. None
    when a price is neither configured nor known."""
    if input_price is None and output_price is None:
        return known
    input_price = input_price if input_price is not None else (known.input if known else None)
    output_price = output_price if output_price is not None else (known.output if known else None)
    if input_price is None or output_price is None:
        return None
    if known is None:
        return Price(input=input_price, output=output_price, source="the route's target")
    return msgspec.structs.replace(known, input=input_price, output=output_price, above=None,
                                   source="the route's target, cache prices from the table")


def prices_header(input_price: float | None, output_price: float | None) -> str | None:
    """A target's configured prices as the router sends them to the provider worker (None: none set)."""
    if input_price is None and output_price is None:
        return None
    return ",".join("" if p is None else repr(p) for p in (input_price, output_price))


def parse_prices_header(value: str | None) -> tuple[float | None, float | None]:
    """`prices_header`'s inverse; a malformed value counts as no configured prices."""
    parts = (value or "").split(",")
    if len(parts) != 2:
        return None, None
    try:
        input_price, output_price = (float(p) if p else None for p in parts)
    except ValueError:
        return None, None
    return input_price, output_price


@cache
def table() -> PriceTable:
    data = resources.files("shared").joinpath("data/pricing.yaml").read_bytes()
    return msgspec.yaml.decode(data, type=PriceTable)


@lru_cache(maxsize=4096)
def known_price(model: str) -> Price | None:
    """`table().price(model)`, remembered (bounded: the name may come from an upstream's answer). A name
    without an entry of its own (a dated snapshot) is matched against every key of the table, which cost
    each answer of a provider worker about 10 µs."""
    return table().price(model)

"""The pricing table (shipped as data) and the cost of one answer: prompt-cache reads and writes priced
as the provider prices them."""

from __future__ import annotations

from functools import cache
from importlib import resources

import msgspec
from msgspec import Struct

from shared.messages import Usage

PER_TOKEN = 1e-6  # the table is in USD per million tokens


# Anthropic's 5-minute cache writes cost 1.25 times the input price ("Prompt caching", pricing table).
CACHE_WRITE_FACTOR = 1.25


class Price(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    input: float
    cached_input: float  # prompt-cache reads
    output: float
    cache_write: float | None = None  # prompt-cache writes; unset: CACHE_WRITE_FACTOR x input

    @property
    def cache_write_price(self) -> float:
        return self.cache_write if self.cache_write is not None else CACHE_WRITE_FACTOR * self.input


class PriceTable(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    source: str
    checked: str
    models: dict[str, Price]

    def price(self, model: str) -> Price | None:
        if (exact := self.models.get(model)) is not None:
            return exact
        prefixes = [name for name in self.models if model.startswith(name)]
        return self.models[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, usage: Usage) -> float | None:
        """USD for `usage` on `model`; None when the model is not in the table."""
        price = self.price(model)
        if price is None:
            return None
        read, written = usage.cache_read_tokens, usage.cache_creation_tokens
        uncached = max(0, usage.prompt_tokens - read - written)
        return PER_TOKEN * (
            uncached * price.input + read * price.cached_input + written * price.cache_write_price
            + usage.completion_tokens * price.output
        )


@cache
def table() -> PriceTable:
    data = resources.files("shared").joinpath("data/pricing.yaml").read_bytes()
    return msgspec.yaml.decode(data, type=PriceTable)

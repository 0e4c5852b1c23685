"""The pricing table (shipped as data) and the cost of one answer, cached input tokens priced as the
provider prices them."""

from __future__ import annotations

from functools import cache
from importlib import resources

import msgspec
from msgspec import Struct

from shared.messages import Usage

PER_TOKEN = 1e-6  # the table is in USD per million tokens


class Price(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    input: float
    cached_input: float
    output: float


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
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
        uncached = max(0, usage.prompt_tokens - cached)
        return PER_TOKEN * (
            uncached * price.input + cached * price.cached_input + usage.completion_tokens * price.output
        )


@cache
def table() -> PriceTable:
    data = resources.files("shared").joinpath("data/pricing.yaml").read_bytes()
    return msgspec.yaml.decode(data, type=PriceTable)

"""Settings of the Anthropic adapter: the common ones, the key from ANTHROPIC_API_KEY."""

from __future__ import annotations

from typing import ClassVar

from shared.config import ProviderSettings


class AnthropicSettings(ProviderSettings, frozen=True, kw_only=True, tag="anthropic"):
    key_env: ClassVar[str | None] = "ANTHROPIC_API_KEY"

"""Settings of the Anthropic adapter: the common ones, the allow-list of forwarded
`anthropic-beta` values, the key from ANTHROPIC_API_KEY."""

from __future__ import annotations

from typing import ClassVar

from shared.config import ProviderSettings


class AnthropicSettings(ProviderSettings, frozen=True, kw_only=True, tag="anthropic"):
    # The `anthropic-beta` values a client may send on to this provider (None: every one).
    anthropic_betas: list[str] | None = None

    key_env: ClassVar[str | None] = "ANTHROPIC_API_KEY"

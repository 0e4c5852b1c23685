"""Settings of the Gemini adapter: the common ones, the key from GEMINI_API_KEY."""

from __future__ import annotations

from typing import ClassVar

from shared.config import ProviderSettings


class GeminiSettings(ProviderSettings, frozen=True, kw_only=True, tag="gemini"):
    key_env: ClassVar[str | None] = "GEMINI_API_KEY"

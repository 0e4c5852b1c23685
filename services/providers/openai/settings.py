"""Settings of the OpenAI adapter and of any OpenAI-compatible server (vLLM, Ollama, ...): the common ones."""

from __future__ import annotations

from typing import ClassVar

from shared.config import ProviderSettings


class OpenAISettings(ProviderSettings, frozen=True, kw_only=True, tag="openai"):
    key_env: ClassVar[str | None] = "OPENAI_API_KEY"


class OpenAICompatibleSettings(ProviderSettings, frozen=True, kw_only=True, tag="openai_compatible"):
    pass

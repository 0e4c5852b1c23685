"""Settings of the OpenAI adapter and of any OpenAI-compatible server (vLLM, Ollama, ...): the common ones."""

from __future__ import annotations

from typing import ClassVar

from shared.config import ProviderSettings


class OpenAISettings(ProviderSettings, frozen=True, kw_only=True, tag="openai"):
    # Responses API clients: call OpenAI's own `/responses` (reasoning items and built-in tools survive)
    # rather than translating to chat completions.
    responses_api: bool = True

    key_env: ClassVar[str | None] = "OPENAI_API_KEY"

    def native_responses(self) -> bool:
        return self.responses_api


class OpenAICompatibleSettings(ProviderSettings, frozen=True, kw_only=True, tag="openai_compatible"):
    # `true` when the server serves OpenAI's Responses API itself (recent vLLM does): called natively.
    responses_api: bool = False

    def native_responses(self) -> bool:
        return self.responses_api

"""Settings of the Azure OpenAI adapter: the resource endpoint (`base_url`) and the data-plane API version,
from the variables Azure's own SDKs read when the entry leaves them out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from shared.config import ProviderSettings


class AzureSettings(ProviderSettings, frozen=True, kw_only=True, tag="azure"):
    # The data-plane API version ("2024-10-21" when unset); "v1" selects Azure's v1 API route.
    api_version: str | None = None
    # Responses API clients: `true` calls Azure's own `/openai/v1/responses` (the v1 route) natively.
    responses_api: bool = False

    key_env: ClassVar[str | None] = "AZURE_OPENAI_API_KEY"
    env: ClassVar[Mapping[str, str]] = {"AZURE_OPENAI_ENDPOINT": "base_url", "OPENAI_API_VERSION": "api_version"}

    def native_responses(self) -> bool:
        return self.responses_api

    def problem(self) -> str | None:
        if not self.base_url:
            return "base_url: Azure OpenAI needs the resource endpoint (or AZURE_OPENAI_ENDPOINT)"
        return None

"""Settings of the Azure OpenAI adapter: the resource endpoint (`base_url`) and the data-plane API version,
from the variables Azure's own SDKs read when the entry leaves them out. Without an api-key, an Entra ID
token authenticates (`entra.py`, the optional extra `llm-edge[azure]`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from services.providers.extras import missing
from shared.config import ProviderSettings

COGNITIVE_SERVICES = "https://cognitiveservices.azure.com/.default"


class AzureSettings(ProviderSettings, frozen=True, kw_only=True, tag="azure"):
    # The data-plane API version ("2024-10-21" when unset); "v1" selects Azure's v1 API route.
    api_version: str | None = None
    # Responses API clients: `true` calls Azure's own `/openai/v1/responses` (the v1 route) natively.
    responses_api: bool = False
    # Without an api-key: which azure-identity credential gets the Entra ID token, a user-assigned managed
    # identity's client id, and the token's scope.
    entra_credential: Literal["default", "managed_identity", "workload_identity", "environment", "azure_cli"] = (
        "default")
    entra_client_id: str | None = None
    entra_scope: str = COGNITIVE_SERVICES

    key_env: ClassVar[str | None] = "AZURE_OPENAI_API_KEY"
    env: ClassVar[Mapping[str, str]] = {"AZURE_OPENAI_ENDPOINT": "base_url", "OPENAI_API_VERSION": "api_version"}

    def native_responses(self) -> bool:
        return self.responses_api

    def problem(self) -> str | None:
        if not self.base_url:
            return "base_url: Azure OpenAI needs the resource endpoint (or AZURE_OPENAI_ENDPOINT)"
        if self.api_key is None and (problem := missing("azure.identity", "azure",
                                                        "with no api-key, an Entra ID token authenticates")):
            return f"api_key: {problem}"
        return None

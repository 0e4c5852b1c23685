"""Azure OpenAI: OpenAI's Chat Completions body and stream, at Azure's address, with Azure's key header.

Two routes (learn.microsoft.com/azure/ai-foundry/openai/reference and .../api-version-lifecycle):
- `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version={api_version}`, the target's
  model being the deployment name (the default, with the latest GA data-plane version, 2024-10-21);
- `api_version: v1`: the v1 API, `{endpoint}/openai/v1/chat/completions` with the deployment as `model`.
Either way the key goes in the `api-key` header; without one, an Entra ID token as `Authorization: Bearer`
(`entra.py`, added by the worker just before the call is sent). Errors are OpenAI-shaped, with Azure's variants: a
numeric string `code` ("429", "401"), and the content filter's 400 (`code: content_filter`, an
`innererror` naming the policy) which is the caller's to fix, never retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import msgspec

from services.providers.azure.entra import EntraToken
from services.providers.azure.settings import AzureSettings
from services.providers.base import Authorizer
from services.providers.openai.adapter import OpenAICompatible, error_from_body
from shared.config import ProviderSettings
from shared.errors import GatewayError

DEFAULT_API_VERSION = "2024-10-21"  # the latest GA data-plane inference version in Azure's API reference
V1 = "v1"


class _Inner(msgspec.Struct):
    code: str | None = None


class _Detail(msgspec.Struct):
    code: str | int | None = None
    innererror: _Inner | None = None


class _Body(msgspec.Struct):
    error: _Detail | None = None


_body_decoder = msgspec.json.Decoder(_Body)


class AzureOpenAI(OpenAICompatible):
    def url(self, config: ProviderSettings, model: str) -> str:
        endpoint = (config.base_url or "").rstrip("/")
        version = (config.api_version if isinstance(config, AzureSettings) else None) or DEFAULT_API_VERSION
        if version == V1:
            return f"{endpoint}/openai/v1/chat/completions"
        deployment = quote(model, safe="")
        return f"{endpoint}/openai/deployments/{deployment}/chat/completions?api-version={quote(version)}"

    def embeddings_url(self, config: ProviderSettings, model: str) -> str:
        """`.../openai/deployments/{deployment}/embeddings?api-version=...`, or the v1 route's `/embeddings`."""
        endpoint = (config.base_url or "").rstrip("/")
        version = (config.api_version if isinstance(config, AzureSettings) else None) or DEFAULT_API_VERSION
        if version == V1:
            return f"{endpoint}/openai/v1/embeddings"
        return f"{endpoint}/openai/deployments/{quote(model, safe='')}/embeddings?api-version={quote(version)}"

    def responses_url(self, config: ProviderSettings) -> str:
        """Azure serves the Responses API on its v1 route, whatever `api_version` the chat calls use."""
        return f"{(config.base_url or '').rstrip('/')}/openai/v1/responses"

    def auth_header(self, key: str) -> tuple[str, str]:
        return "api-key", key

    def authorizer(self, config: AzureSettings, *, provider: str) -> Authorizer | None:
        if config.api_key is not None:
            return None
        return EntraToken(credential=config.entra_credential, client_id=config.entra_client_id,
                          scope=config.entra_scope, provider=provider)

    def parse_error(
        self, status: int, body: bytes, headers: Mapping[str, str], *, provider: str
    ) -> GatewayError:
        error = error_from_body(status, body, headers, provider=provider)
        if error.code is not None and error.code.isdigit():
            # Azure repeats the HTTP status as the code ("429"): ours for that status says more.
            error.code = error_from_body(status, b"", headers, provider=provider).code
        if (
            status == 400
            and error.code != "content_filter"
            and _inner_code(body) == "ResponsibleAIPolicyViolation"
        ):
            error.code = "content_filter"
        return error


def _inner_code(body: bytes) -> str | None:
    try:
        detail = _body_decoder.decode(body).error
    except msgspec.DecodeError:
        return None
    return detail.innererror.code if detail is not None and detail.innererror is not None else None


adapter = AzureOpenAI("azure", "", AzureSettings, embed_encoding="base64")

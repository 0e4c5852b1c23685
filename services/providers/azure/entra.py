"""Microsoft Entra ID tokens for an Azure OpenAI entry that holds no api-key: `azure-identity`'s async
credentials (the optional extra `llm-edge[azure]`), `Authorization: Bearer <token>` for the scope
`https://cognitiveservices.azure.com/.default` (learn.microsoft.com/azure/ai-foundry/openai/how-to/managed-identity).

`DefaultAzureCredential` by default (environment, workload identity, managed identity, Azure CLI, …), or the
one credential the entry names. The token is kept until its refresh time (the token's `refresh_on`, or five
minutes before it expires, azure-identity's own offset); from then on the credential is asked again (at most
every few seconds, `refresh.py`), and it fetches a new token (without blocking: these credentials are asyncio
ones) or hands out its cached one while that is still valid.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from services.providers.base import HttpCall
from services.providers.refresh import Refresher
from shared.errors import ProviderError

if TYPE_CHECKING:
    from azure.core.credentials import AccessTokenInfo
    from azure.core.credentials_async import AsyncSupportsTokenInfo

log = logging.getLogger("llm_edge.provider")

EXTRA = "llm-edge[azure]"
REFRESH_OFFSET = 300  # seconds before expiry; azure-identity's DEFAULT_REFRESH_OFFSET
# The credentials an entry may name, by azure-identity's class names.
CREDENTIALS = {
    "default": "DefaultAzureCredential",
    "managed_identity": "ManagedIdentityCredential",
    "workload_identity": "WorkloadIdentityCredential",
    "environment": "EnvironmentCredential",
    "azure_cli": "AzureCliCredential",
}


class EntraToken:
    """An `Authorizer`: adds `Authorization: Bearer <Entra ID token>` to each call."""

    def __init__(self, *, credential: str, client_id: str | None, scope: str, provider: str) -> None:
        self.kind, self.client_id, self.scope, self.provider = credential, client_id, scope, provider
        self._credential: AsyncSupportsTokenInfo | None = None
        self._token: AccessTokenInfo | None = None
        self._refresher = Refresher()

    async def authorize(self, call: HttpCall) -> HttpCall:
        token = await self.token()
        return replace(call, headers=call.headers | {"Authorization": f"Bearer {token}"},
                       secret_headers=call.secret_headers | {"Authorization"})

    async def token(self) -> str:
        await self._refresher.run_async(self._due, self._update)
        assert self._token is not None  # the refresher raised otherwise
        return self._token.token

    def _due(self) -> bool:
        return self._token is None or time.time() >= _refresh_at(self._token)

    async def _update(self) -> None:
        self._token = await self._fetch()

    async def _fetch(self) -> AccessTokenInfo:
        try:
            from azure.core.exceptions import AzureError
        except ImportError as exc:  # settings.problem() says so at load; this is for a changed environment
            raise self._failed(f"Entra ID tokens need azure-identity: pip install '{EXTRA}'") from exc
        try:
            if self._credential is None:
                self._credential = self._make()
            return await self._credential.get_token_info(self.scope)
        except (AzureError, ValueError, OSError) as exc:  # ClientAuthenticationError, CredentialUnavailableError
            raise self._failed(f"getting an Entra ID token ({CREDENTIALS[self.kind]}) failed: {exc}") from exc

    def _make(self) -> AsyncSupportsTokenInfo:
        from azure.identity import aio

        options: dict[str, Any] = {}
        if self.client_id is not None and self.kind in ("default", "managed_identity", "workload_identity"):
            options["managed_identity_client_id" if self.kind == "default" else "client_id"] = self.client_id
        credential: AsyncSupportsTokenInfo = getattr(aio, CREDENTIALS[self.kind])(**options)
        log.info("provider %s authenticates with Entra ID (%s)", self.provider, CREDENTIALS[self.kind])
        return credential

    def _failed(self, detail: str) -> ProviderError:
        return ProviderError(f"{self.provider}: {detail}", code="provider_credentials_unavailable",
                             where=f"provider:{self.provider}")

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()


def _refresh_at(token: AccessTokenInfo) -> float:
    return min(token.refresh_on or token.expires_on, token.expires_on - REFRESH_OFFSET)

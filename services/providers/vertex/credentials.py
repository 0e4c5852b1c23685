"""Google application default credentials (ADC) for Vertex AI: `google-auth` (the optional extra
`llm-edge[google]`) finds them as Google's SDKs do (GOOGLE_APPLICATION_CREDENTIALS: a service account key,
an authorized user, workload identity federation; gcloud's own file; the metadata server on GCE/GKE), and
each call carries `Authorization: Bearer <access token>`.

google-auth calls a token stale 3 min 45 s before it expires; a stale or missing token is refreshed then.
Its refresh is blocking HTTP, so it runs in a thread, one at a time, never on the event loop. A stale token
whose refresh failed is still used while it lasts (the refresh is tried again a few seconds later).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from services.providers.base import HttpCall
from services.providers.refresh import Refresher
from shared.errors import ProviderError

log = logging.getLogger("llm_edge.provider")

EXTRA = "llm-edge[google]"


class GoogleToken:
    """An `Authorizer`: adds `Authorization: Bearer <ADC access token>` to each call."""

    def __init__(self, *, scopes: list[str], provider: str) -> None:
        self.scopes, self.provider = scopes, provider
        self._credentials: Any = None  # google.auth.credentials.Credentials, once found
        self._transport: Any = None  # google.auth.transport.requests.Request: one HTTP session, reused
        self._refresher = Refresher()

    async def authorize(self, call: HttpCall) -> HttpCall:
        token = await self.token()
        return replace(call, headers=call.headers | {"Authorization": f"Bearer {token}"},
                       secret_headers=call.secret_headers | {"Authorization"})

    async def token(self) -> str:
        await self._refresher.run(lambda: not self._fresh(), self._refresh)
        return str(self._credentials.token)

    def _fresh(self) -> bool:
        if self._credentials is None:
            return False
        from google.auth.credentials import TokenState

        return bool(self._credentials.token_state == TokenState.FRESH)

    def _refresh(self) -> None:
        """In a thread: find the credentials (first call), then refresh their token."""
        try:
            import google.auth
            from google.auth.credentials import TokenState
            from google.auth.exceptions import GoogleAuthError
            from google.auth.transport.requests import Request
        except ImportError as exc:  # settings.problem() says so at load; this is for a changed environment
            raise self._failed(f"application default credentials need google-auth: pip install '{EXTRA}'") from exc
        try:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=self.scopes)
                self._transport = Request()
                log.info("provider %s authenticates with %s", self.provider, type(self._credentials).__name__)
        except (GoogleAuthError, OSError, ValueError) as exc:  # DefaultCredentialsError: none found
            raise self._failed(f"no Google application default credentials: {exc}") from exc
        usable = self._credentials.token_state == TokenState.STALE  # still valid for a while
        try:
            self._credentials.refresh(self._transport)
        except (GoogleAuthError, OSError, ValueError) as exc:  # RefreshError, TransportError
            if not usable:
                raise self._failed(f"refreshing the Google access token failed: {exc}") from exc
            log.warning("provider %s: refreshing the Google access token failed (the current one is still "
                        "valid; tried again in a few seconds): %s", self.provider, exc)

    def _failed(self, detail: str) -> ProviderError:
        return ProviderError(f"{self.provider}: {detail}", code="provider_credentials_unavailable",
                             where=f"provider:{self.provider}")

    async def close(self) -> None:
        return None

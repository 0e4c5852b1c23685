"""AWS credentials for a Bedrock entry that holds no key: AWS's standard chain, as botocore resolves it (the
optional extra `llm-edge[aws]`): environment, shared config/credentials file and profile, web identity
(IRSA: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN through STS AssumeRoleWithWebIdentity), the ECS task role
(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI) and EC2 instance metadata (IMDSv2).

botocore's RefreshableCredentials refresh temporary credentials before they expire (from 15 minutes before,
and must by 10); its refresh is blocking HTTP, so it runs in a thread, never on the event loop. Our own SigV4
signer (`sigv4.py`) signs with whatever set is current.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from services.providers.base import HttpCall
from services.providers.bedrock.sigv4 import Credentials, sign
from services.providers.refresh import Refresher
from shared.errors import ProviderError

log = logging.getLogger("llm_edge.provider")

EXTRA = "llm-edge[aws]"


class CredentialChain:
    """The chain's current credentials: resolved on first use, then as botocore refreshes them."""

    def __init__(self, *, profile: str | None, region: str | None, provider: str) -> None:
        self.profile, self.region, self.provider = profile, region, provider
        self._source: Any = None  # botocore's Credentials or RefreshableCredentials
        self._stale: Callable[[], bool] = lambda: False
        self._current: Credentials | None = None
        self._refresher = Refresher()
        self.method = ""  # where botocore found them ("iam-role", "assume-role-with-web-identity", …)

    async def current(self) -> Credentials:
        await self._refresher.run(lambda: self._current is None or self._stale(), self._update)
        assert self._current is not None  # the refresher raised otherwise
        return self._current

    def _update(self) -> None:
        self._current = self._fetch()

    def _fetch(self) -> Credentials:
        """In a thread: resolve the chain (first call), then botocore's frozen copy, which refreshes the
        credentials when they are inside botocore's refresh window."""
        try:
            from botocore.credentials import RefreshableCredentials
            from botocore.exceptions import BotoCoreError, ClientError
            from botocore.session import Session
        except ImportError as exc:  # settings.problem() says so at load; this is for a changed environment
            raise self._failed(f"the AWS credential chain needs botocore: pip install '{EXTRA}'") from exc
        try:
            if self._source is None:
                session = Session(profile=self.profile)
                if self.region:
                    session.set_config_variable("region", self.region)  # STS's regional endpoint
                source = session.get_credentials()
                if source is None:
                    raise self._failed(
                        "no AWS credentials found (environment, shared config and credentials files, web "
                        "identity, ECS task role, EC2 instance metadata)")
                self._source, self.method = source, str(source.method)
                if isinstance(source, RefreshableCredentials):
                    self._stale = source.refresh_needed
                log.info("provider %s signs with AWS credentials from %s", self.provider, self.method)
            frozen = self._source.get_frozen_credentials()
        except (BotoCoreError, ClientError, RuntimeError, OSError, ValueError) as exc:
            # botocore raises these for an unreachable metadata service, a refused STS call, a bad profile.
            raise self._failed(f"getting AWS credentials ({self.method or 'the chain'}) failed: {exc}") from exc
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def _failed(self, detail: str) -> ProviderError:
        return ProviderError(f"{self.provider}: {detail}", code="provider_credentials_unavailable",
                             where=f"provider:{self.provider}")


class ChainSigner:
    """An `Authorizer`: signs each Bedrock call (SigV4) with the chain's current credentials."""

    def __init__(self, chain: CredentialChain, region: str, clock: Callable[[], datetime]) -> None:
        self.chain, self.region, self.clock = chain, region, clock

    async def authorize(self, call: HttpCall) -> HttpCall:
        credentials = await self.chain.current()
        signed = sign(call.method, call.url, call.headers, call.body, credentials=credentials,
                      region=self.region, service="bedrock", now=self.clock())
        return replace(call, headers=call.headers | signed,
                       secret_headers=call.secret_headers | {"Authorization", "X-Amz-Security-Token"})

    async def close(self) -> None:
        return None

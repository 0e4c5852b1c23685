"""Settings of the Bedrock adapter: the AWS region whose endpoint serves the calls (unless `base_url` names
one), and the AWS access key that signs them (SigV4) when no Bedrock API key (`api_key`) is configured;
each from the variable AWS's own SDKs read when the entry leaves it out. With neither, AWS's standard
credential chain signs (`credentials.py`, the optional extra `llm-edge[aws]`), from `aws_profile` if set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from services.providers.extras import missing
from shared.config import ProviderSettings


class BedrockSettings(ProviderSettings, frozen=True, kw_only=True, tag="bedrock"):
    region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    # The shared config/credentials profile the credential chain reads (when no key is configured).
    aws_profile: str | None = None
    # Claude models (InvokeModel): the `anthropic-beta` values a client may send on (None: every one).
    anthropic_betas: list[str] | None = None

    key_env: ClassVar[str | None] = "AWS_BEARER_TOKEN_BEDROCK"  # a Bedrock API key
    env: ClassVar[Mapping[str, str]] = {
        "AWS_REGION": "region",
        "AWS_DEFAULT_REGION": "region",  # read only when AWS_REGION is not set, as the AWS SDKs do
        "AWS_ACCESS_KEY_ID": "aws_access_key_id",
        "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
        "AWS_SESSION_TOKEN": "aws_session_token",
        "AWS_PROFILE": "aws_profile",
    }

    def uses_chain(self) -> bool:
        """No Bedrock API key and no access key: AWS's credential chain signs the calls."""
        return self.api_key is None and not self.aws_access_key_id

    def secrets(self) -> tuple[str | None, ...]:
        return (self.api_key, self.aws_access_key_id, self.aws_secret_access_key, self.aws_session_token)

    def problem(self) -> str | None:
        if not self.base_url and not self.region:
            return "region: Bedrock needs a region (or AWS_REGION), or a base_url"
        if self.api_key is None and self.aws_access_key_id and not self.region:
            return "region: signing with an AWS access key needs the region (or AWS_REGION)"
        if self.api_key is None and bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            return "aws_secret_access_key: an AWS access key needs both its id and its secret"
        if self.uses_chain():
            if not self.region:
                return "region: signing with the AWS credential chain needs the region (or AWS_REGION)"
            if problem := missing("botocore", "aws", "with no key configured, the AWS credential chain signs"):
                return f"aws_access_key_id: {problem}"
        return None

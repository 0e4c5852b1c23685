"""The mock clouds' checks are real: a SigV4 signature (ours) verifies with botocore's signer only for the
exact request, key and session token; a bearer token only while it lives."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from services.providers.bedrock.sigv4 import Credentials, sign
from tests.mockupstream.clouds import Clouds

URL = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
BODY = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'


def signed(credentials: Credentials, body: bytes = BODY) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    added = sign("POST", f"http://127.0.0.1:9000{URL}", headers, body, credentials=credentials,
                 region="us-west-2", service="bedrock", now=datetime.now(UTC))
    return {k.lower(): v for k, v in (headers | added).items()} | {"host": "127.0.0.1:9000"}


def issued(clouds: Clouds) -> Credentials:
    key, secret, token, _ = clouds.issue_aws("sts")
    return Credentials(key, secret, token)


def refusal(answer: tuple[int, bytes, dict[str, str]] | None) -> str | None:
    return None if answer is None else answer[2]["x-amzn-ErrorType"].split(":")[0]


def test_a_signature_by_a_live_issued_key_verifies() -> None:
    clouds = Clouds()
    credentials = issued(clouds)
    assert clouds.check_sigv4(b"POST", URL.encode(), signed(credentials), BODY) is None


def test_a_changed_body_a_wrong_secret_or_token_an_unknown_or_expired_key_are_refused() -> None:
    clouds = Clouds()
    live = issued(clouds)
    assert refusal(clouds.check_sigv4(b"POST", URL.encode(), signed(live), BODY + b" ")) == (
        "InvalidSignatureException")
    wrong_secret = Credentials(live.access_key_id, "not-the-secret", live.session_token)
    assert refusal(clouds.check_sigv4(b"POST", URL.encode(), signed(wrong_secret), BODY)) == (
        "InvalidSignatureException")
    wrong_token = Credentials(live.access_key_id, live.secret_access_key, "another-token")
    assert refusal(clouds.check_sigv4(b"POST", URL.encode(), signed(wrong_token), BODY)) == (
        "UnrecognizedClientException")
    unknown = Credentials("ASIAUNKNOWN", "secret", "token")
    assert refusal(clouds.check_sigv4(b"POST", URL.encode(), signed(unknown), BODY)) == (
        "UnrecognizedClientException")
    clouds.aws[live.access_key_id].expires = time.time() - 1
    assert refusal(clouds.check_sigv4(b"POST", URL.encode(), signed(live), BODY)) == "ExpiredTokenException"


def test_a_bearer_token_is_accepted_only_by_its_cloud_and_only_while_it_lives() -> None:
    clouds = Clouds()
    token, _ = clouds.issue_bearer("entra", "https://cognitiveservices.azure.com")
    headers = {"authorization": f"Bearer {token}"}
    assert clouds.check_bearer(headers, google=False) is None
    assert clouds.check_bearer(headers, google=True) is not None  # an Entra token is not Google's
    clouds.bearers[token] = ("entra", time.time() - 1)
    refused = clouds.check_bearer(headers, google=False)
    assert refused is not None and refused[0] == 401

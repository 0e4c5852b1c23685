"""Gemini on Vertex AI with Google application default credentials (google-auth), through the whole gateway:
a service account key file (GOOGLE_APPLICATION_CREDENTIALS) whose `token_uri` is the mock upstream's OAuth
token endpoint, which checks the signed JWT assertion against the account's public key; the mock's Vertex AI
endpoints refuse any call without a live access token it issued. A refresh is observed, not waited for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.infra import Nats
from tests.mockupstream.clouds import GOOGLE_TOKEN_PATH, Fetch
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, error_body, make_config

NO_CACHE = {"cache-control": "no-cache, no-store"}
ACCOUNT = "gateway@llm-edge-test.iam.gserviceaccount.com"
RESOURCE = "/v1/projects/llm-edge-test/locations/us-central1/publishers/google/models/gemini-2.5-flash"


@pytest.fixture
def service_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, upstream: MockUpstream) -> Iterator[Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    upstream.clouds.service_accounts[ACCOUNT] = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "llm-edge-test", "private_key_id": "0123456789abcdef",
        "private_key": pem, "client_email": ACCOUNT, "client_id": "108000000000000000000",
        "token_uri": upstream.url + GOOGLE_TOKEN_PATH.decode(),
    }))
    for name in ("GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "CLOUDSDK_CONFIG", "GCE_METADATA_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    yield path


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream, service_account: Path) -> AsyncIterator[Stack]:
    config = make_config(nats_server.url, providers={"vertex": {
        "adapter": "vertex", "base_url": upstream.url, "project": "llm-edge-test", "location": "us-central1"}},
        router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    yield stack
    await stack.close()


async def ask(stack: Stack, text: str = "hello vertex") -> None:
    reply = await stack.openai().chat.completions.create(
        model="vertex/gemini-2.5-flash", messages=[{"role": "user", "content": text}], extra_headers=NO_CACHE)
    assert reply.choices[0].message.content == f"Echo: {text}"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


def bearers(upstream: MockUpstream) -> list[str]:
    return [r["headers"]["authorization"].removeprefix("Bearer ") for r in upstream.requests]


def tokens(upstream: MockUpstream) -> list[Fetch]:
    return [f for f in upstream.clouds.fetches if f.source == "google"]


async def test_vertex_calls_carry_the_service_account_token(stack: Stack, upstream: MockUpstream) -> None:
    await ask(stack)
    assert upstream.stats["last_url"] == f"{RESOURCE}:generateContent"
    stream = await stack.openai().chat.completions.create(
        model="vertex/gemini-2.5-flash", messages=[{"role": "user", "content": "stream"}], stream=True,
        extra_headers=NO_CACHE)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Echo: stream"
    assert upstream.stats["last_url"] == f"{RESOURCE}:streamGenerateContent?alt=sse"
    [token] = tokens(upstream)  # one JWT grant, then the token is reused
    assert token.asked == "https://www.googleapis.com/auth/cloud-platform"
    assert bearers(upstream) == [token.key, token.key]
    assert all("x-goog-api-key" not in r["headers"] for r in upstream.requests)


async def test_the_token_is_refreshed_before_it_expires(stack: Stack, upstream: MockUpstream) -> None:
    # google-auth calls a token stale 225 s before expiry: a 228 s token is refreshed a few seconds in.
    upstream.clouds.lifetime["google"] = 228
    await ask(stack)
    async with asyncio.timeout(30):
        while len(tokens(upstream)) < 2:
            await ask(stack)
            await asyncio.sleep(0.2)  # paces the polling; the condition is the token log, not the time
    await ask(stack)
    first, second = tokens(upstream)
    assert second.at < first.expires
    used = bearers(upstream)
    switch = used.index(second.key)
    assert set(used[:switch]) == {first.key} and set(used[switch:]) == {second.key}
    assert switch >= 2


async def test_a_key_the_token_endpoint_does_not_trust_is_a_clear_502(
        stack: Stack, upstream: MockUpstream) -> None:
    upstream.clouds.service_accounts.clear()  # the account's key was deleted: its JWTs are refused
    with pytest.raises(openai.APIStatusError) as caught:
        await ask(stack)
    assert caught.value.status_code == 502
    error = error_body(caught.value)
    assert error["code"] == "provider_credentials_unavailable"
    assert "invalid_grant" in error["message"]
    assert upstream.stats["calls"] == 0

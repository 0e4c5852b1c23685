"""Azure OpenAI with an Entra ID token (azure-identity), through the whole gateway: the mock upstream plays an
App Service managed identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER, as azure-identity calls it) and
refuses any Azure OpenAI call without a live bearer token it issued. A refresh is observed, not waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from tests.infra import Nats
from tests.mockupstream.clouds import MSI_PATH, Fetch
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, error_body, make_config

NO_CACHE = {"cache-control": "no-cache, no-store"}
AZURE_VARIABLES = (
    "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE", "AZURE_USERNAME", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
)


@pytest.fixture
def managed_identity(monkeypatch: pytest.MonkeyPatch, upstream: MockUpstream) -> Iterator[None]:
    for name in AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", upstream.url + MSI_PATH.decode())
    monkeypatch.setenv("IDENTITY_HEADER", upstream.clouds.identity_header)
    yield


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream, managed_identity: None) -> AsyncIterator[Stack]:
    config = make_config(nats_server.url, providers={"azure": {"adapter": "azure", "base_url": upstream.url}},
                         router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    yield stack
    await stack.close()


async def ask(stack: Stack, text: str = "hello entra") -> None:
    reply = await stack.openai().chat.completions.create(
        model="azure/prod-gpt4o", messages=[{"role": "user", "content": text}], extra_headers=NO_CACHE)
    assert reply.choices[0].message.content == f"Echo: {text}"


def bearers(upstream: MockUpstream) -> list[str]:
    return [r["headers"]["authorization"].removeprefix("Bearer ") for r in upstream.requests]


def tokens(upstream: MockUpstream) -> list[Fetch]:
    return [f for f in upstream.clouds.fetches if f.source == "entra"]


async def test_calls_carry_the_managed_identity_token(stack: Stack, upstream: MockUpstream) -> None:
    await ask(stack)
    stream = await stack.openai().chat.completions.create(
        model="azure/prod-gpt4o", messages=[{"role": "user", "content": "stream"}], stream=True,
        extra_headers=NO_CACHE)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Echo: stream"
    [token] = tokens(upstream)  # fetched once, reused
    assert bearers(upstream) == [token.key, token.key]
    assert all("api-key" not in r["headers"] for r in upstream.requests)


async def test_the_token_is_refreshed_before_it_expires(stack: Stack, upstream: MockUpstream) -> None:
    # azure-identity refreshes from five minutes before expiry, and at most every 30 s: a 330 s token is
    # refreshed about 30 s after it was fetched (this test's length), long before it expires.
    upstream.clouds.lifetime["entra"] = 330
    await ask(stack)
    async with asyncio.timeout(60):
        while len(tokens(upstream)) < 2:
            await ask(stack)
            await asyncio.sleep(0.5)  # paces the polling; the condition is the token log, not the time
    await ask(stack)
    first, second = tokens(upstream)
    assert second.at < first.expires
    used = bearers(upstream)
    switch = used.index(second.key)
    assert set(used[:switch]) == {first.key} and set(used[switch:]) == {second.key}


async def test_the_token_is_for_the_cognitive_services_resource(stack: Stack, upstream: MockUpstream) -> None:
    await ask(stack)
    assert [t.asked for t in tokens(upstream)] == ["https://cognitiveservices.azure.com"]


async def test_a_credential_that_finds_nothing_is_a_clear_502(nats_server: Nats, upstream: MockUpstream,
                                                              managed_identity: None) -> None:
    config = make_config(nats_server.url, providers={"azure": {
        "adapter": "azure", "base_url": upstream.url, "entra_credential": "environment"}},
        router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            await ask(stack)
    finally:
        await stack.close()
    assert caught.value.status_code == 502
    error = error_body(caught.value)
    assert error["code"] == "provider_credentials_unavailable"
    assert "EnvironmentCredential" in error["message"]
    assert upstream.stats["calls"] == 0

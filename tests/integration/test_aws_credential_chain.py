"""Bedrock signed by AWS's credential chain (botocore), through the whole gateway: the mock upstream plays
EC2's instance metadata service (IMDSv2), STS (AssumeRoleWithWebIdentity, as IRSA uses it) and the ECS task
role endpoint, hands out short-lived credentials, and refuses any Bedrock call that is not signed (checked
with botocore's own signer) by a live key it issued. Refreshes are observed, not waited for: the tests poll
until a second set of credentials signs, then check it was fetched before the first expired.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest

from services.providers.worker import ProviderWorker
from shared import bus
from shared.errors import DeadlineExceeded
from shared.messages import ChatRequest, Message
from shared.subjects import Headers
from tests.infra import Nats
from tests.mockupstream.clouds import ECS_PATH, Fetch
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, error_body, make_config

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
NO_CACHE = {"cache-control": "no-cache, no-store"}
# What the chain reads; each test sets the ones it plays and hides the machine's own.
CHAIN_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_DISABLED",
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    for name in CHAIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # unless a test plays IMDS
    yield monkeypatch


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    # No key in the entry: the credential chain signs. The chain is resolved at the first call, so the
    # tests set the environment before they ask.
    config = make_config(nats_server.url, providers={
        "bedrock": {"adapter": "bedrock", "base_url": upstream.url, "region": "us-west-2"}},
        router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    yield stack
    await stack.close()


async def ask(stack: Stack, text: str = "hello signed world") -> None:
    reply = await stack.openai().chat.completions.create(
        model=f"bedrock/{MODEL}", messages=[{"role": "user", "content": text}], extra_headers=NO_CACHE)
    assert reply.choices[0].message.content == f"Echo: {text}"


def signers(upstream: MockUpstream) -> list[str | None]:
    """The access key id each Bedrock call was signed with, in order (the mock answered only live ones)."""
    return [upstream.clouds.signed_by(r["headers"]) for r in upstream.requests]


def fetched(upstream: MockUpstream, source: str) -> list[Fetch]:
    return [f for f in upstream.clouds.fetches if f.source == source]


async def until_refreshed(stack: Stack, upstream: MockUpstream, source: str) -> tuple[Fetch, Fetch]:
    """Ask until a second set of credentials from `source` has signed a call; the two sets."""
    async with asyncio.timeout(30):
        while len(fetched(upstream, source)) < 2:
            await ask(stack)
            await asyncio.sleep(0.2)  # paces the polling; the condition is the fetch log, not the time
    await ask(stack)
    first, second = fetched(upstream, source)
    return first, second


def assert_refreshed_before_expiry(upstream: MockUpstream, first: Fetch, second: Fetch) -> None:
    assert second.at < first.expires, "the second set was fetched only after the first had expired"
    used = signers(upstream)
    switch = used.index(second.key)
    # Signed with the first set up to the refresh (fetched once, not per call), with the second after it.
    assert set(used[:switch]) == {first.key} and set(used[switch:]) == {second.key}, used
    assert switch >= 2  # at least the first call and one more were signed before the refresh


async def test_web_identity_signs_and_is_refreshed_before_expiry(
        stack: Stack, upstream: MockUpstream, aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("eks-projected-token-1")
    upstream.clouds.web_identity_tokens = {"eks-projected-token-1"}
    # STS's shortest session is 900 s; botocore refreshes from 15 minutes before expiry: a few seconds in.
    upstream.clouds.lifetime["sts"] = 903
    aws_env.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    aws_env.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/llm-edge-bedrock")
    aws_env.setenv("AWS_ROLE_SESSION_NAME", "llm-edge")
    aws_env.setenv("AWS_ENDPOINT_URL_STS", upstream.url)

    await ask(stack)
    # A stream is signed the same way (another call built by the adapter).
    chunks = [c async for c in await stack.openai().chat.completions.create(
        model=f"bedrock/{MODEL}", messages=[{"role": "user", "content": "stream it"}], stream=True,
        extra_headers=NO_CACHE)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: stream it"
    assert upstream.stats["last_url"].endswith("/converse-stream")
    # IRSA rotates the projected token file: the next AssumeRoleWithWebIdentity must present the new one.
    token_file.write_text("eks-projected-token-2")
    upstream.clouds.web_identity_tokens = {"eks-projected-token-2"}

    first, second = await until_refreshed(stack, upstream, "sts")
    assert_refreshed_before_expiry(upstream, first, second)
    assert (first.asked, second.asked) == ("eks-projected-token-1", "eks-projected-token-2")


async def test_ecs_task_role_signs_and_is_refreshed_before_expiry(
        stack: Stack, upstream: MockUpstream, aws_env: pytest.MonkeyPatch) -> None:
    upstream.clouds.lifetime["ecs"] = 903
    aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", upstream.url + ECS_PATH.decode())
    aws_env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", upstream.clouds.ecs_token)

    first, second = await until_refreshed(stack, upstream, "ecs")
    assert_refreshed_before_expiry(upstream, first, second)


async def test_instance_metadata_v2_signs_with_the_role_credentials(
        stack: Stack, upstream: MockUpstream, aws_env: pytest.MonkeyPatch) -> None:
    aws_env.delenv("AWS_EC2_METADATA_DISABLED")
    aws_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", upstream.url + "/")

    await ask(stack)
    await ask(stack, "and again")
    [credentials] = fetched(upstream, "imds")  # fetched once (IMDSv2: the session token first), then reused
    assert upstream.clouds.imds_tokens
    assert signers(upstream) == [credentials.key, credentials.key]
    assert upstream.requests[-1]["headers"]["x-amz-security-token"]


async def test_a_profile_of_the_shared_files_signs(nats_server: Nats, upstream: MockUpstream,
                                                   aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "no-credentials").write_text(
        "[default]\naws_access_key_id = AKIADEFAULTDEFAULT00\naws_secret_access_key = not-this-one\n\n"
        "[gateway]\naws_access_key_id = AKIAGATEWAYPROFILE00\naws_secret_access_key = gateway-secret\n")
    upstream.clouds.add_aws_key("AKIAGATEWAYPROFILE00", "gateway-secret")
    config = make_config(nats_server.url, providers={"bedrock": {
        "adapter": "bedrock", "base_url": upstream.url, "region": "us-west-2", "aws_profile": "gateway"}})
    stack = await Stack(config).start()
    try:
        await ask(stack)
    finally:
        await stack.close()
    assert signers(upstream) == ["AKIAGATEWAYPROFILE00"]


async def test_credentials_that_expired_are_refused_by_the_upstream(
        stack: Stack, upstream: MockUpstream, aws_env: pytest.MonkeyPatch) -> None:
    """The mock's check is real: a set that has expired (here: revoked early) is refused with AWS's 403,
    and the caller sees our 502 naming the provider's refusal, not a 500."""
    aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", upstream.url + ECS_PATH.decode())
    aws_env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", upstream.clouds.ecs_token)
    await ask(stack)
    [credentials] = fetched(upstream, "ecs")
    upstream.clouds.aws[credentials.key].expires = 0.0
    with pytest.raises(openai.APIStatusError) as caught:
        await ask(stack)
    assert caught.value.status_code == 502
    assert error_body(caught.value)["code"] == "provider_auth_failed"
    assert "expired" in error_body(caught.value)["message"]


async def test_a_credential_service_that_hangs_ends_the_call_at_its_deadline(
        nats_server: Nats, upstream: MockUpstream, aws_env: pytest.MonkeyPatch) -> None:
    """The worker's handler, called as the bus would with a 1 s deadline: botocore would wait 2 s per try
    of the hanging endpoint (and give up with a 502), the request's own deadline ends the call first."""
    release = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # accepts the connection, never answers
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/credentials")
    worker = ProviderWorker(make_config(nats_server.url, providers={"bedrock": {
        "adapter": "bedrock", "base_url": upstream.url, "region": "us-west-2"}}), "bedrock")
    deadline = {Headers.DEADLINE: str(int((time.time() + 1) * 1000))}
    request = ChatRequest(model=MODEL, messages=[Message(role="user", content="hi")])
    try:
        with pytest.raises(DeadlineExceeded, match="fetching the provider's credentials"):
            await worker.chat(request, bus.Context(b"", deadline))
        assert upstream.stats["calls"] == 0
    finally:
        release.set()
        server.close()
        await worker.close()


async def test_no_credentials_anywhere_is_a_clear_502(stack: Stack, upstream: MockUpstream,
                                                       aws_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await ask(stack)
    assert caught.value.status_code == 502
    error = error_body(caught.value)
    assert error["code"] == "provider_credentials_unavailable"
    assert "no AWS credentials found" in error["message"]
    assert upstream.stats["calls"] == 0  # nothing unsigned was sent

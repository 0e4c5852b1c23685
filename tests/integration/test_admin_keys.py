"""The admin API's keys, as an operator and a client see them: off (404) without an admin key, 401 without
the right one; a key created through it works at once with the official `openai` SDK, on another ingress
replica too; updated limits and models apply; a rotated key's old secret and a revoked key get 401 on
every replica within a second; keys of the configuration file are listed read-only; the secret is
returned once and never listed or logged.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.infra import Nats
from tests.integration.test_request_path import eventually
from tests.stack import Stack, make_config

ADMIN = "sk-admin-0123456789abcdef"
CONFIGURED = "sk-configured-0123456789"
PROMPT = [{"role": "user", "content": "What is NATS?"}]


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def admin_client(url: str, key: str = ADMIN) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{url}/admin", headers={"authorization": f"Bearer {key}"}, timeout=10)


@pytest.fixture
async def stack(nats_server: Nats) -> AsyncIterator[Stack]:
    config = make_config(nats_server.url, admin={"key_sha256": sha(ADMIN)},
                         keys=[{"name": "from-file", "sha256": sha(CONFIGURED), "rpm": 100}])
    stack = await Stack(config).start()
    yield stack
    await stack.close()


async def ask(url: str, key: str, model: str = "mock") -> int:
    """The status a client gets for one chat completion with `key`."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    try:
        await client.chat.completions.create(model=model, messages=PROMPT)  # type: ignore[arg-type]
    except openai.APIStatusError as exc:
        return exc.status_code
    finally:
        await client.close()
    return 200


async def within_a_second(urls: list[str], key: str, status: int) -> float:
    """How long until every replica answers `key` with `status` (fails after a second)."""
    started = time.monotonic()
    pending = set(urls)
    while pending and time.monotonic() - started < 1.0:
        pending = {url for url in pending if await ask(url, key) != status}
    assert not pending, f"still not {status} after a second on {pending}"
    return time.monotonic() - started


async def test_without_an_admin_key_the_admin_api_does_not_exist(nats_server: Nats) -> None:
    stack = await Stack(make_config(nats_server.url)).start()
    try:
        async with admin_client(stack.url) as admin:
            for method, path in (("GET", "/keys"), ("POST", "/keys"), ("GET", "/spend"), ("DELETE", "/keys/x")):
                answer = await admin.request(method, path)
                assert answer.status_code == 404, (method, path)
                assert answer.json()["error"]["code"] == "not_found"
        assert await ask(stack.url, "anything") == 200  # and the gateway stays open, as before
    finally:
        await stack.close()


async def test_the_admin_api_wants_the_admin_key_and_no_other(stack: Stack) -> None:
    for key in (None, "sk-wrong", CONFIGURED):
        headers = {} if key is None else {"authorization": f"Bearer {key}"}
        answer = await stack.http.get("/admin/keys", headers=headers)
        assert answer.status_code == 401, key
        assert answer.json()["error"]["code"] == "invalid_api_key"
    # ...and the admin key is not a key for models: with an admin key configured, callers need keys.
    assert await ask(stack.url, ADMIN) == 401
    assert await ask(stack.url, "sk-anything") == 401


async def test_create_use_update_rotate_revoke(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with admin_client(stack.url) as admin:
        created = await admin.post("/keys", json={"name": "team-a", "models": ["mock"], "rpm": 2, "tenant": "a"})
        assert created.status_code == 201, created.text
        body = created.json()
        secret = body.pop("key")
        assert secret.startswith("sk-edge-") and len(secret) > 40
        assert body == {"object": "api_key", "name": "team-a", "source": "store", "read_only": False,
                        "models": ["mock"], "rpm": 2, "tpm": None, "budget_usd": None, "tenant": "a",
                        "created_at": body["created_at"], "updated_at": body["created_at"], "rotated_at": None}
        assert created.headers["cache-control"] == "no-store"

        assert await ask(stack.url, secret) == 200
        assert await ask(stack.url, secret, model="mock/other") == 403  # outside its models
        assert await ask(stack.url, secret) == 200
        assert await ask(stack.url, secret) == 429  # rpm 2

        listed = (await admin.get("/keys")).json()["data"]
        assert [(k["name"], k["source"], k["read_only"]) for k in listed] == [
            ("from-file", "config", True), ("team-a", "store", False)]
        shown = await admin.get("/keys/team-a")
        assert shown.json()["rpm"] == 2
        assert "key" not in shown.json() and all("key" not in k for k in listed)

        updated = await admin.patch("/keys/team-a", json={"rpm": None, "models": None})
        assert updated.status_code == 200, updated.text
        assert (updated.json()["rpm"], updated.json()["models"], updated.json()["tenant"]) == (None, None, "a")
        await within_a_second([stack.url], secret, 200)  # no limit now
        assert await ask(stack.url, secret, model="mock/other") == 200

        rotated = await admin.post("/keys/team-a/rotate")
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["key"]
        assert new_secret != secret and rotated.json()["rotated_at"] is not None
        assert await ask(stack.url, new_secret) == 200
        await within_a_second([stack.url], secret, 401)

        revoked = await admin.delete("/keys/team-a")
        assert revoked.json() == {"object": "api_key", "name": "team-a", "revoked": True}
        await within_a_second([stack.url], new_secret, 401)
        assert (await admin.get("/keys/team-a")).status_code == 404
        assert (await admin.delete("/keys/team-a")).status_code == 404
    logged = caplog.text
    assert "team-a" in logged  # the audit lines name the key...
    assert secret not in logged and new_secret not in logged  # ...never its secret


async def test_a_key_created_on_one_replica_works_at_once_on_another_and_revocation_reaches_both(
    stack: Stack,
) -> None:
    other = await stack.add_ingress()
    urls = [stack.url, other]
    async with admin_client(stack.url) as admin:
        for round in range(3):
            created = await admin.post("/keys", json={"name": f"replicated-{round}"})
            secret = created.json()["key"]
            assert await ask(other, secret) == 200  # at once: no waiting for the other replica's watch
            assert await ask(stack.url, secret) == 200
            assert (await admin.delete(f"/keys/replicated-{round}")).status_code == 200
            await within_a_second(urls, secret, 401)


async def test_configuration_keys_are_read_only(stack: Stack) -> None:
    async with admin_client(stack.url) as admin:
        shown = await admin.get("/keys/from-file")
        assert shown.json()["source"] == "config" and shown.json()["read_only"] is True
        for method, path, body in (("PATCH", "/keys/from-file", {"rpm": 5}), ("POST", "/keys/from-file/rotate", None),
                                   ("DELETE", "/keys/from-file", None)):
            answer = await admin.request(method, path, json=body)
            assert answer.status_code == 409, (method, answer.text)
            assert answer.json()["error"]["code"] == "key_read_only"
        taken = await admin.post("/keys", json={"name": "from-file"})
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "key_exists"
    assert await ask(stack.url, CONFIGURED) == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "has space"}, "name"), ({"rpm": 0}, "rpm"), ({"tpm": "many"}, "tpm"), ({"budget_usd": -1}, "budget_usd"),
    ({"models": []}, "models"), ({"models": ["no-such-model"]}, "models"), ({"tenant": ""}, "tenant"),
    ({"colour": "red"}, "colour"),
])
async def test_bad_key_settings_are_a_400_naming_the_field(stack: Stack, body: dict[str, Any], field: str) -> None:
    async with admin_client(stack.url) as admin:
        answer = await admin.post("/keys", json=body)
        assert answer.status_code == 400, answer.text
        assert field in answer.json()["error"]["message"]
        malformed = await admin.post("/keys", content=b"{not json")
        assert malformed.status_code == 400
        assert (await admin.get("/keys")).json()["data"][1:] == []  # nothing was created


async def test_a_name_is_taken_once(stack: Stack) -> None:
    async with admin_client(stack.url) as admin:
        first = await admin.post("/keys", json={"name": "once"})
        second = await admin.post("/keys", json={"name": "once"})
        assert first.status_code == 201 and second.status_code == 409
        assert second.json()["error"]["code"] == "key_exists"
        generated = await admin.post("/keys", json={})
        assert generated.status_code == 201 and generated.json()["name"].startswith("key-")


async def test_with_the_key_store_gone_every_replica_keeps_the_keys_it_knows(stack: Stack) -> None:
    other = await stack.add_ingress()
    async with admin_client(stack.url) as admin:
        secret = (await admin.post("/keys", json={"name": "kept"})).json()["key"]
    for app in stack.apps:  # each replica's watch has delivered it (not only a lookup in the store)
        keyring = app.gateway.keyring
        assert keyring is not None
        await eventually(lambda keyring=keyring: "kept" in keyring.names())  # type: ignore[misc]
    assert stack.ingress_bus is not None
    await stack.ingress_bus.nc.jetstream().delete_stream(f"KV_{stack.config.prefix}_keys")  # the bucket is lost
    for url in (stack.url, other):
        assert await ask(url, secret) == 200
        assert await ask(url, "sk-edge-never-created") == 401
    async with admin_client(stack.url) as admin:  # the next write makes the bucket again, and it is followed
        fresh = (await admin.post("/keys", json={"name": "after"})).json()["key"]
    assert await ask(other, fresh) == 200

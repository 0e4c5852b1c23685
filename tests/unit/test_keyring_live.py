"""The keyring with the key store's keys beside the configuration's: whole sets and single changes applied,
configured names never shadowed, the configuration's admin key checked."""

from __future__ import annotations

import hashlib

import pytest

from services.ingress.auth import Keyring, keyring
from services.ingress.limits import Limiter
from services.providers.settings import SETTINGS
from shared.config import ApiKey, ConfigError, build
from shared.errors import AuthenticationFailed


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ring() -> Keyring:
    config = build({"keys": [{"name": "file", "sha256": sha("sk-file")}], "admin": {"key_sha256": sha("sk-adm")}},
                   SETTINGS)
    return Keyring(config, Limiter(config, None))


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def test_stored_keys_come_and_go_beside_the_configured_ones() -> None:
    keys = ring()
    keys.apply({"a": ApiKey(name="a", sha256=sha("sk-a")), "b": ApiKey(name="b", sha256=sha("sk-b"), rpm=5)})
    assert keys.names() == ["a", "b", "file"]
    assert keys.authenticate(bearer("sk-b")).rule.rpm == 5
    keys.changed("b", ApiKey(name="b", sha256=sha("sk-b2"), rpm=7))  # rotated and updated
    assert keys.authenticate(bearer("sk-b2")).rule.rpm == 7
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(bearer("sk-b"))
    keys.changed("a", None)  # revoked
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(bearer("sk-a"))
    keys.apply({})  # a new watch's whole set replaces what was there
    assert keys.names() == ["file"]
    assert keys.authenticate(bearer("sk-file")).name == "file"


def test_a_stored_key_never_takes_a_configured_name() -> None:
    keys = ring()
    keys.changed("file", ApiKey(name="file", sha256=sha("sk-impostor")))
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(bearer("sk-impostor"))
    assert keys.authenticate(bearer("sk-file")).name == "file"


async def test_without_a_store_an_unknown_key_is_refused_as_before() -> None:
    with pytest.raises(AuthenticationFailed):
        await ring().find(bearer("sk-unknown"))


def test_an_admin_key_makes_a_keyring_even_without_keys() -> None:
    assert keyring(build({}, SETTINGS)) is None  # open, as before
    assert keyring(build({"admin": {"key_sha256": sha("sk-adm")}}, SETTINGS)) is not None


@pytest.mark.parametrize(("data", "field"), [
    ({"admin": {"key_sha256": "not-hex"}}, "admin.key_sha256"),
    ({"admin": {"key_sha256": sha("k")}, "keys": [{"name": "x", "sha256": sha("k")}]}, "admin.key_sha256"),
    ({"spend": {"hourly_retention_days": 0}}, "spend.hourly_retention_days"),
])
def test_bad_admin_settings_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build(data, SETTINGS)


def test_the_admin_key_digest_comes_from_the_environment_too() -> None:
    config = build({}, SETTINGS, {"LLM_EDGE_ADMIN_KEY_SHA256": sha("sk-adm")})
    assert config.admin.key_sha256 == sha("sk-adm")

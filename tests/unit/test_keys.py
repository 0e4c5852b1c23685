"""API keys and limits, the pure parts: configuration checks, key extraction and matching, the GCRA
arithmetic of requests and tokens, OpenAI's header formats, budget periods."""

from __future__ import annotations

import calendar
import hashlib
import io
import json
from pathlib import Path

import msgspec
import pytest

from llm_edge.cli import main
from services.ingress.auth import Keyring, presented_key
from services.ingress.limits import (
    Limiter,
    LocalLimits,
    Rule,
    Snapshot,
    go_duration,
    headers,
    period,
    refusal,
    retry_after,
    verdict,
)
from services.providers.settings import SETTINGS
from shared.config import Config, ConfigError, decode, encode, load
from shared.errors import AuthenticationFailed, PermissionDenied, QuotaExceeded, RateLimited

DIGEST = hashlib.sha256(b"sk-secret").hexdigest()


def config_of(text: str, tmp_path: Path) -> Config:
    file = tmp_path / "edge.yaml"
    file.write_text(text)
    return load(file, env={}, adapters=SETTINGS)


def test_keys_from_the_file_with_defaults(tmp_path: Path) -> None:
    config = config_of(f"keys:\n  - {{name: team-a, sha256: {DIGEST}, rpm: 60, models: [mock]}}\n", tmp_path)
    (key,) = config.keys
    assert key.rpm == 60 and key.tpm is None and key.budget_usd is None
    assert key.models == ["mock"] and key.namespace == "team-a"
    assert config.limits.window_seconds == 60 and config.limits.budget_period == "month"


def test_limits_redis_defaults_to_the_cache_redis() -> None:
    assert load(env={"REDIS_URL": "redis://r:1/0"}, adapters=SETTINGS).limits_redis_url == "redis://r:1/0"
    both = {"REDIS_URL": "redis://r:1/0", "LIMITS_REDIS_URL": "redis://l:2/0"}
    assert load(env=both, adapters=SETTINGS).limits_redis_url == "redis://l:2/0"


def test_keys_from_the_environment_replace_the_files(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text(f"keys:\n  - {{name: file, sha256: {DIGEST}}}\n")
    env = {"LLM_EDGE_KEYS": json.dumps([{"name": "env", "sha256": DIGEST, "tenant": "acme"}])}
    config = load(file, env=env, adapters=SETTINGS)
    (key,) = config.keys
    assert key.name == "env" and key.namespace == "acme"
    assert decode(encode(config), SETTINGS).keys == config.keys  # what `llm-edge up` hands its children


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ([{"name": "a", "sha256": "sk-plain-key"}], "keys[0].sha256"),
        ([{"name": "a", "sha256": DIGEST.upper()}], "keys[0].sha256"),
        ([{"name": "a", "sha256": DIGEST}, {"name": "a", "sha256": "0" * 64}], "keys[1].name"),
        ([{"name": "a", "sha256": DIGEST}, {"name": "b", "sha256": DIGEST}], "keys[1].sha256"),
        ([{"name": "a", "sha256": DIGEST, "rpm": 0}], "keys[0].rpm"),
        ([{"name": "a", "sha256": DIGEST, "tpm": -5}], "keys[0].tpm"),
        ([{"name": "a", "sha256": DIGEST, "budget_usd": -1}], "keys[0].budget_usd"),
        ([{"name": "a", "sha256": DIGEST, "models": []}], "keys[0].models"),
        ([{"name": "a", "sha256": DIGEST, "tenant": ""}], "keys[0].tenant"),
        ([{"name": "", "sha256": DIGEST}], "keys[0].name"),
        ([{"name": "a", "sha256": DIGEST, "rmp": 3}], "rmp"),
    ],
)
def test_bad_keys_name_the_field(keys: list[dict[str, object]], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(env={"LLM_EDGE_KEYS": json.dumps(keys)}, adapters=SETTINGS)
    assert named in str(caught.value)
    assert "sk-plain-key" not in str(caught.value)


def test_bad_limits_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"limits\.window_seconds"):
        config_of("limits: {window_seconds: 0}\n", tmp_path)
    with pytest.raises(ConfigError, match="budget_period"):
        config_of("limits: {budget_period: weekly}\n", tmp_path)


def test_hash_key_prints_the_digest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-secret\n"))
    assert main(["hash-key"]) == 0
    assert capsys.readouterr().out.strip() == DIGEST


@pytest.mark.parametrize(
    ("sent", "key"),
    [
        ({"authorization": "Bearer sk-1"}, "sk-1"),
        ({"authorization": "bearer  sk-1 "}, "sk-1"),
        ({"x-api-key": "sk-2"}, "sk-2"),
        ({"authorization": "Bearer sk-1", "x-api-key": "sk-2"}, "sk-1"),
        ({"authorization": "Basic abc", "x-api-key": "sk-2"}, "sk-2"),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_the_key_comes_from_bearer_or_x_api_key(sent: dict[str, str], key: str | None) -> None:
    assert presented_key(sent) == key


def keyring(**fields: object) -> Keyring:
    config = msgspec.convert({"keys": [{"name": "team", "sha256": DIGEST, **fields}]}, Config)
    return Keyring(config, Limiter(config, None))


def test_keyring_matches_digests_and_models() -> None:
    ring = keyring(models=["mock"])
    grant = ring.authenticate({"authorization": "Bearer sk-secret"})
    assert grant.name == "team" and grant.namespace == "team"
    ring.authorize(grant, "mock")
    with pytest.raises(PermissionDenied):
        ring.authorize(grant, "gpt-4o")
    assert ring.visible(grant, ["mock", "gpt-4o"]) == ["mock"]
    for sent in ({"authorization": "Bearer sk-secreT"}, {}):
        with pytest.raises(AuthenticationFailed) as caught:
            ring.authenticate(sent)
        assert caught.value.http_status == 401 and caught.value.code == "invalid_api_key"
        assert "sk-secre" not in caught.value.message


RPM3 = Rule("k", 60.0, 3, None, None)


def test_gcra_admits_the_burst_then_one_per_interval() -> None:
    tat, now = 0.0, 1000.0
    for _ in range(3):
        assert verdict(RPM3, now, tat, 0, 0) is None
        tat = max(tat, now) + 20
    assert verdict(RPM3, now, tat, 0, 0) == "requests"
    assert verdict(RPM3, now + 19.9, tat, 0, 0) == "requests"
    assert verdict(RPM3, now + 20, tat, 0, 0) is None  # one interval later, one more


def test_tokens_are_refused_once_a_window_of_usage_is_charged() -> None:
    rule = Rule("k", 60.0, None, 100, None)
    assert verdict(rule, 0, 0, 59.9, 0) is None  # 99.8 tokens used
    assert verdict(rule, 0, 0, 60.0, 0) == "tokens"


def test_budget_is_refused_once_spent() -> None:
    rule = Rule("k", 60.0, None, None, 1.0)
    assert verdict(rule, 0, 0, 0, 0.99) is None
    assert verdict(rule, 0, 0, 0, 1.0) == "budget"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0, "0ms"), (0.0123, "13ms"), (1.0, "1s"), (6.5, "6.5s"), (360.0, "6m0s"),
                          (61.2, "1m2s")],
)
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_headers_and_retry_after() -> None:
    rule = Rule("k", 60.0, 3, 100, None)
    snap = Snapshot(now=0.0, requests_tat=40.0, tokens_tat=30.0, spent=0.0)
    assert headers(rule, snap) == {
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "40s",
        "x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "50",
        "x-ratelimit-reset-tokens": "30s",
    }
    full = Snapshot(now=0.0, requests_tat=60.0, tokens_tat=75.0, spent=0.0, denied="tokens")
    assert retry_after(rule, full, None) == 20.0  # both limits must allow: the later of the two
    error = refusal(rule, full, None)
    assert isinstance(error, RateLimited) and error.error_type == "tokens" and error.retry_after == 20.0
    assert error.code == "rate_limit_exceeded" and "'k'" in error.message


def test_a_spent_budget_is_insufficient_quota_until_the_period_ends() -> None:
    rule = Rule("k", 60.0, None, None, 1.0)
    snap = Snapshot(now=0.0, requests_tat=0.0, tokens_tat=0.0, spent=1.5, denied="budget")
    error = refusal(rule, snap, None)
    assert isinstance(error, QuotaExceeded) and error.http_status == 429 and error.retry_after is None
    assert error.code == "insufficient_quota" and error.error_type == "insufficient_quota"


def test_budget_periods_are_calendar_months_in_utc() -> None:
    at = calendar.timegm((2026, 12, 31, 23, 59, 0))
    name, end = period("month", at)
    assert name == "2026-12" and end == calendar.timegm((2027, 1, 1, 0, 0, 0))
    assert period("total", at) == ("total", None)


def test_local_limits_count_requests_tokens_and_spend() -> None:
    local = LocalLimits("month")
    rule = Rule("k", 60.0, 2, 10, 0.5)
    assert local.admit(rule, "p").denied is None
    assert local.admit(rule, "p").denied is None
    assert local.admit(rule, "p").denied == "requests"
    other = Rule("j", 60.0, None, 10, 0.5)
    local.charge(other, "p", 12, 0.0)
    assert local.admit(other, "p").denied == "tokens"
    budget = Rule("b", 60.0, None, None, 0.5)
    local.charge(budget, "p", 0, 0.5)
    assert local.admit(budget, "p").denied == "budget"
    assert local.admit(budget, "next month").denied is None  # a new period starts from nothing


def test_forced_counts_stay_within_one_window() -> None:
    local = LocalLimits("month")
    for _ in range(10):
        local.admit(RPM3, "", force=True)
    snap = local.admit(RPM3, "", force=True)
    assert snap.requests_tat - snap.now <= 60.0 + 1e-6


def test_log_lines_name_the_key_never_the_key() -> None:
    import logging

    from shared.logs import JsonFormatter, key_name

    token = key_name.set("team")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        line = json.loads(JsonFormatter("ingress").format(record))
    finally:
        key_name.reset(token)
    assert line["key"] == "team"

"""Configuration: defaults that work with nothing set, environment overrides, errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError, load


def test_nothing_configured_serves_the_mock_provider() -> None:
    config = load(env={})
    assert list(config.providers) == ["mock"]
    assert config.ingress.port == 8080 and config.cache.redis_url is None


def test_provider_keys_in_the_environment_enable_those_providers() -> None:
    config = load(env={"OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b"})
    assert set(config.providers) == {"openai", "anthropic"}
    assert config.providers["openai"].api_key == "sk-a"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text("ingress:\n  port: 9000\nnats_url: nats://a:1\n")
    config = load(file, env={"PORT": "9100", "REDIS_URL": "redis://r:6379/0", "NATS_URL": "nats://b:2"})
    assert config.ingress.port == 9100
    assert config.cache.redis_url == "redis://r:6379/0"
    assert config.nats_url == "nats://b:2"


def test_toml_file(tmp_path: Path) -> None:
    file = tmp_path / "edge.toml"
    file.write_text(
        '[providers.local]\nadapter = "openai_compatible"\nbase_url = "http://127.0.0.1:8000/v1"\n'
        '[[models]]\nname = "fast"\ntargets = [{provider = "local", model = "llama"}]\n'
    )
    config = load(file, env={})
    assert config.models[0].targets[0].provider == "local"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("ingress:\n  port: eighty\n", "$.ingress.port"),
        ("cache:\n  ttl_secnds: 5\n", "ttl_secnds"),
        ("providers:\n  foo: {}\n", "providers.foo.adapter"),
        ("providers:\n  mock: {}\nmodels:\n  - name: x\n    targets: [{provider: nope, model: m}]\n",
         "models[0].targets[0].provider"),
        ("models:\n  - name: x\n    targets: []\n", "models[0].targets"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, text: str, named: str) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(file, env={})
    assert named in str(caught.value)


def test_bad_environment_value_is_named() -> None:
    with pytest.raises(ConfigError, match="PORT"):
        load(env={"PORT": "http"})


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "absent.yaml", env={})


# --- the seed's switches (issue #15, item 11) --------------------------------------------------------


def test_enable_switches_are_read_from_the_environment() -> None:
    from shared.config import ConfigError, load

    base = {"REDIS_URL": "redis://127.0.0.1:6379/0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    on = load(None, {**base})
    assert (on.cache.l2_enabled, on.tracing_endpoint, on.metrics_enabled) == (True, "http://collector:4318", True)
    off = load(None, {**base, "ENABLE_L2_CACHE": "false", "ENABLE_TRACING": "0", "ENABLE_METRICS": "no"})
    assert (off.cache.l2_enabled, off.tracing_endpoint, off.metrics_enabled) == (False, None, False)
    assert off.limits_redis_url == "redis://127.0.0.1:6379/0"  # L2 off; the rate limits keep their Redis
    assert load(None, {"ENABLE_TRACING": "true"}).tracing_endpoint == "http://localhost:4318"
    assert load(None, {}).tracing_endpoint is None
    import pytest

    with pytest.raises(ConfigError, match="ENABLE_METRICS='maybe': expected true or false"):
        load(None, {"ENABLE_METRICS": "maybe"})

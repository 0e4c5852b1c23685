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

"""Configuration: defaults that work with nothing set, environment overrides, errors naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.providers.bedrock.settings import BedrockSettings
from services.providers.mock.settings import MockSettings
from services.providers.openai.settings import OpenAICompatibleSettings
from services.providers.registry import ADAPTERS
from services.providers.settings import SETTINGS
from shared.config import ConfigError, decode, encode, load
from shared.routes import Routes


def test_nothing_configured_serves_the_mock_provider() -> None:
    config = load(env={}, adapters=SETTINGS)
    assert list(config.providers) == ["mock"]
    assert config.ingress.port == 8080 and config.cache.redis_url is None


def test_provider_keys_in_the_environment_enable_those_providers() -> None:
    config = load(env={"OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b"}, adapters=SETTINGS)
    assert set(config.providers) == {"openai", "anthropic"}
    assert config.providers["openai"].api_key == "sk-a"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text("ingress:\n  port: 9000\nnats_url: nats://a:1\n")
    env = {"PORT": "9100", "REDIS_URL": "redis://r:6379/0", "NATS_URL": "nats://b:2"}
    config = load(file, env=env, adapters=SETTINGS)
    assert config.ingress.port == 9100
    assert config.cache.redis_url == "redis://r:6379/0"
    assert config.nats_url == "nats://b:2"


def test_toml_file(tmp_path: Path) -> None:
    file = tmp_path / "edge.toml"
    file.write_text(
        '[providers.local]\nadapter = "openai_compatible"\nbase_url = "http://127.0.0.1:8000/v1"\n'
        '[[models]]\nname = "fast"\ntargets = [{provider = "local", model = "llama"}]\n'
    )
    config = load(file, env={}, adapters=SETTINGS)
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
        load(file, env={}, adapters=SETTINGS)
    assert named in str(caught.value)


def test_bad_environment_value_is_named() -> None:
    with pytest.raises(ConfigError, match="PORT"):
        load(env={"PORT": "http"}, adapters=SETTINGS)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "absent.yaml", env={}, adapters=SETTINGS)


# --- provider settings: each adapter's own struct ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("providers:\n  openai: {api_key: k, region: us-east-1}\n", "region"),  # a Bedrock field
        ("providers:\n  local: {adapter: openai_compatible, latency_ms: 5}\n", "latency_ms"),  # the mock's
        ("providers:\n  gemini: {api_version: v1}\n", "api_version"),  # Azure's
    ],
)
def test_another_adapters_field_is_an_error_naming_it(tmp_path: Path, text: str, named: str) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(file, env={}, adapters=SETTINGS)
    message = str(caught.value)
    assert f"`{named}`" in message and "providers." in message and "unknown field" in message


def test_each_entry_is_its_adapters_settings(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text(
        "providers:\n  bedrock: {region: eu-west-1, api_key: b}\n  local: {adapter: openai_compatible}\n"
        "  mock: {latency_ms: 5}\n"
    )
    providers = load(file, env={}, adapters=SETTINGS).providers
    assert isinstance(providers["bedrock"], BedrockSettings) and providers["bedrock"].region == "eu-west-1"
    assert isinstance(providers["local"], OpenAICompatibleSettings) and providers["local"].adapter == (
        "openai_compatible")
    assert isinstance(providers["mock"], MockSettings) and providers["mock"].latency_ms == 5


def test_an_adapters_environment_variables_fill_only_its_own_entry(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    # An entry named "bedrock" that is not the Bedrock adapter takes no AWS_* variable (it has no region).
    file.write_text("providers:\n  bedrock: {adapter: openai_compatible, base_url: 'http://h/v1'}\n")
    config = load(file, env={"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "A"}, adapters=SETTINGS)
    assert isinstance(config.providers["bedrock"], OpenAICompatibleSettings)


def test_the_configuration_crosses_to_child_processes_with_its_settings_types(tmp_path: Path) -> None:
    config = load(env={"AWS_BEARER_TOKEN_BEDROCK": "b", "AWS_REGION": "us-west-2"}, adapters=SETTINGS)
    again = decode(encode(config), SETTINGS)
    assert again == config and isinstance(again.providers["bedrock"], BedrockSettings)


def test_every_adapter_has_its_settings_under_the_same_name() -> None:
    assert set(ADAPTERS) == set(SETTINGS)
    for name, adapter in ADAPTERS.items():
        assert adapter.settings is SETTINGS[name] and SETTINGS[name].tag() == name


def test_providers_answering_under_their_own_name_are_listed_without_a_route(tmp_path: Path) -> None:
    assert Routes(load(env={}, adapters=SETTINGS)).public_models() == ["mock"]
    assert Routes(load(env={"OPENAI_API_KEY": "k"}, adapters=SETTINGS)).public_models() == []
    file = tmp_path / "edge.yaml"
    file.write_text("providers:\n  demo: {adapter: mock}\nmodels:\n  - {name: m, targets: [{provider: demo, "
                    "model: mock}]}\n")
    assert Routes(load(file, env={}, adapters=SETTINGS)).public_models() == ["m", "mock"]


def test_reading_the_configuration_loads_no_adapter_code() -> None:
    code = ("import sys; from services.providers.settings import SETTINGS; from shared.config import load; "
            "load(env={'OPENAI_API_KEY': 'k'}, adapters=SETTINGS); "
            "print(sorted(m for m in sys.modules if m.endswith(('.adapter', '.stream', '.registry'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the seed's switches (issue #15, item 11) --------------------------------------------------------


def test_enable_switches_are_read_from_the_environment() -> None:
    from shared.config import ConfigError, load

    base = {"REDIS_URL": "redis://127.0.0.1:6379/0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    on = load(None, {**base}, adapters=SETTINGS)
    assert (on.cache.l2_enabled, on.tracing_endpoint, on.metrics_enabled) == (True, "http://collector:4318", True)
    off = load(None, {**base, "ENABLE_L2_CACHE": "false", "ENABLE_TRACING": "0", "ENABLE_METRICS": "no"},
               adapters=SETTINGS)
    assert (off.cache.l2_enabled, off.tracing_endpoint, off.metrics_enabled) == (False, None, False)
    assert off.limits_redis_url == "redis://127.0.0.1:6379/0"  # L2 off; the rate limits keep their Redis
    assert load(None, {"ENABLE_TRACING": "true"}, adapters=SETTINGS).tracing_endpoint == "http://localhost:4318"
    assert load(None, {}, adapters=SETTINGS).tracing_endpoint is None
    import pytest

    with pytest.raises(ConfigError, match="ENABLE_METRICS='maybe': expected true or false"):
        load(None, {"ENABLE_METRICS": "maybe"}, adapters=SETTINGS)


def test_jetstream_replicas_default_to_one_and_take_a_cluster_size(tmp_path: Path) -> None:
    assert load(env={}, adapters=SETTINGS).jetstream_replicas == 1
    assert load(env={"JETSTREAM_REPLICAS": "3"}, adapters=SETTINGS).jetstream_replicas == 3
    file = tmp_path / "edge.yaml"
    file.write_text("jetstream_replicas: 3\n")
    assert load(file, env={}, adapters=SETTINGS).jetstream_replicas == 3
    file.write_text("jetstream_replicas: 7\n")
    with pytest.raises(ConfigError, match="jetstream_replicas"):
        load(file, env={}, adapters=SETTINGS)
    with pytest.raises(ConfigError, match="JETSTREAM_REPLICAS"):
        load(env={"JETSTREAM_REPLICAS": "0"}, adapters=SETTINGS)


def test_a_nats_url_may_list_a_clusters_nodes() -> None:
    from shared.bus.connection import servers

    assert servers("nats://a:4222") == ["nats://a:4222"]
    assert servers("nats://a:4222, nats://b:4222,nats://c:4222") == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]

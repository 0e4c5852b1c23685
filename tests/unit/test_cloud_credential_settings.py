"""The cloud credential chains' settings: which entries use a chain, Vertex AI's address, the errors at load
(naming the optional extra when its library is missing), and that the adapters import without the extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

from services.providers.azure.adapter import adapter as azure
from services.providers.bedrock.adapter import adapter as bedrock
from services.providers.settings import SETTINGS
from services.providers.vertex.adapter import adapter as vertex
from services.providers.vertex.settings import VertexSettings
from shared.config import ConfigError, build
from shared.messages import ChatRequest, Message


def config(entry: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return build({"providers": {"cloud": entry}}, SETTINGS, env).provider("cloud")


def test_bedrock_uses_the_chain_only_without_a_key() -> None:
    chain = config({"adapter": "bedrock", "region": "eu-west-1"})
    assert bedrock.authorizer(chain, provider="cloud") is not None
    static = config({"adapter": "bedrock", "region": "eu-west-1", "aws_access_key_id": "AKID",
                     "aws_secret_access_key": "secret"})
    assert bedrock.authorizer(static, provider="cloud") is None
    api_key = config({"adapter": "bedrock", "region": "eu-west-1", "api_key": "bedrock-key"})
    assert bedrock.authorizer(api_key, provider="cloud") is None


def test_bedrock_reads_the_profile_from_aws_profile() -> None:
    settings = build({}, SETTINGS, {"AWS_BEARER_TOKEN_BEDROCK": "k", "AWS_REGION": "us-east-1",
                                    "AWS_PROFILE": "gateway"}).provider("bedrock")
    assert settings.aws_profile == "gateway"  # type: ignore[attr-defined]


def test_the_chain_needs_a_region() -> None:
    with pytest.raises(ConfigError, match=r"providers\.cloud\.region: .*credential chain"):
        config({"adapter": "bedrock", "base_url": "http://127.0.0.1:9"})


def test_azure_uses_entra_id_only_without_an_api_key() -> None:
    assert azure.authorizer(config({"adapter": "azure", "base_url": "https://x.openai.azure.com"}),
                            provider="cloud") is not None
    assert azure.authorizer(config({"adapter": "azure", "base_url": "https://x.openai.azure.com", "api_key": "k"}),
                            provider="cloud") is None


@pytest.mark.parametrize(("location", "host"), [
    ("global", "https://aiplatform.googleapis.com"),
    ("europe-west4", "https://europe-west4-aiplatform.googleapis.com"),
])
def test_vertex_calls_the_locations_endpoint(location: str, host: str) -> None:
    settings = VertexSettings(project="my-project", location=location)
    request = ChatRequest(model="gemini-2.5-flash", messages=[Message(role="user", content="hi")])
    call = vertex.build_request(request, "gemini-2.5-flash", settings)
    assert call.url == (f"{host}/v1/projects/my-project/locations/{location}/publishers/google/models/"
                        "gemini-2.5-flash:generateContent")
    assert "x-goog-api-key" not in call.headers  # the token is the worker's to add
    stream = vertex.build_stream_request(request, "gemini-2.5-flash", settings)
    assert stream.url.endswith("/gemini-2.5-flash:streamGenerateContent?alt=sse")


def test_vertex_reads_project_and_location_from_googles_variables() -> None:
    settings = build({"providers": {"vertex": {}}}, SETTINGS,
                     {"GOOGLE_CLOUD_PROJECT": "p1", "GOOGLE_CLOUD_LOCATION": "us-east5"}).provider("vertex")
    assert isinstance(settings, VertexSettings)
    assert (settings.project, settings.location) == ("p1", "us-east5")


@pytest.mark.parametrize(("entry", "named"), [
    ({"adapter": "vertex"}, r"providers\.cloud\.project: .*GOOGLE_CLOUD_PROJECT"),
    ({"adapter": "vertex", "project": "p", "api_key": "k"}, r"providers\.cloud\.api_key: .*application default"),
])
def test_vertex_settings_problems_are_named(entry: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config(entry)


# A fresh interpreter where the extras' libraries cannot be imported, as after `pip install llm-edge`.
WITHOUT_EXTRAS = textwrap.dedent("""
    import importlib.abc, importlib.util, sys

    EXTRAS = ("botocore", "azure.identity", "azure.core", "google.auth", "google.oauth2")

    class NoExtras(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == extra or name.startswith(extra + ".") for extra in EXTRAS):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoExtras())
    import services.providers.registry  # every adapter imports
    from services.providers.settings import SETTINGS
    from shared.config import ConfigError, build

    for entry in ({"adapter": "bedrock", "region": "us-east-1"},
                  {"adapter": "azure", "base_url": "https://x.openai.azure.com"},
                  {"adapter": "vertex", "project": "p"}):
        try:
            build({"providers": {"cloud": entry}}, SETTINGS)
        except ConfigError as exc:
            print(exc)
    build({"providers": {"cloud": {"adapter": "bedrock", "region": "us-east-1", "api_key": "k"}}}, SETTINGS)
    print("static keys load")
""")


def test_adapters_import_without_the_extras_and_the_chains_name_them() -> None:
    out = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS], capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()
    assert out == [
        "providers.cloud.aws_access_key_id: with no key configured, the AWS credential chain signs, which needs "
        "botocore: pip install 'llm-edge[aws]'",
        "providers.cloud.api_key: with no api-key, an Entra ID token authenticates, which needs azure.identity: "
        "pip install 'llm-edge[azure]'",
        "providers.cloud.project: Vertex AI authenticates with application default credentials, which needs "
        "google.auth: pip install 'llm-edge[google]'",
        "static keys load",
    ]

"""SigV4 against AWS's published signature test suite (docs.aws.amazon.com/general/latest/gr/
signature-v4-test-suite.html, `aws-sig-v4-test-suite`: credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z,
us-east-1, service `service`), then as the Bedrock adapter uses it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from services.providers.bedrock.adapter import BedrockAdapter
from services.providers.bedrock.settings import BedrockSettings
from services.providers.bedrock.sigv4 import Credentials, sign
from services.providers.settings import SETTINGS
from shared.config import ConfigError, load
from shared.messages import ChatRequest

EXAMPLE = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
WHEN = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
SCOPE = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"


@pytest.mark.parametrize(
    ("vector", "method", "url", "headers", "signed", "signature"),
    [
        (
            "get-vanilla",
            "GET",
            "https://example.amazonaws.com/",
            {},
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "post-vanilla",
            "POST",
            "https://example.amazonaws.com/",
            {},
            "host;x-amz-date",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            {},
            "host;x-amz-date",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "post-header-key-sort",
            "POST",
            "https://example.amazonaws.com/",
            {"My-Header1": "value1"},
            "host;my-header1;x-amz-date",
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
        ),
    ],
)
def test_aws_signature_test_suite(
    vector: str, method: str, url: str, headers: dict[str, str], signed: str, signature: str
) -> None:
    added = sign(
        method, url, headers, b"", credentials=EXAMPLE, region="us-east-1", service="service", now=WHEN
    )
    assert added == {
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders={signed}, "
        f"Signature={signature}",
    }


def test_a_session_token_is_sent_and_signed() -> None:
    added = sign(
        "POST",
        "https://example.amazonaws.com/",
        {},
        b"",
        credentials=Credentials("AKIDEXAMPLE", "secret", "session-token"),
        region="us-east-1",
        service="service",
        now=WHEN,
    )
    assert added["X-Amz-Security-Token"] == "session-token"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in added["Authorization"]


def test_bedrock_signs_with_access_keys_when_it_has_no_api_key() -> None:
    config = BedrockSettings(
        region="us-west-2",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token="tok",
    )
    adapter = BedrockAdapter(clock=lambda: WHEN)
    request = msgspec.json.decode(
        b'{"model": "m", "messages": [{"role": "user", "content": "Hi"}]}', type=ChatRequest
    )
    call = adapter.build_request(request, "anthropic.claude-3-haiku-20240307-v1:0", config)
    expected = sign(
        "POST",
        call.url,
        {"Content-Type": "application/json"},
        call.body,
        credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "tok"),
        region="us-west-2",
        service="bedrock",
        now=WHEN,
    )
    assert call.headers == {"Content-Type": "application/json", **expected}
    assert expected["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-west-2/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
    )
    assert {"Authorization", "X-Amz-Security-Token"} <= call.secret_headers
    assert json.loads(call.body)["messages"] == [{"role": "user", "content": [{"text": "Hi"}]}]


def test_a_bedrock_api_key_wins_over_access_keys() -> None:
    config = BedrockSettings(
        region="us-east-1", api_key="br-key", aws_access_key_id="A", aws_secret_access_key="S"
    )
    request = msgspec.json.decode(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
                                  type=ChatRequest)
    call = BedrockAdapter(clock=lambda: WHEN).build_request(request, "m", config)
    assert call.headers["Authorization"] == "Bearer br-key" and "X-Amz-Date" not in call.headers


def test_the_environment_gives_a_configured_bedrock_its_access_keys() -> None:
    env = {
        "AWS_BEARER_TOKEN_BEDROCK": "b",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "A",
        "AWS_SECRET_ACCESS_KEY": "S",
        "AWS_SESSION_TOKEN": "T",
    }
    bedrock = load(env=env, adapters=SETTINGS).providers["bedrock"]
    assert isinstance(bedrock, BedrockSettings)
    assert (bedrock.aws_access_key_id, bedrock.aws_secret_access_key, bedrock.aws_session_token) == (
        "A",
        "S",
        "T",
    )
    keys_only = {"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S"}
    assert "bedrock" not in load(env=keys_only, adapters=SETTINGS).providers


@pytest.mark.parametrize(
    ("yaml", "field"),
    [
        (
            "{base_url: 'https://vpce-1.bedrock.example', aws_access_key_id: A, aws_secret_access_key: S}",
            "region",
        ),
        ("{region: us-east-1, aws_access_key_id: A}", "aws_secret_access_key"),
    ],
)
def test_access_keys_that_cannot_sign_are_refused_at_start(tmp_path: Path, yaml: str, field: str) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text(f"providers:\n  bedrock: {yaml}\n")
    with pytest.raises(ConfigError, match=rf"providers\.bedrock\.{field}"):
        load(file, env={}, adapters=SETTINGS)

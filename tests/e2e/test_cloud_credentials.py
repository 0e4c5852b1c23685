"""`llm-edge up` on EKS-style credentials, as real processes: a Bedrock entry with no key, the web identity
variables IRSA sets (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN) in the launcher's environment, and the mock
upstream in its own process playing STS and Bedrock (which refuses any call not signed, as botocore's signer
checks, by a live key it issued). The provider worker process signs with the role's credentials and
refreshes them before they expire, observed through the mock's credential log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from llm_edge.launcher import free_port
from tests.e2e.test_up import read_until, stop

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
HIDDEN = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
          "AWS_BEARER_TOKEN_BEDROCK", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
          "AWS_ENDPOINT_URL", "AWS_EC2_METADATA_SERVICE_ENDPOINT")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The gateway's URL and the mock upstream's."""
    folder = tmp_path_factory.mktemp("irsa")
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    upstream = subprocess.Popen([sys.executable, "-m", "tests.mockupstream", "--port", str(upstream_port)],
                                stdout=subprocess.PIPE, text=True)
    read_until(upstream, "listening", 15, [])
    # STS's shortest session (900 s) and a little: botocore refreshes from 15 minutes before expiry.
    httpx.post(f"{upstream_url}/_mock/clouds", json={
        "lifetime": {"sts": 903}, "web_identity_tokens": ["eks-projected-token"]}).raise_for_status()
    token = folder / "token"
    token.write_text("eks-projected-token")
    config = folder / "edge.yaml"
    config.write_text(f"providers:\n  bedrock: {{base_url: '{upstream_url}'}}\n")
    port, nats_port, monitor_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in HIDDEN} | {
        "PORT": str(port), "NATS_URL": f"nats://127.0.0.1:{nats_port}", "NATS_MONITOR_PORT": str(monitor_port),
        "LLM_EDGE_CONFIG": str(config), "AWS_REGION": "us-west-2",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token), "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/llm-edge",
        "AWS_ROLE_SESSION_NAME": "llm-edge", "AWS_ENDPOINT_URL_STS": upstream_url,
        "AWS_CONFIG_FILE": str(folder / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-creds"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "up"], env=env, stdout=subprocess.PIPE,
                               text=True)
    lines: list[str] = []
    try:
        read_until(process, "Ctrl-C drains", 30, lines)
        yield f"http://127.0.0.1:{port}", upstream_url
    finally:
        stop(process)
        stop(upstream, signal.SIGTERM)


def fetches(upstream_url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{upstream_url}/_mock/clouds").json()["fetches"]
    return [f for f in found if f["source"] == "sts"]


def test_the_worker_signs_with_the_role_and_refreshes_before_expiry(gateway: tuple[str, str]) -> None:
    url, upstream_url = gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="anything", max_retries=0)
    signed_by: list[str] = []

    def ask() -> None:
        reply = client.chat.completions.create(model=f"bedrock/{MODEL}", messages=[{"role": "user", "content": "hi"}],
                                               extra_headers={"cache-control": "no-cache, no-store"})
        assert reply.choices[0].message.content == "Echo: hi"  # the mock verified the signature
        last = httpx.get(f"{upstream_url}/_mock/stats").json()["last_headers"]["authorization"]
        signed_by.append(last.split("Credential=", 1)[1].split("/", 1)[0])

    ask()
    deadline = time.monotonic() + 30
    while len(fetches(upstream_url)) < 2:
        assert time.monotonic() < deadline, "the credentials were never refreshed"
        ask()
        time.sleep(0.2)  # paces the polling; the condition is the credential log, not the time
    ask()
    first, second = fetches(upstream_url)
    assert second["at"] < first["expires"]  # refreshed while the first set was still valid
    switch = signed_by.index(second["key"])
    assert set(signed_by[:switch]) == {first["key"]} and set(signed_by[switch:]) == {second["key"]}

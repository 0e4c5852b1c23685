"""The real Codex CLI (`@openai/codex`, pinned in tests/clients/codex) through `llm-edge up` over the Responses
API: `codex exec` runs non-interactively with its own `CODEX_HOME`, a custom provider pointing at the gateway,
and every proxy variable pointing nowhere, so nothing but loopback is reachable. The mock upstream's first turn
is a tool call that makes Codex create a file; the turn carrying the tool's output gets a final message. Once
with an OpenAI-format upstream behind the gateway, once with an Anthropic-format one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llm_edge.launcher import free_port
from tests.e2e.test_up import read_until, stop

CODEX = Path(__file__).resolve().parents[1] / "clients" / "codex" / "node_modules" / ".bin" / "codex"


@dataclass
class Edge:
    url: str
    upstream: str


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.mockupstream", "--port", str(upstream_port)],
                                stdout=subprocess.PIPE, text=True)
    read_until(upstream, "listening", 15, [])
    config = tmp_path_factory.mktemp("codex-edge") / "edge.yaml"
    config.write_text(
        "providers:\n"
        f"  up: {{adapter: openai_compatible, base_url: 'http://127.0.0.1:{upstream_port}/v1', api_key: sk-e2e}}\n"
        f"  claude: {{adapter: anthropic, base_url: 'http://127.0.0.1:{upstream_port}', api_key: sk-e2e}}\n"
        "models:\n"
        "  - name: codex-openai\n"
        "    targets: [{provider: up, model: gpt-4o-mini}]\n"
        "  - name: codex-anthropic\n"
        "    targets: [{provider: claude, model: claude-sonnet-4-5}]\n"
    )
    port, nats_port, monitor_port = free_port(), free_port(), free_port()
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{nats_port}",
               NATS_MONITOR_PORT=str(monitor_port), LLM_EDGE_CONFIG=str(config))
    process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "up"], env=env, stdout=subprocess.PIPE,
                               text=True)
    try:
        read_until(process, "Ctrl-C drains", 30, [])
        yield Edge(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{upstream_port}")
    finally:
        stop(process)
        stop(upstream, signal.SIGTERM)


CONFIG = """\
model = "{model}"
model_provider = "edge"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.edge]
name = "LLM Edge"
base_url = "{url}/v1"
wire_api = "responses"
env_key = "LLM_EDGE_API_KEY"
request_max_retries = 0
stream_max_retries = 0
"""


def codex(edge: Edge, home: Path, workdir: Path, model: str, prompt: str) -> subprocess.CompletedProcess[str]:
    assert CODEX.exists(), "the Codex CLI is not installed: run `make clients`"
    (home / "config.toml").write_text(CONFIG.format(model=model, url=edge.url))
    nowhere = "http://127.0.0.1:9"  # the discard port: any request off loopback fails at once
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "LLM_EDGE_API_KEY": "sk-local",
           "HTTP_PROXY": nowhere, "HTTPS_PROXY": nowhere, "ALL_PROXY": nowhere, "NO_PROXY": "127.0.0.1,localhost",
           "RUST_LOG": "error"}
    return subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
         "-C", str(workdir), prompt],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, cwd=workdir, check=False,
    )


@pytest.mark.parametrize(("model", "path"), [("codex-openai", "/v1/chat/completions"),
                                              ("codex-anthropic", "/v1/messages")])
def test_codex_exec_creates_a_file_through_the_gateway(edge: Edge, tmp_path: Path, model: str, path: str) -> None:
    home, workdir = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    marker = f"written through {model}"
    command = json.dumps({"cmd": f"echo '{marker}' > made-by-codex.txt"})
    with httpx.Client(base_url=edge.upstream) as control:
        control.post("/_mock/reset").raise_for_status()
        control.post("/_mock/script", json={"responses": [
            {"tool_call": {"name": "exec_command", "arguments": command}}]}).raise_for_status()
        done = codex(edge, home, workdir, model, "Create the file made-by-codex.txt.")
        stats = control.get("/_mock/stats").json()
    assert done.returncode == 0, done.stdout + done.stderr
    assert (workdir / "made-by-codex.txt").read_text().strip() == marker
    # Two turns reached the upstream in its own format: the tool call, then the turn carrying its output.
    assert stats["calls_by_path"] == {path: 2}
    sent = json.dumps(stats["last_request"])
    assert "tool_result" in sent if model == "codex-anthropic" else '"role": "tool"' in sent
    assert "Echo:" in done.stdout  # the final message, as Codex printed it

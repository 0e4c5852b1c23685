"""The real Claude Code CLI (npm `@anthropic-ai/claude-code`, pinned in tests/clients/claude) through
`llm-edge up`, non-interactively (`claude -p`), default settings (thinking on), its home directory isolated and
its non-essential traffic off. The mock upstream calls Claude Code's Write tool on the first turn and answers
the turn that carries the tool's result: the file must exist, the CLI exit 0 and report the usage. Once
against an Anthropic-format upstream (what Claude Code sent arrives as sent: thinking, `cache_control`, betas,
`?beta=true`; the thinking block comes back signed in the history), once against an OpenAI-format one.
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
from typing import Any

import httpx
import pytest

from llm_edge.launcher import free_port
from tests.e2e.test_up import read_until, stop

CLAUDE = Path(__file__).resolve().parents[1] / "clients" / "claude" / "node_modules" / ".bin" / "claude"
ANTHROPIC_MODEL = "claude-sonnet-4-5"  # served by the Anthropic-format mock, by the `claude-*` convention
TRANSLATED_MODEL = "claude-opus-4-5"  # configured to an OpenAI-format target



@dataclass
class Edge:
    url: str
    upstream: str


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    assert CLAUDE.exists(), f"Claude Code is not installed at {CLAUDE}: run `make clients`"
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.mockupstream", "--port", str(upstream_port)],
                                stdout=subprocess.PIPE, text=True)
    read_until(upstream, "listening", 15, [])
    mock = f"http://127.0.0.1:{upstream_port}"
    config = tmp_path_factory.mktemp("claude") / "edge.yaml"
    config.write_text(
        "providers:\n"
        f"  anthropic: {{base_url: '{mock}', api_key: sk-ant-upstream}}\n"
        f"  up: {{adapter: openai_compatible, base_url: '{mock}/v1', api_key: sk-openai-upstream}}\n"
        "models:\n"
        f"  - name: {TRANSLATED_MODEL}\n"
        "    targets: [{provider: up, model: gpt-5}]\n"
    )
    port, nats_port, monitor_port = free_port(), free_port(), free_port()
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{nats_port}",
               NATS_MONITOR_PORT=str(monitor_port), LLM_EDGE_CONFIG=str(config))
    process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "up"], env=env, stdout=subprocess.PIPE,
                               text=True)
    try:
        read_until(process, "Ctrl-C drains", 30, [])
        yield Edge(f"http://127.0.0.1:{port}", mock)
    finally:
        stop(process)
        stop(upstream, signal.SIGTERM)


def run_claude(edge: Edge, home: Path, model: str, prompt: str) -> dict[str, Any]:
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": edge.url,
        "ANTHROPIC_API_KEY": "sk-ant-client-key",
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",  # a failure at the gateway must fail the run, not be retried away
    }
    done = subprocess.run(
        [str(CLAUDE), "-p", prompt, "--output-format", "json", "--permission-mode", "acceptEdits",
         "--allowedTools", "Write", "--max-turns", "4"],
        cwd=work, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, check=False,
    )
    assert done.returncode == 0, f"claude exited {done.returncode}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def journal(edge: Edge) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = httpx.get(f"{edge.upstream}/_mock/requests").json()
    return requests


def write_prompt(path: Path, text: str) -> str:
    arguments = json.dumps({"file_path": str(path), "content": text})
    return f"Create the file. mock:call Write {arguments}"


def test_claude_code_through_an_anthropic_upstream(edge: Edge, tmp_path: Path) -> None:
    httpx.post(f"{edge.upstream}/_mock/reset")
    target = tmp_path / "work" / "hello.txt"
    result = run_claude(edge, tmp_path, ANTHROPIC_MODEL, write_prompt(target, "Hello from Claude Code\n"))

    assert target.read_text() == "Hello from Claude Code\n"
    assert result["is_error"] is False and result["num_turns"] >= 2
    assert result["usage"]["input_tokens"] + result["usage"].get("cache_read_input_tokens", 0) > 0
    assert result["usage"]["output_tokens"] > 0

    calls = [r for r in journal(edge) if r["url"].startswith("/v1/messages") and r["body"]["model"] == ANTHROPIC_MODEL
             and any(t.get("name") == "Write" for t in r["body"].get("tools", []))]
    assert len(calls) >= 2, [r["url"] for r in journal(edge)]
    first, last = calls[0], calls[-1]
    # What Claude Code sends on every call arrived as it sent it.
    assert first["url"].endswith("?beta=true")
    betas = first["headers"]["anthropic-beta"].split(",")
    assert "claude-code-20250219" in betas and len(betas) >= 2
    assert first["headers"]["anthropic-version"] == "2023-06-01"
    assert first["headers"]["x-api-key"] == "sk-ant-upstream"  # the gateway's key for the provider, not the client's
    assert first["body"]["thinking"]["type"] in ("enabled", "adaptive")
    system = first["body"]["system"]
    assert isinstance(system, list) and any("cache_control" in block for block in system)
    assert first["body"]["stream"] is True
    # The turn with the tool's result carries the thinking block back, signature intact (the mock refuses an
    # altered one, as Anthropic does), then the tool use and its result.
    assistant = [m for m in last["body"]["messages"] if m["role"] == "assistant"][-1]
    kinds = [block["type"] for block in assistant["content"]]
    assert kinds[0] == "thinking" and "tool_use" in kinds
    assert assistant["content"][0]["signature"].startswith("mocksig_")
    results = [b for b in last["body"]["messages"][-1]["content"] if b["type"] == "tool_result"]
    assert results and results[0]["tool_use_id"].startswith("toolu_mock_")


def test_claude_code_through_an_openai_upstream(edge: Edge, tmp_path: Path) -> None:
    httpx.post(f"{edge.upstream}/_mock/reset")
    target = tmp_path / "work" / "translated.txt"
    result = run_claude(edge, tmp_path, TRANSLATED_MODEL, write_prompt(target, "Translated, then written\n"))

    assert target.read_text() == "Translated, then written\n"
    assert result["is_error"] is False and result["num_turns"] >= 2
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0

    calls = [r for r in journal(edge) if r["url"] == "/v1/chat/completions"]
    assert calls and not [r for r in journal(edge) if r["url"].startswith("/v1/messages")]
    tool_turn = [r for r in calls if any(m["role"] == "tool" for m in r["body"]["messages"])]
    assert tool_turn, "the tool's result never reached the upstream"
    body = tool_turn[-1]["body"]
    assert body["model"] == "gpt-5"
    # Anthropic-only fields are mapped (thinking -> reasoning_effort for a reasoning model) or dropped.
    assert not {"thinking", "anthropic", "context_management", "output_config", "cache_control"} & set(body)
    assert "anthropic-beta" not in tool_turn[-1]["headers"]
    assert tool_turn[-1]["headers"]["authorization"] == "Bearer sk-openai-upstream"

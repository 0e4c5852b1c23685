"""Reload means reload: a provider added to the file and a SIGHUP to `llm-edge up` is served without a
restart, and one removed from it has its workers drained and stopped. A bad file changes nothing.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import openai
import pytest

from llm_edge.launcher import free_port
from tests.e2e.test_up import children_of, read_until, stop

MOCK_ONLY = "providers:\n  mock: {}\n"


def _with_extra(upstream_port: int) -> str:
    return (
        "providers:\n"
        "  mock: {}\n"
        f"  extra: {{adapter: openai_compatible, base_url: 'http://127.0.0.1:{upstream_port}/v1', api_key: sk-e2e}}\n"
        "models:\n"
        "  - name: extra-model\n"
        "    targets: [{provider: extra, model: gpt-4o-mini}]\n"
    )


class Log:
    """The launcher's stderr, line by line, read in the background."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []

        def pump() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, marker: str, timeout: float = 90) -> None:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{marker!r} never logged; saw: {''.join(self.seen)[-3000:]}") from None
            self.seen.append(line)
            if marker in line:
                return


def _providers_running(pid: int) -> set[str]:
    return {c.split("llm_edge.cli provider ")[-1].strip() for c in children_of(pid).values()
            if "llm_edge.cli provider " in c}


def _ask(url: str, model: str) -> str | None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    return completion.choices[0].message.content


@pytest.mark.timeout(300)
def test_a_provider_added_then_removed_by_reload(tmp_path: Path) -> None:
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.mockupstream", "--port", str(upstream_port)],
                                stdout=subprocess.PIPE, text=True)
    config = tmp_path / "edge.yaml"
    config.write_text(MOCK_ONLY)
    port = free_port()
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{free_port()}",
               NATS_MONITOR_PORT=str(free_port()), LLM_EDGE_CONFIG=str(config), LOG_LEVEL="WARNING")
    process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "up"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        read_until(upstream, "listening", 15, [])
        read_until(process, "Ctrl-C drains", 30, [])
        log = Log(process)
        assert _providers_running(process.pid) == {"mock"}
        with pytest.raises(openai.NotFoundError):
            _ask(url, "extra-model")

        config.write_text(_with_extra(upstream_port))
        process.send_signal(signal.SIGHUP)
        log.wait_for("started provider extra")
        log.wait_for("rolling restart done")

        assert _providers_running(process.pid) == {"mock", "extra"}
        assert _ask(url, "extra-model") == "Echo: Hi"  # no retries: the first try is served
        assert _ask(url, "mock") == "Mock reply to: Hi"

        config.write_text("providers: [not, a, mapping]\n")
        process.send_signal(signal.SIGHUP)
        log.wait_for("reload refused")
        assert _providers_running(process.pid) == {"mock", "extra"}
        assert _ask(url, "extra-model") == "Echo: Hi"

        config.write_text(MOCK_ONLY)
        process.send_signal(signal.SIGHUP)
        log.wait_for("stopped provider extra")
        log.wait_for("rolling restart done")

        assert _providers_running(process.pid) == {"mock"}
        with pytest.raises(openai.NotFoundError):
            _ask(url, "extra-model")
        assert _ask(url, "mock") == "Mock reply to: Hi"
    finally:
        stop(process)
        stop(upstream, signal.SIGTERM)

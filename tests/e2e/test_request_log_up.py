"""The request log under `llm-edge up`, as an operator runs it: enabled by the environment, a logger process
started beside the others, the `openai` SDK's requests (an answer, a stream, a 404) read back with `llm-edge
logs`; the logger killed (SIGKILL) and restarted by the launcher loses none of the requests served while it
was gone; and after Ctrl-C every record is in the SQLite file.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from llm_edge.launcher import free_port
from tests.e2e.test_up import children_of, read_until, stop


def logs(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "llm_edge.cli", "logs", "--json", "--limit", "100", *args],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode in (0, 1), done.stderr  # 1: no logger answers (yet)
    return [json.loads(line) for line in done.stdout.splitlines()]


def logged(env: dict[str, str], wanted: set[str], timeout: float = 30.0) -> list[dict[str, Any]]:
    """The records, once every wanted request id is among them (a logger writes within about a second)."""
    deadline = time.monotonic() + timeout
    while True:
        records = logs(env)
        if wanted <= {r["request_id"] for r in records} or time.monotonic() > deadline:
            return records


def test_requests_are_logged_through_a_logger_restart(tmp_path: Path) -> None:
    database = tmp_path / "requests.db"
    port, nats_port, monitor_port = free_port(), free_port(), free_port()
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{nats_port}",
               NATS_MONITOR_PORT=str(monitor_port), ENABLE_REQUEST_LOG="true")
    env.pop("LLM_EDGE_CONFIG", None)
    config = tmp_path / "edge.yaml"
    config.write_text(f"providers: {{mock: {{}}}}\nrequest_log: {{sqlite_path: '{database}'}}\n")
    env["LLM_EDGE_CONFIG"] = str(config)
    process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "up"], env=env, stdout=subprocess.PIPE,
                               text=True)
    lines: list[str] = []
    try:
        read_until(process, "Ctrl-C drains", 60, lines)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        told = {}
        answer = client.chat.completions.with_raw_response.create(
            model="mock", messages=[{"role": "user", "content": "log me"}])
        told[answer.headers["x-request-id"]] = "answer"
        with client.chat.completions.with_streaming_response.create(
                model="mock", messages=[{"role": "user", "content": "stream me"}], stream=True) as streamed:
            told[streamed.headers["x-request-id"]] = "stream"
            for _ in streamed.iter_lines():
                pass
        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        told[unknown.value.response.headers["x-request-id"]] = "404"

        records = logged(env, set(told))
        by_id = {r["request_id"]: r for r in records}
        assert set(by_id) == set(told)
        assert (by_id[_id(told, "answer")]["status"], by_id[_id(told, "answer")]["model"]) == (200, "mock")
        assert by_id[_id(told, "stream")]["stream"] is True
        assert by_id[_id(told, "404")]["status"] == 404

        # The logger killed: the launcher restarts it; what is served meanwhile waits on the stream.
        loggers = [pid for pid, cmd in children_of(process.pid).items() if cmd.endswith("llm_edge.cli logger")]
        assert len(loggers) == 1, children_of(process.pid)
        os.kill(loggers[0], signal.SIGKILL)
        while_down = set()
        for n in range(5):
            raw = client.chat.completions.with_raw_response.create(
                model="mock", messages=[{"role": "user", "content": f"while the logger is away {n}"}])
            while_down.add(raw.headers["x-request-id"])
        records = logged(env, set(told) | while_down)
        assert {r["request_id"] for r in records} == set(told) | while_down
        assert [pid for pid, cmd in children_of(process.pid).items() if cmd.endswith("llm_edge.cli logger")] != loggers
    finally:
        stop(process)
    assert process.returncode == 0, "".join(lines)
    with sqlite3.connect(database) as db:
        stored = {row[0] for row in db.execute("SELECT request_id FROM request_log")}
    assert stored == set(told) | while_down


def _id(told: dict[str, str], what: str) -> str:
    return next(rid for rid, kind in told.items() if kind == what)

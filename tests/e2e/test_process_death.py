"""A process killed while it holds a request (SIGKILL: no drain, no goodbye) must not leave the client
waiting for the deadline (ten minutes by default). `llm-edge up` restarts the dead process; the request
is retried on a live instance (answers) or ends with an error (a stream already under way).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.js.errors
import openai
import pytest

from llm_edge.launcher import free_port
from tests.e2e.test_up import children_of, read_until, stop

LATENCY_MS = 3000  # long enough to kill the process while it holds the request


@dataclass
class Up:
    process: subprocess.Popen[str]
    url: str
    nats_url: str
    lines: list[str] = field(default_factory=list)

    def pid_of(self, service: str) -> int:
        (pid,) = [pid for pid, cmd in children_of(self.process.pid).items() if f"cli {service}" in cmd]
        return pid

    def client(self) -> openai.OpenAI:
        # No SDK retries: what the client sees is the gateway's own doing. 120 s: far below the
        # gateway's 600 s deadline, far above what a retried request needs.
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120)


def started(tmp_path: Path, mock: str) -> Iterator[Up]:
    config = tmp_path / "edge.yaml"
    config.write_text(
        "cache: {enabled: false}\n"
        # Longer than the client waits: a stream that is only ended by its idle timeout fails the test.
        "ingress: {stream_idle_timeout_seconds: 300}\n"
        f"providers:\n  mock: {{{mock}}}\n")
    port, nats_port = free_port(), free_port()
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{nats_port}",
               NATS_MONITOR_PORT=str(free_port()), LLM_EDGE_CONFIG=str(config), LOG_LEVEL="WARNING")
    process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "up"], env=env,
                               stdout=subprocess.PIPE, text=True)
    gateway = Up(process, f"http://127.0.0.1:{port}", f"nats://127.0.0.1:{nats_port}")
    try:
        read_until(process, "Ctrl-C drains", 30, gateway.lines)
        yield gateway
    finally:
        stop(process)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    yield from started(tmp_path, f"latency_ms: {LATENCY_MS}, stream_chunks: 6, chunk_interval_ms: 1000")


@pytest.fixture
def capped_up(tmp_path: Path) -> Iterator[Up]:
    """Admission on: requests to mock wait in its JetStream work queue, at most 2 in flight."""
    yield from started(tmp_path, f"latency_ms: {LATENCY_MS}, max_in_flight: 2")


def wait_until_taken_from_the_queue(nats_url: str) -> None:
    """Until a worker holds a request from mock's work queue (delivered, not yet acked)."""

    async def poll() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if (await js.consumer_info("LLM_ADMIT_MOCK", "workers")).num_ack_pending > 0:
                        return
                except nats.js.errors.NotFoundError:
                    pass
                await asyncio.sleep(0.05)  # polling interval
            raise AssertionError("no worker took the queued request")
        finally:
            await nc.close()

    asyncio.run(poll())


def wait_until_serving(nats_url: str, service: str, endpoint: str) -> None:
    """Until an instance of `service` has taken a request on `endpoint` (its micro stats say so)."""

    async def poll() -> None:
        nc = await nats.connect(nats_url)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                inbox = nc.new_inbox()
                sub = await nc.subscribe(inbox)
                await nc.publish(f"$SRV.STATS.{service}", b"", reply=inbox)
                try:
                    msg = await sub.next_msg(timeout=1)
                    stats = json.loads(msg.data)
                    if any(e["name"] == endpoint and e["num_requests"] > 0 for e in stats["endpoints"]):
                        return
                except nats.errors.TimeoutError:
                    pass
                finally:
                    await sub.unsubscribe()
                await asyncio.sleep(0.05)  # polling interval
            raise AssertionError(f"{service} never took a {endpoint} request")
        finally:
            await nc.close()

    asyncio.run(poll())


def in_background(call: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except openai.OpenAIError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.timeout(150)
@pytest.mark.parametrize("service, endpoint, micro_name", [
    ("provider mock", "chat", "llm-edge-provider-mock"),
    ("router", "route", "llm-edge-router"),
], ids=["provider-worker", "router"])
def test_a_request_outlives_the_process_killed_while_holding_it(
    up: Up, service: str, endpoint: str, micro_name: str
) -> None:
    prompt = f"survive the {service}"
    thread, outcome = in_background(lambda: up.client().chat.completions.create(
        model="mock", messages=[{"role": "user", "content": prompt}]))
    wait_until_serving(up.nats_url, micro_name, endpoint)
    victim = up.pid_of(service)
    os.kill(victim, signal.SIGKILL)
    thread.join(130)
    assert "error" not in outcome, outcome.get("error")
    completion = outcome["value"]
    assert completion.choices[0].message.content == f"Mock reply to: {prompt}"  # type: ignore[attr-defined]
    assert up.pid_of(service) != victim  # answered by the restarted instance


@pytest.mark.timeout(150)
def test_a_queued_request_outlives_the_worker_killed_while_holding_it(capped_up: Up) -> None:
    """Admission (max_in_flight): the worker heartbeats the request it took from the work queue, so its
    death is noticed within about five seconds (not at the 600 s deadline) and the request is queued
    again for a live worker (the restarted one), which answers it once."""
    prompt = "survive the queued worker"
    began = time.monotonic()
    thread, outcome = in_background(lambda: capped_up.client().chat.completions.create(
        model="mock", messages=[{"role": "user", "content": prompt}]))
    wait_until_taken_from_the_queue(capped_up.nats_url)
    victim = capped_up.pid_of("provider mock")
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    thread.join(130)
    assert "error" not in outcome, outcome.get("error")
    completion = outcome["value"]
    assert completion.choices[0].message.content == f"Mock reply to: {prompt}"  # type: ignore[attr-defined]
    assert capped_up.pid_of("provider mock") != victim
    # Noticed after ~5 s of silence, then one more call of LATENCY_MS on the restarted worker.
    assert time.monotonic() - killed < 5 + LATENCY_MS / 1000 + 8, time.monotonic() - began


@pytest.mark.timeout(150)
def test_a_stream_whose_worker_is_killed_ends_with_an_error_not_a_wait(up: Up) -> None:
    stream = up.client().chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "stream until the worker dies"}], stream=True)
    text, finish = "", None
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            if not chunk.choices:
                continue
            if not text:  # the stream is under way: kill the worker producing it
                os.kill(up.pid_of("provider mock"), signal.SIGKILL)
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    # The gateway's error event, within seconds: not the client giving up after its own timeout.
    assert not isinstance(raised.value, openai.APITimeoutError)
    assert finish is None  # never presented as a finished answer
    assert "Mock reply to: stream until the worker dies".startswith(text)
    assert raised.value.message

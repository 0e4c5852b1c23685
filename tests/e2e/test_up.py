"""`llm-edge up` as a user runs it: real processes, the official `openai` and `anthropic` SDKs, a mock OpenAI upstream
in its own process, the embedded nats-server, supervision and a clean Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import nats
import openai
import pytest

from llm_edge.launcher import free_port


@dataclass
class Gateway:
    process: subprocess.Popen[str]
    url: str
    nats_url: str
    upstream_url: str
    lines: list[str]
    monitor_port: int


def read_until(process: subprocess.Popen[str], marker: str, timeout: float, lines: list[str]) -> None:
    found: queue.Queue[bool] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                found.put(True)
        found.put(False)

    threading.Thread(target=pump, daemon=True).start()
    if not found.get(timeout=timeout):
        raise AssertionError(f"{marker!r} never printed; output: {''.join(lines)}")


def children_of(pid: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found[int(entry.name)] = cmdline
    return found


def stop(process: subprocess.Popen[str], sig: signal.Signals = signal.SIGINT) -> None:
    """Ctrl-C (or `sig`), as an operator would, and time to drain; killed only if it does not stop by then.
    Its pipes are closed too (left to the garbage collector, each was a ResourceWarning)."""
    try:
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.mockupstream", "--port", str(upstream_port)],
        stdout=subprocess.PIPE, text=True,
    )
    read_until(upstream, "listening", 15, [])
    config = tmp_path_factory.mktemp("e2e") / "edge.yaml"
    config.write_text(
        "providers:\n"
        "  mock: {}\n"
        f"  up: {{adapter: openai_compatible, base_url: 'http://127.0.0.1:{upstream_port}/v1', api_key: sk-e2e}}\n"
        "models:\n"
        "  - name: upstream-model\n"
        "    targets: [{provider: up, model: gpt-4o-mini}]\n"
    )
    port, nats_port, monitor_port = free_port(), free_port(), free_port()
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{nats_port}",
               NATS_MONITOR_PORT=str(monitor_port), LLM_EDGE_CONFIG=str(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "llm_edge.cli", "up"], env=env, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        read_until(process, "Ctrl-C drains", 30, lines)
        yield Gateway(process, f"http://127.0.0.1:{port}", f"nats://127.0.0.1:{nats_port}",
                      f"http://127.0.0.1:{upstream_port}", lines, monitor_port)
    finally:
        stop(process, signal.SIGKILL)
        stop(upstream, signal.SIGTERM)


def test_ready_banner_says_where_to_connect(gateway: Gateway) -> None:
    banner = "".join(gateway.lines)
    assert f"{gateway.url}/v1" in banner
    assert gateway.nats_url in banner


def test_openai_sdk_against_the_gateway(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="anything")
    completion = client.chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert completion.choices[0].message.content == "Mock reply to: Say hello"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_anthropic_sdk_against_the_gateway(gateway: Gateway) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="anything")
    message = client.messages.create(model="mock", max_tokens=100, system="Be brief.",
                                     messages=[{"role": "user", "content": "Say hello"}])
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text == "Mock reply to: Say hello"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    with client.messages.stream(model="upstream-model", max_tokens=100,
                                messages=[{"role": "user", "content": "Stream through the upstream"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: Stream through the upstream"
    assert final.model == "gpt-4o-mini" and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])


def test_second_identical_request_is_a_cache_hit(gateway: Gateway) -> None:
    body = {"model": "upstream-model", "messages": [{"role": "user", "content": "cache me"}]}
    with httpx.Client(base_url=gateway.url) as client:
        before = client.get(f"{gateway.upstream_url}/_mock/stats").json()["calls"]
        first = client.post("/v1/chat/completions", json=body)
        assert first.headers["x-llm-edge-cache"] == "miss"
        deadline = time.monotonic() + 3
        while True:  # the fill reaches the cache asynchronously; a real client rarely asks this fast
            second = client.post("/v1/chat/completions", json=body)
            if second.headers["x-llm-edge-cache"] == "hit-l1" or time.monotonic() > deadline:
                break
        assert second.headers["x-llm-edge-cache"] == "hit-l1"
        assert second.json()["choices"] == first.json()["choices"]
        assert client.get(f"{gateway.upstream_url}/_mock/stats").json()["calls"] == before + 1


def test_large_request_and_answer_cross_the_embedded_bus(gateway: Gateway) -> None:
    """A 5 MiB request (an image as a data: URL, as the SDKs send one) and a 3 MiB answer (the mock echoes
    the text): both larger than NATS' default 1 MB message, both within the configured limits."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="anything", max_retries=0)
    image = "data:image/png;base64," + "A" * (5 * 1024 * 1024)
    text = "t" * (3 * 1024 * 1024)
    completion = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": [
        {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": image}}]}])
    assert completion.choices[0].message.content == f"Mock reply to: {text}"
    with pytest.raises(openai.APIStatusError) as refused:  # over ingress.max_body_bytes (20 MiB): 413
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "x" * (21 << 20)}])
    assert refused.value.status_code == 413


def test_each_service_is_its_own_process(gateway: Gateway) -> None:
    commands = " | ".join(children_of(gateway.process.pid).values())
    for part in ("nats-server", "llm_edge.cli ingress", "llm_edge.cli cache", "llm_edge.cli router",
                 "llm_edge.cli provider mock", "llm_edge.cli provider up"):
        assert part in commands, commands


def test_the_pipeline_runs_under_sched_batch_and_the_ingress_does_not(gateway: Gateway) -> None:
    """Behind the ingress the processes do not preempt each other on every message; the ingress, which
    answers clients, keeps the default policy (runtime.batch_scheduling)."""
    children = children_of(gateway.process.pid)
    policies = {command: os.sched_getscheduler(pid) for pid, command in children.items()}
    ingress = [command for command in policies if "llm_edge.cli ingress" in command]
    assert len(ingress) == 1 and len(policies) >= 6, policies
    assert policies.pop(ingress[0]) == os.SCHED_OTHER
    assert set(policies.values()) == {os.SCHED_BATCH}, policies  # nats-server, cache, router, the workers
    assert os.sched_getscheduler(gateway.process.pid) == os.SCHED_BATCH


def test_every_service_answers_srv_ping(gateway: Gateway) -> None:
    async def ping() -> set[str]:
        nc = await nats.connect(gateway.nats_url)
        names = set()
        for name in ("llm-edge-cache", "llm-edge-router", "llm-edge-provider-mock", "llm-edge-provider-up"):
            reply = await nc.request(f"$SRV.PING.{name}", b"", timeout=2)
            names.add(__import__("json").loads(reply.data)["name"])
        await nc.close()
        return names

    assert asyncio.run(ping()) == {
        "llm-edge-cache", "llm-edge-router", "llm-edge-provider-mock", "llm-edge-provider-up"}


def test_status_json_lists_every_instance_after_traffic(gateway: Gateway) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llm_edge.cli", "status", "--json", "--nats-url", gateway.nats_url,
         "--monitor", f"http://127.0.0.1:{gateway.monitor_port}"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    # No cache lookups: without L2 the ingress's own L1 answers (the cache instance is listed all the same).
    main_endpoints = {"llm-edge-router": "route", "llm-edge-provider-mock": "chat", "llm-edge-provider-up": "chat"}
    services = {s["name"]: s for s in document["services"]}
    for name, endpoint in main_endpoints.items():  # the earlier tests sent requests through each
        assert name in services, sorted(services)
        counts = [e["num_requests"] for i in services[name]["instances"] for e in i["endpoints"]
                  if e["name"] == endpoint]
        assert any(count > 0 for count in counts), (name, services[name])
    assert "llm-edge-cache" in services
    assert document["server"]["connections"] >= len(main_endpoints) + 2  # and the cache and the ingress
    assert document["monitor_error"] is None


def test_a_crashed_service_is_restarted(gateway: Gateway) -> None:
    (router_pid,) = [pid for pid, cmd in children_of(gateway.process.pid).items() if "cli router" in cmd]
    os.kill(router_pid, signal.SIGKILL)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="anything", max_retries=0)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "back?"}])
            break
        except openai.APIStatusError as exc:
            assert exc.status_code == 503  # no router yet: a clear 503, never a hang
            assert time.monotonic() < deadline, "router was not restarted"
            time.sleep(0.1)
    routers = [pid for pid, cmd in children_of(gateway.process.pid).items() if "cli router" in cmd]
    assert routers and routers != [router_pid]


def test_ctrl_c_stops_everything(gateway: Gateway) -> None:
    children = children_of(gateway.process.pid)
    (nats_argv,) = [cmd.split() for cmd in children.values() if "nats-server" in cmd]
    scratch = Path(nats_argv[nats_argv.index("-c") + 1]).parent  # its configuration and JetStream store
    assert scratch.is_dir()
    gateway.process.send_signal(signal.SIGINT)
    assert gateway.process.wait(timeout=30) == 0
    assert not scratch.exists(), "llm-edge up left its temporary directory behind"
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()

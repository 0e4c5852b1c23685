"""`llm-edge status` against a real nats-server and the real services: every instance is discovered
through `$SRV.*` with its request counts, the monitoring port is read, and an unreachable NATS fails fast.

The nats-server is shared with other tests, so other stacks' instances may answer too: the checks look
for this stack's instance ids, never at totals.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from llm_edge.launcher import free_port
from llm_edge.status.table import SHORT_ID, render
from llm_edge.status.topology import Topology, collect
from shared import bus
from tests.infra import Nats
from tests.stack import Stack, make_config

ROOT = Path(__file__).resolve().parents[2]
# Stack key -> (name the stack registers it under, the endpoint every chat request goes through).
EXPECTED = {
    "cache": ("test-cache", "lookup"),
    "router": ("test-router", "route"),
    "provider.mock": ("test-mock", "chat"),
}


@pytest.fixture(scope="module")
async def stack(nats_server: Nats) -> AsyncIterator[Stack]:
    # The ingress's own L1 off, so that every service, the cache included, takes requests.
    stack = await Stack(make_config(nats_server.url, cache={"ingress_l1": False})).start()
    assert stack.http is not None
    for text in ("hi", "hello"):  # two different prompts: two cache misses, so every service works
        reply = await stack.http.post(
            "/v1/chat/completions", json={"model": "mock", "messages": [{"role": "user", "content": text}]}
        )
        assert reply.status_code == 200, reply.text
    yield stack
    await stack.close()


def monitor_url(nats_server: Nats) -> str:
    return f"http://127.0.0.1:{nats_server.monitor_port}"


async def status_cli(*args: str, timeout: float = 15) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llm_edge.cli", "status", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_lists_the_stack(services: list[dict[str, Any]], stack: Stack) -> None:
    """`services` as in the JSON document: every instance the stack started, each with requests."""
    instances = {i["id"]: (s["name"], i) for s in services for i in s["instances"]}
    for key, (name, main_endpoint) in EXPECTED.items():
        instance_id = stack.servers[key].id
        assert instance_id in instances, f"{key} ({instance_id}) not discovered"
        found_name, instance = instances[instance_id]
        assert found_name == name
        assert instance["version"] == "0.1.0"
        assert sorted(instance["answered"]) == ["info", "ping", "stats"]
        endpoints = {e["name"]: e for e in instance["endpoints"]}
        assert {main_endpoint, "health"} <= set(endpoints)
        assert endpoints[main_endpoint]["num_requests"] > 0
        assert endpoints[main_endpoint]["num_errors"] == 0
        assert endpoints[main_endpoint]["average_processing_time_ms"] > 0
        assert instance["num_requests"] >= endpoints[main_endpoint]["num_requests"]


def as_json(topology: Topology) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(topology)
    return result


async def test_collect_finds_every_instance_with_its_requests(stack: Stack, nats_server: Nats) -> None:
    nc = await bus.connect(nats_server.url, "status-test")
    try:
        async with httpx.AsyncClient() as http:
            topology = await collect(nc, http, monitor_url(nats_server), window=0.5)
    finally:
        await nc.close()
    assert_lists_the_stack(as_json(topology)["services"], stack)
    assert topology.unreadable_replies == 0
    assert topology.monitor_error is None
    assert topology.server is not None
    assert topology.server.connections > 0
    assert topology.server.in_msgs > 0
    names = {c.name for c in topology.server.connection_list}
    assert {"test-cache", "test-router", "test-mock", "test-ingress"} <= names


async def test_table_names_every_service_and_instance(stack: Stack, nats_server: Nats) -> None:
    nc = await bus.connect(nats_server.url, "status-test")
    try:
        async with httpx.AsyncClient() as http:
            table = render(await collect(nc, http, monitor_url(nats_server), window=0.5))
    finally:
        await nc.close()
    for key, (name, _) in EXPECTED.items():
        assert name in table
        assert stack.servers[key].id[-SHORT_ID:] in table
    assert "SERVICE" in table and "REQUESTS" in table
    assert "nats-server " in table and "connections" in table


async def test_cli_json_lists_the_stack_and_the_server(stack: Stack, nats_server: Nats) -> None:
    code, out, err = await status_cli("--json", "--nats-url", nats_server.url,
                                      "--monitor", monitor_url(nats_server))
    assert code == 0, err
    document = json.loads(out)
    assert_lists_the_stack(document["services"], stack)
    assert document["server"]["connections"] > 0
    assert document["server"]["in_msgs_per_second"] is None  # one sample: no rate yet
    assert document["monitor_error"] is None


async def test_cli_table(stack: Stack, nats_server: Nats) -> None:
    code, out, err = await status_cli("--nats-url", nats_server.url, "--monitor", monitor_url(nats_server))
    assert code == 0, err
    for name, _ in EXPECTED.values():
        assert name in out
    assert "slow consumers" in out


async def test_unreachable_nats_exits_1_fast() -> None:
    started = time.monotonic()
    code, out, err = await status_cli("--nats-url", f"nats://127.0.0.1:{free_port()}", "--json")
    assert code == 1
    assert out == ""
    assert "cannot reach NATS" in err
    assert time.monotonic() - started < 5  # ~2 s budget plus the interpreter's start-up


async def test_unreachable_monitor_is_reported_not_fatal(stack: Stack, nats_server: Nats) -> None:
    code, out, err = await status_cli("--json", "--nats-url", nats_server.url,
                                      "--monitor", f"http://127.0.0.1:{free_port()}")
    assert code == 0, err
    document = json.loads(out)
    assert document["server"] is None
    assert "ConnectError" in document["monitor_error"]
    assert_lists_the_stack(document["services"], stack)


async def test_watch_prints_rates_until_ctrl_c(stack: Stack, nats_server: Nats) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llm_edge.cli", "status", "--json", "--watch", "0.6", "--timeout", "0.2",
        "--nats-url", nats_server.url, "--monitor", monitor_url(nats_server),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        # Traffic between the two refreshes, so the second one has messages to count whatever the load
        # on the machine does to the timing of the command's own requests.
        for n in range(10):
            reply = await stack.http.post("/v1/chat/completions", json={
                "model": "mock", "messages": [{"role": "user", "content": f"between refreshes {n}"}]})
            assert reply.status_code == 200, reply.text
        second = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
    finally:
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 10)
    assert code == 0
    assert first["server"]["in_msgs_per_second"] is None
    # The requests above (and each refresh's own $SRV requests) are traffic: the rate is above zero.
    assert second["server"]["in_msgs_per_second"] > 0
    assert second["server"]["out_msgs_per_second"] > 0
    assert_lists_the_stack(second["services"], stack)

"""Admission in a three-node NATS cluster (issue #15, fault suite `nats-cluster-node-kill`): with
`jetstream_replicas: 3` the admission work queue lives on three nodes, so it survives the loss of the node
that leads it, and a comma-separated `NATS_URL` lists the nodes for the first connect."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from llm_edge.launcher import free_port, nats_config, nats_server_binary
from shared.subjects import Subjects
from tests.infra import NatsServer
from tests.integration.test_request_path import eventually
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config


class ClusterNode(NatsServer):
    def __init__(self, index: int, routes: list[int], cluster_port: int) -> None:
        super().__init__()
        self.name = f"n{index}"
        self.routes = [p for p in routes if p != cluster_port]
        self.cluster_port = cluster_port

    def start(self) -> None:
        scratch = Path(tempfile.mkdtemp(prefix="nats-cluster-test-"))
        (scratch / "nats.conf").write_text(nats_config(str(scratch / "jetstream")))
        self._start([nats_server_binary(), "-c", str(scratch / "nats.conf"), "-a", "127.0.0.1", "-p", str(self.port),
                     "--server_name", self.name, "--cluster_name", "edge-test",
                     "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                     "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)])


@pytest.fixture
def cluster() -> Iterator[list[ClusterNode]]:
    cluster_ports = [free_port() for _ in range(3)]
    nodes = [ClusterNode(i, cluster_ports, port) for i, port in enumerate(cluster_ports)]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
async def stack(cluster: list[ClusterNode], upstream: MockUpstream) -> AsyncIterator[Stack]:
    dead = f"nats://127.0.0.1:{free_port()}"  # nobody listens: the first connect moves on to the next URL
    url = ",".join([dead, *(node.url for node in cluster)])
    # Started at once: the workers wait for the new cluster to elect its JetStream leader before their queue.
    config = make_config(url, jetstream_replicas=3, cache={"enabled": False}, providers={
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k",
               "max_in_flight": 4}})
    stack = await Stack(config).start()
    yield stack
    await stack.close()


def ask(i: int) -> dict[str, object]:
    return {"model": "up/gpt-4o", "messages": [{"role": "user", "content": f"hello {i}"}]}


async def test_the_admission_queue_survives_the_node_that_leads_it(
    stack: Stack, cluster: list[ClusterNode]
) -> None:
    assert stack.ingress_bus is not None
    js = stack.ingress_bus.nc.jetstream()
    info = await js.stream_info(Subjects(stack.config.prefix).admission_stream("up"))
    assert info.config.num_replicas == 3
    assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # and the leader
    assert (await stack.http.post("/v1/chat/completions", json=ask(0))).status_code == 200

    leader = next(node for node in cluster if node.name == info.cluster.leader)
    leader.stop()  # the node holding the queue's leader goes
    # Every process connected to it reconnects to another node (meanwhile an ingress on it answers fast 503s,
    # as it does while its one server restarts); what is tested here is the queue.
    buses = [stack.ingress_bus, *(server.bus for server in stack.servers.values())]
    gone = f":{leader.port}"
    await eventually(lambda: all(b is not None and b.connected and not b.url.endswith(gone) for b in buses),
                     timeout=10)

    async def answered(i: int) -> httpx.Response:
        return await stack.http.post("/v1/chat/completions", json=ask(i), headers={"x-llm-edge-timeout": "10"})

    response = await answered(1)  # waits out the reconnect and the stream's new leader election
    assert response.status_code == 200, response.text
    for i in range(2, 12):
        response = await answered(i)
        assert response.status_code == 200, response.text
    info = await js.stream_info(Subjects(stack.config.prefix).admission_stream("up"))
    assert info.cluster is not None and info.cluster.leader != leader.name

"""Issue #16's must-show with two ingress processes (`llm-edge ingress`, each its own OS process on the same
bus): a key created through one's admin API works at once on the other, and once revoked it gets a 401 from
both within a second; a rotation likewise. The cache, router and mock provider run in the test's process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from llm_edge.launcher import free_port
from shared.config import encode
from tests.infra import Nats
from tests.integration.test_admin_keys import admin_client, ask, within_a_second
from tests.stack import Stack, make_config

ADMIN = "sk-admin-replicas-0123456789"


async def ready(url: str, process: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    """Until the ingress says it is ready (polling its probe), failing if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert process.returncode is None, f"the ingress exited with {process.returncode}"
            try:
                if (await client.get(f"{url}/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)  # polling interval of a readiness probe, not a synchronisation
    raise AssertionError(f"{url} not ready after {timeout}s")


@pytest.fixture
async def replicas(nats_server: Nats, tmp_path: Path) -> AsyncIterator[list[str]]:
    """Two ingress processes (their URLs) in front of an in-process cache, router and mock worker."""
    config = make_config(nats_server.url, admin={"key_sha256": hashlib.sha256(ADMIN.encode()).hexdigest()})
    file = tmp_path / "edge.yaml"
    file.write_bytes(encode(config))  # JSON is YAML
    stack = await Stack(config).start()
    processes: list[asyncio.subprocess.Process] = []
    try:
        urls = []
        for _ in range(2):
            port = free_port()
            env = dict(os.environ, LLM_EDGE_CONFIG=str(file), PORT=str(port), LOG_LEVEL="WARNING")
            processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "llm_edge.cli", "ingress", env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            await ready(url, process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 40)
            except TimeoutError:
                process.kill()
                await process.wait()
        await stack.close()


async def test_a_key_made_on_one_ingress_process_works_at_once_on_the_other_and_revoked_is_401_on_both(
    replicas: list[str],
) -> None:
    first, second = replicas
    async with admin_client(first, ADMIN) as admin:
        for round in range(3):
            created = await admin.post("/keys", json={"name": f"proc-{round}"})
            assert created.status_code == 201, created.text
            secret = created.json()["key"]
            assert await ask(second, secret) == 200  # at once, on the other process
            assert await ask(first, secret) == 200

            rotated = (await admin.post(f"/keys/proc-{round}/rotate")).json()["key"]
            assert await ask(second, rotated) == 200
            await within_a_second(replicas, secret, 401)

            assert (await admin.delete(f"/keys/proc-{round}")).status_code == 200
            took = await within_a_second(replicas, rotated, 401)
            assert took < 1.0
    async with admin_client(second, ADMIN) as admin:  # the other process lists the same (none left)
        assert (await admin.get("/keys")).json()["data"] == []

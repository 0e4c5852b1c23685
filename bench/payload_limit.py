"""What nats-server's max_payload of 48 MB costs (docs/RELIABILITY.md, "Large requests"): the latency of a
1 KB request with 1 MB and with 48 MB, the round trip of 1, 5 and 20 MiB requests (the mock echoes them,
so the answer is as large), and the server's RSS before and after. In-process stack, loopback only.

    .venv/bin/python bench/payload_limit.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llm_edge.launcher import free_port, nats_server_binary
from tests.infra import _nats_answers, wait_until_serving
from tests.stack import Stack, make_config


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return 0


def measure(max_payload: str) -> dict[str, object]:
    scratch = Path(tempfile.mkdtemp(prefix="payload-bench-"))
    (scratch / "nats.conf").write_text(f'max_payload: {max_payload}\njetstream {{ store_dir: "{scratch}/js" }}\n')
    port = free_port()
    server = subprocess.Popen([nats_server_binary(), "-c", str(scratch / "nats.conf"), "-a", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(port, _nats_answers, lambda: server.poll() is None)
        return asyncio.run(drive(f"nats://127.0.0.1:{port}", server.pid, max_payload))
    finally:
        server.terminate()
        server.wait()


async def drive(nats_url: str, server_pid: int, max_payload: str) -> dict[str, object]:
    stack = await Stack(make_config(nats_url, cache={"enabled": False})).start()
    assert stack.http is not None
    small = {"model": "mock", "messages": [{"role": "user", "content": "x" * 1000}]}
    for _ in range(50):
        await stack.http.post("/v1/chat/completions", json=small)
    latencies = []
    for _ in range(400):
        started = time.perf_counter()
        assert (await stack.http.post("/v1/chat/completions", json=small)).status_code == 200
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    result: dict[str, object] = {
        "max_payload": max_payload, "1 KB p50 ms": round(latencies[200] * 1000, 2),
        "1 KB p99 ms": round(latencies[396] * 1000, 2), "nats RSS MiB": rss_mib(server_pid),
    }
    if max_payload != "1MB":
        for mib in (1, 5, 20):
            body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "x" * ((mib << 20) - 100)}]})
            times = []
            for _ in range(5):
                started = time.perf_counter()
                response = await stack.http.post("/v1/chat/completions", content=body.encode())
                assert response.status_code == 200, response.text[:200]
                times.append(time.perf_counter() - started)
            result[f"{mib} MiB median ms"] = round(statistics.median(times) * 1000)
        result["nats RSS MiB after"] = rss_mib(server_pid)
    await stack.close()
    return result


if __name__ == "__main__":
    for setting in ("48MB", "1MB", "48MB"):  # 48 MB twice, to see the machine's noise
        print(measure(setting), flush=True)

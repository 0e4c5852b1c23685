"""Zero-loss rolling restarts: `llm-edge up` replaces every service in turn (SIGHUP) while the official
`openai` SDK keeps 32 requests in flight, half of them streams. No request may fail and no stream may
end early or without its `[DONE]`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from llm_edge.launcher import free_port
from tests.e2e.test_up import children_of, read_until, stop

LOAD_SECONDS = float(os.environ.get("ROLLING_LOAD_SECONDS", "60"))
CONCURRENCY = 32


def services_of(pid: int) -> dict[int, str]:
    return {p: c.split("llm_edge.cli ")[-1] for p, c in children_of(pid).items() if "llm_edge.cli" in c}


async def load(url: str, until: float, failures: list[str]) -> tuple[int, int]:
    """Requests back to back until `until`; returns (whole answers, whole streams)."""
    # No client-side retries: a request the gateway drops during a restart must show up as a failure.
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=30, max_retries=0)
    fresh = {"cache-control": "no-cache, no-store"}  # every request goes all the way to a provider
    answers = streams = 0
    n = 0
    while time.monotonic() < until:
        n += 1
        prompt = f"rolling {os.getpid()} {id(failures)} {n} {time.monotonic()}"
        expected = f"Mock reply to: {prompt}"
        try:
            if n % 2:
                completion = await client.chat.completions.create(
                    model="mock", messages=[{"role": "user", "content": prompt}], extra_headers=fresh)
                if completion.choices[0].message.content != expected:
                    failures.append(f"wrong answer: {completion.choices[0].message.content!r}")
                answers += 1
            else:
                text, finish = "", None
                stream = await client.chat.completions.create(
                    model="mock", messages=[{"role": "user", "content": prompt}], stream=True,
                    extra_headers=fresh)
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                if text != expected or finish != "stop":
                    failures.append(f"truncated stream: {text!r} finish={finish}")
                streams += 1
        except openai.OpenAIError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    await client.close()
    return answers, streams


@pytest.mark.timeout(LOAD_SECONDS + 120)
def test_rolling_restart_of_every_service_under_load_loses_nothing(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("providers:\n  mock: {latency_ms: 20, stream_chunks: 8, chunk_interval_ms: 15}\n")
    port = free_port()
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{free_port()}",
               NATS_MONITOR_PORT=str(free_port()), LLM_EDGE_CONFIG=str(config), LOG_LEVEL="WARNING")
    process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "up"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        read_until(process, "Ctrl-C drains", 30, [])
        before = services_of(process.pid)
        url = f"http://127.0.0.1:{port}"
        failures: list[str] = []

        async def run() -> list[tuple[int, int]]:
            until = time.monotonic() + LOAD_SECONDS
            workers = [asyncio.create_task(load(url, until, failures)) for _ in range(CONCURRENCY)]
            # two full rolls of every service while the load runs
            for at in (0.15, 0.55):
                await asyncio.sleep(LOAD_SECONDS * at - (0.0 if at == 0.15 else LOAD_SECONDS * 0.15))
                process.send_signal(signal.SIGHUP)
            return await asyncio.gather(*workers)

        results = asyncio.run(run())
        answers = sum(a for a, _ in results)
        streams = sum(s for _, s in results)
        after = services_of(process.pid)
        assert failures == [], failures[:5]
        assert answers > 100 and streams > 100
        # every service was replaced: none of the processes from before is still serving
        assert set(before.values()) == set(after.values())
        assert not set(before) & set(after), (before, after)
    finally:
        stop(process)

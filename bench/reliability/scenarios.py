"""The scenarios: each starts its own fleet, runs the mixed load, injects one fault at `FAULT_AT` seconds,
and summarises what the clients saw (see `summary`)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.reliability.fleet import Fleet, Shape, _ready, scratch
from bench.reliability.load import Load, Outcome
from llm_edge.launcher import free_port

FAULT_AT = 8.0  # seconds of steady load before the fault
LOAD_SECONDS = 30.0
CONCURRENCY = 32

Fault = Callable[[Fleet], Awaitable[None]]


@dataclass
class Scenario:
    name: str
    what: str
    fault: Fault | None
    shape: Shape = field(default_factory=Shape)
    seconds: float = LOAD_SECONDS
    goal: str = "0 failed non-streamed requests; a stream that fails ends with an error event"


def _kill(service: str, index: int = 0) -> Fault:
    async def fault(fleet: Fleet) -> None:
        await asyncio.to_thread(fleet.services[service][index].kill)
    return fault


async def _nats_restart(fleet: Fleet) -> None:
    await asyncio.to_thread(fleet.restart_nats, 0)


async def _nats_pause(fleet: Fleet) -> None:
    fleet.nats[0].signal(signal.SIGSTOP)
    await asyncio.sleep(5.0)  # the fault's own length: nats-server frozen for 5 s
    fleet.nats[0].signal(signal.SIGCONT)


async def _redis_loss(fleet: Fleet) -> None:
    assert fleet.redis is not None
    await asyncio.to_thread(fleet.redis.kill)


async def _redis_slow(fleet: Fleet) -> None:
    ends = time.monotonic() + 8.0
    while time.monotonic() < ends:  # Redis blocked 300 ms at a time, for 8 s
        await asyncio.to_thread(fleet.redis_cli, "DEBUG", "SLEEP", "0.3")


def _upstream(response: dict[str, Any], seconds: float) -> Fault:
    async def fault(fleet: Fleet) -> None:
        await asyncio.to_thread(fleet.upstream_fault, response, seconds)
    return fault


async def _node_kill(fleet: Fleet) -> None:
    await asyncio.to_thread(fleet.nats[1].kill)


SCENARIOS = [
    Scenario("kill-ingress", "SIGKILL one of two ingress replicas", _kill("ingress"),
             goal="requests in flight on the killed replica fail (their connection is gone); none after"),
    Scenario("kill-cache", "SIGKILL one of two cache replicas", _kill("cache")),
    Scenario("kill-router", "SIGKILL one of two router replicas", _kill("router")),
    Scenario("kill-provider", "SIGKILL one of two provider workers", _kill("provider")),
    Scenario("kill-provider-admitted", "SIGKILL one of two provider workers, requests admitted through "
             "max_in_flight (JetStream work queue)", _kill("provider"), Shape(max_in_flight=64)),
    Scenario("nats-restart", "nats-server stopped and started again", _nats_restart,
             goal="fast 503s while the bus is away, then recovery"),
    Scenario("nats-sigstop", "nats-server frozen (SIGSTOP) for 5 s", _nats_pause,
             goal="requests wait or fail clearly; recovery right after"),
    Scenario("redis-loss", "redis-server killed", _redis_loss, goal="0 failed requests (the cache is optional)"),
    Scenario("redis-slow", "redis-server blocked 300 ms at a time for 8 s", _redis_slow,
             goal="0 failed requests (the cache is optional)"),
    Scenario("upstream-429", "the upstream answers 429 to everything for 5 s",
             _upstream({"status": 429, "headers": {"retry-after": "1"}}, 5.0),
             goal="retries inside the deadline; what still fails is a clear 429/503"),
    Scenario("upstream-5xx", "the upstream answers 503 to everything for 3 s", _upstream({"status": 503}, 3.0),
             goal="retries, then clear 502/503; the breaker recovers"),
    Scenario("upstream-hang", "the upstream hangs (answers after 60 s) for 5 s",
             _upstream({"delay_ms": 60000}, 5.0), goal="504s at the provider timeout (10 s), no hang"),
    Scenario("upstream-cut", "the upstream cuts every answer mid-way for 5 s",
             _upstream({"fail_after_chunks": 2}, 5.0),
             goal="plain answers retried; started streams end with an error event"),
    Scenario("nats-cluster-node-kill", "a three-node NATS cluster, services spread over the nodes; one node "
             "SIGKILLed", _node_kill, Shape(nats_nodes=3, max_in_flight=64),
             goal="services reconnect to the other nodes; admission keeps working"),
]


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def summary(outcomes: list[Outcome], fault_at: float | None, rerouted: int) -> dict[str, Any]:
    results = Counter(o.result for o in outcomes)
    failed = [o for o in outcomes if o.result != "ok"]
    during = [o.seconds for o in outcomes if fault_at is not None and fault_at <= o.started < fault_at + 10]
    before = [o.seconds for o in outcomes if fault_at is None or o.started < fault_at]
    recover = None
    if fault_at is not None:
        late = [o.started + o.seconds for o in failed if o.started + o.seconds >= fault_at]
        recover = round(max(late) - fault_at, 2) if late else 0.0
    return {
        "sent": len(outcomes),
        "ok": results["ok"],
        "failed": {k: v for k, v in sorted(results.items()) if k != "ok"},
        "failed_plain": sum(1 for o in failed if not o.stream),
        "failed_streams": sum(1 for o in failed if o.stream),
        "truncated": results["truncated"],
        "p99_before_ms": _ms(percentile(before, 99)),
        "p99_during_ms": _ms(percentile(during, 99)),
        "recovered_after_s": recover,
        "rerouted_connects": rerouted,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def run(scenario: Scenario, out: Path) -> dict[str, Any]:
    fleet = Fleet(scenario.shape, out / scenario.name)
    await asyncio.to_thread(fleet.start)
    load = Load(lambda: [f"http://127.0.0.1:{p}" for p in fleet.ingress_ports], concurrency=CONCURRENCY)
    try:
        task = asyncio.create_task(load.run(scenario.seconds))
        if scenario.fault is not None:
            await asyncio.sleep(FAULT_AT)  # steady load first: the schedule of the experiment
            await scenario.fault(fleet)
        await task
    finally:
        await asyncio.to_thread(fleet.stop)
    return {"scenario": scenario.name, "what": scenario.what, "goal": scenario.goal,
            **summary(load.outcomes, FAULT_AT if scenario.fault else None, load.rerouted)}


def _start_up(workdir: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], int]:
    """`llm-edge up` (one replica of each service, as the launcher runs them) in front of a mock upstream."""
    workdir.mkdir(parents=True, exist_ok=True)
    upstream_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.mockupstream", "--port", str(upstream_port),
                                 "--latency-ms", "20", "--chunk-interval-ms", "10"], stdout=subprocess.DEVNULL)
    config = workdir / "edge.yaml"
    config.write_text(
        f"providers:\n  up: {{adapter: openai_compatible, base_url: 'http://127.0.0.1:{upstream_port}/v1', "
        "api_key: sk-reliability}\nmodels:\n  - name: m\n    targets: [{provider: up, model: gpt-4o-mini}]\n")
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{free_port()}",
               NATS_MONITOR_PORT=str(free_port()), LLM_EDGE_CONFIG=str(config), LOG_LEVEL="WARNING")
    with open(workdir / "up.log", "wb") as log:
        gateway = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "up"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    _ready(f"http://127.0.0.1:{port}/health/ready")
    return gateway, upstream, port


def _stop_up(gateway: subprocess.Popen[bytes], upstream: subprocess.Popen[bytes]) -> None:
    gateway.send_signal(signal.SIGINT)
    try:
        gateway.wait(60)
    except subprocess.TimeoutExpired:
        gateway.kill()
    upstream.terminate()
    upstream.wait()


async def rolling(out: Path, seconds: float = 40.0) -> dict[str, Any]:
    """SIGHUP to `llm-edge up` twice under the same load, with a client that never retries."""
    gateway, upstream, port = await asyncio.to_thread(_start_up, out / "rolling-restart")
    try:
        load = Load(lambda: [f"http://127.0.0.1:{port}"], concurrency=CONCURRENCY)
        task = asyncio.create_task(load.run(seconds))
        for at in (FAULT_AT, seconds / 2 + 4):
            await asyncio.sleep(at - (time.monotonic() - load.began))  # the experiment's schedule
            gateway.send_signal(signal.SIGHUP)
        await task
    finally:
        await asyncio.to_thread(_stop_up, gateway, upstream)
    return {"scenario": "rolling-restart", "what": "two SIGHUP rolling restarts of `llm-edge up`, client without "
            "retries", "goal": "0 failed requests", **summary(load.outcomes, FAULT_AT, load.rerouted)}


async def soak(out: Path, seconds: float) -> dict[str, Any]:
    """Steady mixed load for `seconds`; the RSS of every process sampled every 10 s."""
    fleet = Fleet(Shape(), out / "soak")
    await asyncio.to_thread(fleet.start)
    load = Load(lambda: [f"http://127.0.0.1:{p}" for p in fleet.ingress_ports], concurrency=16)
    samples: list[dict[str, float | None]] = []
    try:
        task = asyncio.create_task(load.run(seconds))
        while not task.done():
            samples.append(fleet.rss())
            await asyncio.wait({task}, timeout=10.0)  # the sampling period
        samples.append(fleet.rss())
    finally:
        await asyncio.to_thread(fleet.stop)
    first, last = samples[0], samples[-1]
    rss = {name: {"start_mib": _round(first.get(name)), "end_mib": _round(last.get(name)),
                  "max_mib": _round(max((s.get(name) or 0.0) for s in samples))} for name in first}
    return {"scenario": "soak", "what": f"{seconds:.0f} s of steady mixed load at c=16", "goal": "0 errors, flat RSS",
            **summary(load.outcomes, None, load.rerouted), "rss": rss}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def workdir() -> Path:
    return scratch()

"""How long a key change takes to reach another ingress replica, and what counting spend costs per answer.

    .venv/bin/python bench/admin_keys.py [--rounds 50]

Starts a nats-server (as the tests do), an in-process gateway with two ingress replicas, and through the
admin API of the first creates, rotates and revokes keys; it times, from each admin answer, until the second
replica's keyring has the change from its watch (polled every 0.1 ms; the lookup path that serves a key the
watch has not delivered yet is not counted). Then times `Spend.record` without Redis and with Redis's
batching (the writes themselves run in the background and are not timed).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from services.ingress.auth import Keyring
from services.ingress.spend import Spend
from services.providers.settings import SETTINGS
from shared.config import build
from shared.errors import AuthenticationFailed
from shared.messages import Usage
from tests.infra import NatsServer
from tests.stack import Stack, make_config

ADMIN = "sk-admin-bench-0123456789"


def knows(keyring: Keyring, secret: str) -> bool:
    """Whether the replica's keyring (what its watch delivered) accepts the secret, without the store."""
    try:
        keyring.authenticate({"authorization": f"Bearer {secret}"})
    except AuthenticationFailed:
        return False
    return True


async def until(keyring: Keyring, secret: str, known: bool, started: float) -> tuple[float, float]:
    """Seconds from `started` (the admin request sent) and from now (its answer back) until the change."""
    answered = time.perf_counter()
    while knows(keyring, secret) != known:  # noqa: ASYNC110 - another replica's state has no event to await
        await asyncio.sleep(0.0001)
    done = time.perf_counter()
    return done - started, done - answered


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"{label:<40} n={len(ms)} p50 {statistics.median(ms):.2f} ms  p90 {ms[int(len(ms) * 0.9)]:.2f} ms"
            f"  max {ms[-1]:.2f} ms")


async def propagation(rounds: int) -> None:
    nats = NatsServer()
    nats.start()
    config = make_config(nats.url, admin={"key_sha256": hashlib.sha256(ADMIN.encode()).hexdigest()})
    stack = await Stack(config).start()
    try:
        await stack.add_ingress()
        other = stack.apps[1].gateway.keyring
        assert other is not None
        times: dict[str, list[tuple[float, float]]] = {"create": [], "rotate": [], "revoke": []}
        async with httpx.AsyncClient(base_url=f"{stack.url}/admin",
                                     headers={"authorization": f"Bearer {ADMIN}"}) as admin:
            for i in range(rounds):
                name = f"bench-{i}"
                started = time.perf_counter()
                secret = (await admin.post("/keys", json={"name": name})).json()["key"]
                times["create"].append(await until(other, secret, True, started))
                started = time.perf_counter()
                rotated = (await admin.post(f"/keys/{name}/rotate")).json()["key"]
                times["rotate"].append(await until(other, secret, False, started))
                started = time.perf_counter()
                await admin.delete(f"/keys/{name}")
                times["revoke"].append(await until(other, rotated, False, started))
        for label, pairs in times.items():
            print(summary(f"{label}, from the admin request sent", [sent for sent, _ in pairs]))
            print(summary(f"{label}, from its answer back", [back for _, back in pairs]))
    finally:
        await stack.close()
        nats.stop()


async def recording(n: int = 200_000) -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=20, total_tokens=120)
    for label, data in (("memory", {}), ("redis", {"limits": {"redis_url": "redis://127.0.0.1:1/0"}})):
        spend = Spend(build(data, SETTINGS))
        started = time.perf_counter()
        for _ in range(n):
            spend.record("alpha", "red", "gpt-4o", usage, 0.000123)
        elapsed = time.perf_counter() - started
        print(f"Spend.record ({label}): {elapsed / n * 1e6:.2f} us per answer")
        spend._pending.clear()  # the unreachable Redis above is never written to
        await spend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(propagation(args.rounds))
    asyncio.run(recording())


if __name__ == "__main__":
    main()

"""Rolling restart of a compose deployment's workers under load: every container of the cache, router and
provider services in turn gets `docker stop` (SIGTERM, then the service drains) and `docker start`,
waiting for it to be healthy again before the next, while the official `openai` SDK keeps 32 requests in
flight through the ingress, half of them streams. Prints what failed or came back truncated (nothing, if
the drain works).

    docker compose -f deploy/compose.yaml up --build -d
    .venv/bin/python bench/rollout_compose.py --url http://127.0.0.1:8080 --project deploy

The ingress is left alone: compose publishes one ingress container on the gateway port, and restarting
the only one refuses connections whatever it does (Kubernetes puts a Service and a preStop delay in front;
locally, `tests/e2e/test_rolling_restart.py` covers the ingress through `llm-edge up`'s SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.test_rolling_restart import load

SERVICES = ("cache", "router", "provider-mock")


def containers(project: str, service: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
         "--filter", f"label=com.docker.compose.service={service}"],
        check=True, capture_output=True, text=True).stdout
    return out.split()


def health(container: str) -> str:
    out = subprocess.run(["docker", "inspect", "--format", "{{json .State.Health.Status}}", container],
                         check=True, capture_output=True, text=True).stdout
    return str(json.loads(out))


async def restart_in_turn(project: str, log: list[str]) -> None:
    for service in SERVICES:
        for container in containers(project, service):
            started = time.monotonic()
            await asyncio.to_thread(subprocess.run, ["docker", "stop", "-t", "35", container], check=True,
                                    capture_output=True)
            stopped = time.monotonic()
            await asyncio.to_thread(subprocess.run, ["docker", "start", container], check=True,
                                    capture_output=True)
            # Docker's health state has no event to await here: poll the image's HEALTHCHECK (on the bus,
            # not draining) twice a second.
            while health(container) != "healthy":  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            log.append(f"{service} {container[:12]}: drained in {stopped - started:.1f} s, "
                       f"healthy again after {time.monotonic() - stopped:.1f} s")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--project", default="deploy", help="the compose project name (the directory's)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=120, help="how long the load runs; the restarts "
                        "must be over before it ends")
    args = parser.parse_args()

    failures: list[str] = []
    log: list[str] = []
    until = time.monotonic() + args.seconds
    workers = [asyncio.create_task(load(args.url, until, failures)) for _ in range(args.concurrency)]
    await asyncio.sleep(2)  # the load is under way before the first stop
    await restart_in_turn(args.project, log)
    rolled_in_time = time.monotonic() < until
    results = await asyncio.gather(*workers)
    print("\n".join(log))
    print(f"{args.seconds:.0f} s at c={args.concurrency}: {sum(a for a, _ in results)} answers, "
          f"{sum(s for _, s in results)} streams, {len(failures)} failed or truncated")
    for failure in failures[:10]:
        print("  ", failure)
    if not rolled_in_time:
        print(f"the restarts outlasted the load: run longer than {args.seconds:.0f} s")
    return 0 if rolled_in_time and not failures else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

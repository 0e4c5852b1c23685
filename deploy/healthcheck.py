"""Container health check (the image's HEALTHCHECK): exit 0 when this container's service answers.

Healthy means the service takes work: `GET /health/ready` answers 200. The ingress answers it on PORT
(8080); the cache, router and provider workers on METRICS_PORT (connected to NATS, not draining). A
container runs one of them, so whichever answers is the one. Standard library only: it runs with the
image's Python and nothing else.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping

TIMEOUT_SECONDS = 1.0


def urls(env: Mapping[str, str]) -> list[str]:
    found = [f"http://127.0.0.1:{env.get('PORT') or 8080}/health/ready"]
    if env.get("METRICS_PORT"):
        found.append(f"http://127.0.0.1:{env['METRICS_PORT']}/health/ready")
    return found


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return bool(response.status == 200)
    except OSError:  # refused, timed out, or an HTTP error status (URLError and HTTPError are OSErrors)
        return False


def main(env: Mapping[str, str] = os.environ) -> int:
    return 0 if any(answers(url) for url in urls(env)) else 1


if __name__ == "__main__":
    sys.exit(main())

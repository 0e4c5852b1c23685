"""Mixed load from outside, as a client that does not retry would see it: half the requests streams, half
plain answers, half the prompts repeated (cache hits) and half new (misses), spread over the ingress
replicas the way a load balancer would (a refused connection goes to the next replica, as a balancer's
health check would steer it; nothing else is ever retried).

Each request's outcome is one of: `ok`; `http_<status>`; `transport_<kind>` (no whole HTTP response);
`stream_error` (a stream that ended with an error event: clear, never mistaken for an answer);
`stream_broken` (the connection broke mid-stream, as when the ingress serving it dies: the client sees
an error); `truncated` (a stream that ended cleanly without its `[DONE]` and without an error event: the
one outcome that must never happen, since a client would take half an answer for a whole one).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

TIMEOUT_SECONDS = 30.0


@dataclass(slots=True)
class Outcome:
    started: float  # seconds since the load began
    seconds: float
    stream: bool
    result: str


@dataclass
class Load:
    urls: Callable[[], list[str]]  # the ingress base URLs right now
    concurrency: int = 32
    outcomes: list[Outcome] = field(default_factory=list)
    began: float = 0.0
    rerouted: int = 0  # connections refused by a dead replica and sent to the next one

    async def run(self, seconds: float) -> None:
        self.began = time.monotonic()
        until = self.began + seconds
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._worker(session, n, until) for n in range(self.concurrency)))

    async def _worker(self, session: aiohttp.ClientSession, worker: int, until: float) -> None:
        rng = random.Random(worker)
        for n in itertools.count():
            if time.monotonic() >= until:
                return
            stream = n % 2 == 1
            unique = rng.random() < 0.5
            prompt = f"reliability {worker} {n} {time.time()}" if unique else f"repeated {rng.randrange(50)}"
            body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": stream}
            started = time.monotonic()
            result = await self._one(session, worker + n, body, stream)
            self.outcomes.append(Outcome(started - self.began, time.monotonic() - started, stream, result))

    async def _one(self, session: aiohttp.ClientSession, pick: int, body: dict[str, object], stream: bool) -> str:
        urls = self.urls()
        for attempt in range(len(urls)):
            url = urls[(pick + attempt) % len(urls)]
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    if response.status != 200:
                        await response.read()
                        return f"http_{response.status}"
                    if not stream:
                        data = await response.json(content_type=None)
                        return "ok" if data.get("choices") else "invalid"
                    return await _read_stream(response)
            except aiohttp.ClientConnectorError:
                self.rerouted += 1
                continue  # refused: this replica is down; a load balancer would use another
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
                return "stream_broken" if stream else f"transport_{type(exc).__name__}"
            except TimeoutError:
                return "transport_timeout"
            except aiohttp.ClientError as exc:
                return f"transport_{type(exc).__name__}"
        return "transport_no_replica"


async def _read_stream(response: aiohttp.ClientResponse) -> str:
    buffer = b""
    async for data in response.content.iter_any():
        buffer += data
    events = [line[6:] for line in buffer.replace(b"\r\n", b"\n").split(b"\n") if line.startswith(b"data: ")]
    if events and events[-1] == b"[DONE]":
        return "ok"
    for event in events:
        if event != b"[DONE]" and b'"error"' in event and "error" in json.loads(event):
            return "stream_error"
    return "truncated"

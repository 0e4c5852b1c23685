"""`unless_client_leaves`: the request's own task is cancelled when its client goes, told by the connection
(`guard.Departure`, what uvicorn's protocol gives every request) or, under another ASGI server, found by a
task waiting in `receive()`. The whole path through a running stack: tests/integration/test_client_leaves.py."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from services.ingress.gateway import unless_client_leaves
from services.ingress.guard import DEPARTURE, Departure


def _request(departure: Departure | None, gone: asyncio.Event) -> Request:
    scope: dict[str, object] = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    if departure is not None:
        scope[DEPARTURE] = departure

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    return Request(scope, receive)


async def test_the_connection_tells_the_request_its_client_left() -> None:
    departure, never, started = Departure(), asyncio.Event(), asyncio.Event()
    cancelled = False

    async def work() -> str:
        nonlocal cancelled
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise
        return "answer"

    waiting = asyncio.create_task(unless_client_leaves(_request(departure, never), work()))
    await started.wait()
    departure.left()
    with pytest.raises(ClientDisconnect):
        await waiting
    assert cancelled
    assert departure.callback is None


async def test_an_answer_before_the_client_leaves_is_returned_and_the_watch_ends() -> None:
    departure = Departure()

    async def work() -> str:
        return "answer"

    assert await unless_client_leaves(_request(departure, asyncio.Event()), work()) == "answer"
    assert departure.callback is None  # the connection closing later calls nothing of the finished request


async def test_a_client_already_gone_is_not_waited_for() -> None:
    departure = Departure()
    departure.left()
    ran = False

    async def work() -> str:
        nonlocal ran
        ran = True
        return "answer"

    with pytest.raises(ClientDisconnect):
        await unless_client_leaves(_request(departure, asyncio.Event()), work())
    assert not ran


async def _waiting_for_ever(started: asyncio.Event) -> str:
    started.set()
    await asyncio.Event().wait()
    return "answer"


async def test_a_shutdown_is_not_taken_for_a_client_leaving() -> None:
    departure, started = Departure(), asyncio.Event()
    waiting = asyncio.create_task(unless_client_leaves(_request(departure, asyncio.Event()),
                                                       _waiting_for_ever(started)))
    await started.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_under_another_server_a_task_waits_for_the_disconnect() -> None:
    gone, started = asyncio.Event(), asyncio.Event()
    waiting = asyncio.create_task(unless_client_leaves(_request(None, gone), _waiting_for_ever(started)))
    await started.wait()
    gone.set()
    with pytest.raises(ClientDisconnect):
        await waiting

"""Heartbeats on the bus (shared/bus.py) against a real nats-server: a responder that goes silent is
given up on within `LOST_AFTER` heartbeats, one that keeps working (and beating) is waited for."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.msg import Msg

from shared import bus
from shared.messages import ErrorReply, encode
from tests.infra import Nats

BEAT = 0.05  # seconds: the whole silence allowance is BEAT * bus.LOST_AFTER


async def test_a_silent_responder_is_lost_long_before_the_deadline(nats_server: Nats) -> None:
    nc = await bus.connect(nats_server.url, "bus-test")
    try:
        async def take_and_never_answer(msg: Msg) -> None:
            pass

        await nc.subscribe("bus-test.silent", cb=take_and_never_answer)
        await nc.flush()
        started = time.monotonic()
        with pytest.raises(bus.Lost):
            await bus.request(nc, "bus-test.silent", b"", {}, timeout=30, heartbeat=BEAT)
        assert time.monotonic() - started < 10  # given up on at the silence, not at the 30 s deadline
    finally:
        await nc.close()


async def test_a_working_responder_beats_and_is_waited_for(nats_server: Nats) -> None:
    nc = await bus.connect(nats_server.url, "bus-test")
    server = bus.Server(nc, "bus-test", "0.0.1", "heartbeat test")
    await server.start()
    answer = encode(ErrorReply(status=418, type="test", message="done at last"))

    async def slow(msg: Msg) -> None:
        await asyncio.sleep(BEAT * bus.LOST_AFTER * 4)  # the work: four silence allowances long
        await nc.publish(msg.reply, answer)

    await server.endpoint("slow", "bus-test.slow", "bus-test", slow)
    try:
        reply, _ = await bus.request(nc, "bus-test.slow", b"", {}, timeout=30, heartbeat=BEAT)
        assert isinstance(reply, ErrorReply) and reply.message == "done at last"
        # Without asking for heartbeats, none are sent: the first message is the answer itself.
        reply, _ = await bus.request(nc, "bus-test.slow", b"", {}, timeout=30)
        assert isinstance(reply, ErrorReply) and reply.message == "done at last"
    finally:
        await server.drain(grace=5)


async def test_no_responders_is_told_at_once_with_heartbeats_too(nats_server: Nats) -> None:
    nc = await bus.connect(nats_server.url, "bus-test")
    try:
        with pytest.raises(bus.NoResponders):
            await bus.request(nc, "bus-test.nobody", b"", {}, timeout=30, heartbeat=BEAT)
    finally:
        await nc.close()

"""The bus package (shared/bus/) against a real nats-server: heartbeats and loss detection, typed handlers
and their error replies, the micro registration that relies on nats-py's private attributes, streams,
cancels and the admission work queue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping

import msgspec
import pytest

from shared import bus
from shared.errors import DeadlineExceeded, InvalidRequest, ProviderError
from shared.messages import ChatResult, Delivered, ErrorReply, StreamChunk, StreamEnd, Usage, encode, reply_decoder
from shared.subjects import Headers
from tests.infra import Nats

BEAT = 0.05  # seconds: the whole silence allowance is BEAT * bus.LOST_AFTER


class Ping(msgspec.Struct):
    text: str


async def server_on(url: str, name: str = "bus-test") -> bus.Server:
    server = bus.Server(await bus.connect(url, name), name, "0.0.1", "bus test")
    await server.start()
    return server


async def test_a_silent_responder_is_lost_long_before_the_deadline(nats_server: Nats) -> None:
    connection = await bus.connect(nats_server.url, "bus-test")
    try:
        async def take_and_never_answer(data: bytes, headers: Mapping[str, str]) -> None:
            pass

        await connection.listen("bus-test.silent", take_and_never_answer)
        started = time.monotonic()
        with pytest.raises(bus.Lost):
            await connection.request("bus-test.silent", b"", {}, timeout=30, heartbeat=BEAT)
        assert time.monotonic() - started < 10  # given up on at the silence, not at the 30 s deadline
    finally:
        await connection.close()


async def test_a_working_handler_beats_and_is_waited_for_and_errors_travel_as_replies(nats_server: Nats) -> None:
    server = await server_on(nats_server.url)
    answer = ErrorReply(status=418, type="test", message="done at last")

    async def slow(request: Ping, ctx: bus.Context) -> ErrorReply:
        if request.text == "bad":
            raise InvalidRequest("bad ping", param="text")
        await asyncio.sleep(BEAT * bus.LOST_AFTER * 4)  # the work: four silence allowances long
        return answer

    await server.endpoint("slow", "bus-test.slow", "bus-test", bus.Endpoint(msgspec.msgpack.Decoder(Ping).decode, slow))
    caller = server.bus
    try:
        reply, _ = await caller.request("bus-test.slow", encode(Ping(text="hi")), {}, timeout=30, heartbeat=BEAT)
        assert reply == answer
        # Without asking for heartbeats, none are sent: the first message is the answer itself.
        reply, _ = await caller.request("bus-test.slow", encode(Ping(text="hi")), {}, timeout=30)
        assert reply == answer
        reply, _ = await caller.request("bus-test.slow", encode(Ping(text="bad")), {}, timeout=30)
        assert isinstance(reply, ErrorReply) and (reply.status, reply.param) == (400, "text")
        reply, _ = await caller.request("bus-test.slow", b"\xc1 not msgpack", {}, timeout=30)
        assert isinstance(reply, ErrorReply) and reply.status == 400
    finally:
        await server.drain(grace=5)


async def test_a_success_goes_straight_to_the_answer_inbox_and_an_error_only_to_the_requester(
    nats_server: Nats,
) -> None:
    """`Llm-Answer-To`: the worker answers the ingress directly; the router (the requester) hears the
    outcome, and an error reaches the router alone, which may still retry or fall back."""
    server = await server_on(nats_server.url)

    async def work(request: Ping, ctx: bus.Context) -> ChatResult:
        if request.text == "fail":
            raise ProviderError("upstream failed")  # retryable: the router may try again
        return ChatResult(id=request.text, created=0, model="m", choices=[], usage=Usage(), provider="p",
                          target_model="m")

    await server.endpoint("w", "bus-test.work", "bus-test", bus.Endpoint(msgspec.msgpack.Decoder(Ping).decode, work))
    caller = await bus.connect(nats_server.url, "bus-test-router")
    ingress = caller.replies.open()  # the inbox the answer is to go to (another process's, in the gateway)
    direct = {Headers.ANSWER_TO: ingress.subject}
    try:
        reply, _ = await caller.request("bus-test.work", encode(Ping(text="one")), direct, 30, BEAT)
        assert isinstance(reply, Delivered)  # the router needs no more than that
        got = reply_decoder.decode((await ingress.next(time.monotonic() + 5)).data)
        assert isinstance(got, ChatResult) and got.id == "one"

        reply, _ = await caller.request("bus-test.work", encode(Ping(text="fail")), direct, 30, BEAT)
        assert isinstance(reply, ErrorReply) and reply.retryable

        # With `Llm-Outcome: result` (single-flight followers) the router gets the answer too; with
        # `Llm-Fill-To`, the cache fill goes out as well, under the request's key.
        fills: asyncio.Queue[tuple[bytes, Mapping[str, str]]] = asyncio.Queue()

        async def fill(data: bytes, headers: Mapping[str, str]) -> None:
            fills.put_nowait((data, headers))

        await caller.listen("bus-test.fill", fill)
        reply, _ = await caller.request("bus-test.work", encode(Ping(text="two")), {
            **direct, Headers.OUTCOME: "result", Headers.FILL_TO: "bus-test.fill", Headers.CACHE_KEY: "k2",
            Headers.CACHE_TTL: "60", Headers.REQUEST_ID: "not for the fill"}, 30, BEAT)
        assert isinstance(reply, ChatResult) and reply.id == "two"
        filled, headers = await asyncio.wait_for(fills.get(), 5)
        assert filled == encode(reply) and dict(headers) == {Headers.CACHE_KEY: "k2", Headers.CACHE_TTL: "60"}
        # Messages from one publisher arrive in order: had the error gone to the answer inbox, it would be
        # the next message there, before "two".
        got = reply_decoder.decode((await ingress.next(time.monotonic() + 5)).data)
        assert isinstance(got, ChatResult) and got.id == "two"
    finally:
        caller.replies.close(ingress)
        await caller.close()
        await server.drain(grace=5)


async def test_no_responders_is_told_at_once_with_heartbeats_too(nats_server: Nats) -> None:
    connection = await bus.connect(nats_server.url, "bus-test")
    try:
        for heartbeat in (None, BEAT):
            started = time.monotonic()
            with pytest.raises(bus.NoResponders):
                await connection.request("bus-test.nobody", b"", {}, timeout=30, heartbeat=heartbeat)
            assert time.monotonic() - started < 5
    finally:
        await connection.close()


async def test_endpoints_are_registered_with_micro_and_counted(nats_server: Nats) -> None:
    """Fails when a nats-py release changes the private parts of `nats.micro` that shared/bus/micro.py
    relies on: the endpoint must appear in INFO and STATS with its requests and errors counted."""
    server = await server_on(nats_server.url, "bus-micro-test")

    async def echo(request: Ping, ctx: bus.Context) -> bus.Raw:
        if request.text == "fail":
            raise InvalidRequest("no")
        return bus.Raw(request.text.encode())

    await server.endpoint("echo", "bus-micro-test.echo", "q", bus.Endpoint(msgspec.msgpack.Decoder(Ping).decode, echo))
    try:
        assert (await server.bus.ask("bus-micro-test.echo", encode(Ping(text="hello")), {}, 5)).data == b"hello"
        await server.bus.ask("bus-micro-test.echo", encode(Ping(text="fail")), {}, 5)
        replies = await bus.gather(server.bus, ["$SRV.INFO.bus-micro-test", "$SRV.STATS.bus-micro-test"], 0.3)
        by_type = {json.loads(r)["type"]: json.loads(r) for r in replies}
        info = by_type["io.nats.micro.v1.info_response"]
        assert info["id"] == server.id and [e["subject"] for e in info["endpoints"]] == ["bus-micro-test.echo"]
        (stats,) = by_type["io.nats.micro.v1.stats_response"]["endpoints"]
        assert (stats["num_requests"], stats["num_errors"]) == (2, 1)
        assert stats["processing_time"] > 0 and "no" in stats["last_error"]
    finally:
        await server.drain(grace=5)
    # Drained: the endpoint no longer takes requests.
    connection = await bus.connect(nats_server.url, "bus-test")
    try:
        with pytest.raises(bus.NoResponders):
            await connection.ask("bus-micro-test.echo", encode(Ping(text="late")), {}, 5)
    finally:
        await connection.close()


async def test_a_stream_handler_sends_frames_to_the_stream_and_the_result_to_the_reply(nats_server: Nats) -> None:
    server = await server_on(nats_server.url)
    cancelled = asyncio.Event()

    async def whole(request: Ping, ctx: bus.Context) -> ErrorReply:
        raise AssertionError("a stream request goes to the stream handler")

    async def frames(request: Ping, ctx: bus.Context) -> AsyncIterator[StreamChunk | StreamEnd | ChatResult]:
        try:
            for seq in range(3 if request.text != "forever" else 1000):
                yield StreamChunk(seq=seq, content=f"{seq} ")
                if request.text == "forever":
                    await asyncio.sleep(BEAT)
            yield StreamEnd(seq=3, id="x", model="m", created=0, finish_reason="stop", usage=None, provider="p",
                            target_model="m")
            yield ChatResult(id="x", created=0, model="m", choices=[], usage=Usage(), provider="p", target_model="m")
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await server.endpoint("s", "bus-test.stream", "bus-test",
                          bus.Endpoint(msgspec.msgpack.Decoder(Ping).decode, whole, frames), cancels="bus-test.cancel")
    caller = await bus.connect(nats_server.url, "bus-test-caller")

    async def router_stand_in(data: bytes, headers: Mapping[str, str]) -> None:
        pass  # takes the stream request (so the server sees a responder); the test itself plays the router

    await caller.listen("bus-test.nowhere", router_stand_in)
    try:
        # The requester plays the router here: it asks for the outcome and names where frames go.
        stream = await caller.open_stream("bus-test.nowhere", b"", {}, "bus-test.cancel")
        reply, _ = await caller.request("bus-test.stream", encode(Ping(text="three")),
                                        {Headers.STREAM: "1", Headers.STREAM_TO: stream.waiter.subject}, 30, BEAT)
        assert isinstance(reply, ChatResult)
        seen = [await stream.next(5, "chunk") for _ in range(4)]
        assert [type(f).__name__ for f in seen] == ["StreamChunk"] * 3 + ["StreamEnd"]
        stream.finished = True
        await stream.close()

        # A cancel names a stream by its unguessable bus id: only that stream stops.
        other = await caller.open_stream("bus-test.nowhere", b"", {}, "bus-test.cancel")
        outcome = asyncio.create_task(caller.request(
            "bus-test.stream", encode(Ping(text="forever")),
            {Headers.STREAM: "1", Headers.STREAM_TO: other.waiter.subject, Headers.BUS_ID: other.id}, 30, BEAT))
        assert isinstance(await other.next(5, "chunk"), StreamChunk)
        await caller.publish("bus-test.cancel", b"", {Headers.BUS_ID: "not-" + other.id})
        assert isinstance(await other.next(5, "chunk"), StreamChunk)
        assert not cancelled.is_set()
        await other.close()  # not finished: the close sends the cancel for its own id
        reply, _ = await outcome
        assert isinstance(reply, ErrorReply) and reply.code == "client_disconnected" and reply.stream_started
        assert cancelled.is_set()

        # A cancel that arrives before its stream (the client left first): the stream never starts.
        late = await caller.open_stream("bus-test.nowhere", b"", {}, "bus-test.cancel")
        await caller.publish("bus-test.cancel", b"", {Headers.BUS_ID: late.id})
        await caller.nc.flush()
        reply, _ = await caller.request(
            "bus-test.stream", encode(Ping(text="three")),
            {Headers.STREAM: "1", Headers.STREAM_TO: late.waiter.subject, Headers.BUS_ID: late.id}, 30, BEAT)
        assert isinstance(reply, ErrorReply) and reply.code == "client_disconnected"
        with pytest.raises(DeadlineExceeded):
            await late.next(0.3, "chunk")  # nothing was sent to it
        late.finished = True
        await late.close()
    finally:
        await caller.close()
        await server.drain(grace=5)

"""The bus's lean protocol path (`shared/bus/wire.py`) against a real nats-server, read by plain nats-py
on the other side: what it publishes is what nats-py would have sent, what it reads is what nats-py would
have read, and it fails here, not in production, if a nats-py release moves the private attributes it
relies on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.transport import TcpTransport
from nats.protocol.parser import AWAITING_CONTROL_LINE

from shared import bus
from shared.bus import wire
from shared.bus.context import Context, Raw
from shared.bus.serving import Endpoint
from tests.infra import Nats


async def plain(url: str) -> Client:
    return await nats.connect(url)  # nats-py as it comes: the reference for the wire format


PROBE = {"Wire-Probe": "1"}


async def until_routed(publish: Callable[[], Awaitable[None]], routed: asyncio.Event) -> None:
    """Publish probes until one arrives: the readers here are plain nats-py, whose `flush` can return before
    the server has its subscription (its PING overtakes the queued SUB; `wire.flush` is the bus's fix, see
    the last test). So the messages under test leave only once the subject is known to be routed."""
    for _ in range(100):
        await publish()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(routed.wait(), 0.05)
            return
    raise AssertionError("no probe arrived in 5 s")


def probe(msg: Msg, routed: asyncio.Event) -> bool:
    if msg.headers and "Wire-Probe" in msg.headers:
        routed.set()
        return True
    return False


class Inbox:
    """A plain nats-py subscription's messages, as they come (probes aside)."""

    def __init__(self, count: int) -> None:
        self.msgs: list[Msg] = []
        self.count = count
        self._all = asyncio.Event()
        self.routed = asyncio.Event()

    @classmethod
    async def on(cls, nc: Client, subject: str, count: int = 1) -> Inbox:
        inbox = cls(count)
        await nc.subscribe(subject, cb=inbox._take)
        await nc.flush()
        return inbox

    async def _take(self, msg: Msg) -> None:
        if probe(msg, self.routed):
            return
        self.msgs.append(msg)
        if len(self.msgs) >= self.count:
            self._all.set()

    async def wait(self) -> list[Msg]:
        await asyncio.wait_for(self._all.wait(), 5)
        return self.msgs


def test_the_private_parts_of_nats_py_it_relies_on_are_there() -> None:
    nc = Client()
    for attribute in ("_ps", "_process_headers", "_process_msg", "_send_command", "_flush_pending",
                      "_flush_queue", "_max_payload", "stats", "is_draining_pubs", "_subs", "_pending",
                      "_pending_data_size", "_max_pending_size", "_transport", "msg_class"):
        assert hasattr(nc, attribute), attribute
    assert isinstance(nc._ps.buf, bytearray) and nc._ps.state == AWAITING_CONTROL_LINE
    assert isinstance(nc._pending, list)
    wire.install(nc)
    assert isinstance(nc._ps, wire.Parser)


async def test_the_private_parts_of_a_connected_nats_py_it_relies_on_are_there(nats_server: Nats) -> None:
    """What the writer and the early delivery reach into once connected: the transport's stream reader and
    writer, the reader's buffer, a subscription's future and counters."""
    connection = await bus.connect(nats_server.url, "wire-test")
    try:
        nc = connection.nc
        transport = nc._transport
        assert isinstance(transport, TcpTransport)
        assert isinstance(transport._io_reader, asyncio.StreamReader)
        assert isinstance(transport._io_reader._buffer, bytearray)  # type: ignore[attr-defined]
        assert isinstance(transport._io_writer, asyncio.StreamWriter)
        subscription = await wire.sink(nc, "wire.parts", lambda msg: None)
        assert isinstance(subscription._future, wire._Sink)
        assert subscription._max_msgs == 0 and subscription._received == 0
    finally:
        await connection.close()


async def test_what_it_publishes_plain_nats_py_reads_as_sent(nats_server: Nats) -> None:
    connection = await bus.connect(nats_server.url, "wire-test")
    reader = await plain(nats_server.url)
    try:
        inbox = await Inbox.on(reader, "wire.out", 3)
        await until_routed(lambda: connection.publish("wire.out", b"", PROBE), inbox.routed)
        headers = {"Llm-Bus-Id": "abc_-123", "Llm-Deadline": "1790000000000", "Llm-Target-Model": "gpt-4o·mini"}
        await connection.publish("wire.out", b"with headers", headers, reply="wire.reply")
        await connection.publish("wire.out", b"without")
        await connection.publish("wire.out", b"", {"Llm-Alive": "1"})
        got = await inbox.wait()
        assert [(m.data, m.headers, m.reply) for m in got] == [
            (b"with headers", headers, "wire.reply"), (b"without", None, ""), (b"", {"Llm-Alive": "1"}, "")]
    finally:
        await connection.close()
        await reader.close()


async def test_a_header_value_with_a_line_break_cannot_add_a_header(nats_server: Nats) -> None:
    connection = await bus.connect(nats_server.url, "wire-test")
    reader = await plain(nats_server.url)
    try:
        inbox = await Inbox.on(reader, "wire.inject")
        await until_routed(lambda: connection.publish("wire.inject", b"", PROBE), inbox.routed)
        await connection.publish("wire.inject", b"x", {"Llm-Request-Id": "a\r\nLlm-Namespace: other\r\n"})
        got = await inbox.wait()
        assert "Llm-Namespace" not in (got[0].headers or {})
        assert got[0].data == b"x"
    finally:
        await connection.close()
        await reader.close()


async def test_a_subject_with_a_space_is_refused_as_nats_py_refuses_it(nats_server: Nats) -> None:
    connection = await bus.connect(nats_server.url, "wire-test")
    try:
        with pytest.raises(nats.errors.BadSubjectError):
            await wire.publish(connection.nc, "wire.a b", b"x", {"Llm-Alive": "1"}, "")
        with pytest.raises(nats.errors.MaxPayloadError):
            await wire.publish(connection.nc, "wire.big", b"x" * (connection.max_payload + 1), None, "")
    finally:
        await connection.close()


async def test_what_it_reads_matches_what_was_sent_in_every_framing(nats_server: Nats) -> None:
    """Many small messages in one read, and messages larger than a read (split across reads), in order,
    with their headers, to the bus's own sink subscription."""
    connection = await bus.connect(nats_server.url, "wire-test")
    writer = await plain(nats_server.url)
    got: list[tuple[bytes, Mapping[str, str] | None, str]] = []
    sizes = [0, 1, 5, 100_000, 3, 70_000, 7] + [10] * 200 + [200_000]
    done, routed = asyncio.Event(), asyncio.Event()

    def take(msg: Msg) -> None:
        if probe(msg, routed):
            return
        got.append((msg.data, msg.headers, msg.reply))
        if len(got) == len(sizes):
            done.set()

    try:
        await wire.sink(connection.nc, "wire.in", take)
        await connection.nc.flush()
        await until_routed(lambda: writer.publish("wire.in", b"", headers=PROBE), routed)
        for index, size in enumerate(sizes):
            payload = bytes([index % 251]) * size
            headers = {"Index": str(index), "Note": "naïve: yes"} if index % 3 else None
            await writer.publish("wire.in", payload, reply=f"r.{index}" if index % 2 else "", headers=headers)
        await writer.flush()
        await asyncio.wait_for(done.wait(), 10)
        for index, size in enumerate(sizes):
            data, heard, reply = got[index]
            assert data == bytes([index % 251]) * size
            assert heard == ({"Index": str(index), "Note": "naïve: yes"} if index % 3 else None)
            assert reply == (f"r.{index}" if index % 2 else "")
    finally:
        await connection.close()
        await writer.close()


async def test_a_sink_hears_its_messages_as_they_arrive_in_order_among_another_subscriptions(
        nats_server: Nats) -> None:
    """A `sink` subscription's messages are delivered in the transport's callback, with no task woken (the
    early delivery); a message for nats-py's own kind of subscription, a status, or a frame split across
    reads goes to nats-py's read loop, and what follows it waits its turn there, so the order holds."""
    connection = await bus.connect(nats_server.url, "wire-test")
    writer = await plain(nats_server.url)
    sunk: list[bytes] = []
    called_back: list[bytes] = []
    in_callback = 0
    done, routed = asyncio.Event(), asyncio.Event()
    sizes = ([10] * 50 + [90_000, 3]) * 4
    expected = len(sizes)

    def take(msg: Msg) -> None:
        nonlocal in_callback
        if probe(msg, routed):
            return
        in_callback += asyncio.current_task() is None  # a protocol callback, not a task
        sunk.append(msg.data)
        if len(sunk) + len(called_back) == expected:
            done.set()

    async def other(msg: Msg) -> None:
        called_back.append(msg.data)
        if len(sunk) + len(called_back) == expected:
            done.set()

    try:
        await wire.sink(connection.nc, "wire.mixed.sink", take)
        await connection.nc.subscribe("wire.mixed.other", cb=other)
        await wire.flush(connection.nc)
        await until_routed(lambda: writer.publish("wire.mixed.sink", b"", headers=PROBE), routed)
        for index, size in enumerate(sizes):
            subject = "wire.mixed.other" if index % 7 == 3 else "wire.mixed.sink"
            await writer.publish(subject, str(index).encode().ljust(size, b"."))
            if index % 10 == 0:
                await writer.flush()  # several reads, not one
        await writer.flush()
        await asyncio.wait_for(done.wait(), 10)
        numbers = [int(data.rstrip(b".")) for data in sunk]
        assert numbers == [index for index in range(expected) if index % 7 != 3]
        assert [int(data.rstrip(b".")) for data in called_back] == [i for i in range(expected) if i % 7 == 3]
        assert in_callback > 0  # early; the rest (behind another's message or a split frame) in the read loop
    finally:
        await connection.close()
        await writer.close()


async def test_a_sink_that_fails_on_one_message_still_hears_the_next(nats_server: Nats) -> None:
    """A delivery that raises in the transport's callback is logged; the connection goes on reading."""
    connection = await bus.connect(nats_server.url, "wire-test")
    writer = await plain(nats_server.url)
    heard: list[bytes] = []
    done, routed = asyncio.Event(), asyncio.Event()

    def take(msg: Msg) -> None:
        if probe(msg, routed):
            return
        if msg.data == b"bad":
            raise RuntimeError("this one fails")
        heard.append(msg.data)
        if msg.data == b"last":
            done.set()

    try:
        await wire.sink(connection.nc, "wire.failing", take)
        await wire.flush(connection.nc)
        await until_routed(lambda: writer.publish("wire.failing", b"", headers=PROBE), routed)
        for data in (b"first", b"bad", b"last"):
            await writer.publish("wire.failing", data)
        await writer.flush()
        await asyncio.wait_for(done.wait(), 5)
        assert heard == [b"first", b"last"]
    finally:
        await connection.close()
        await writer.close()


async def test_what_is_published_faster_than_the_socket_takes_arrives_whole_and_in_order(
        nats_server: Nats) -> None:
    """The writer hands a turn's messages to the socket itself; while the socket is backed up, nats-py's
    flusher (which waits for the drain) takes over. Either way every message arrives, in order."""
    connection = await bus.connect(nats_server.url, "wire-test")
    reader = await plain(nats_server.url)
    count, size = 40, 900_000  # under the server's 1 MB max_payload
    try:
        inbox = await Inbox.on(reader, "wire.flood", count)
        await until_routed(lambda: connection.publish("wire.flood", b"", PROBE), inbox.routed)
        stream = connection.nc._transport._io_writer.transport  # type: ignore[union-attr]
        backlog = 0
        for index in range(count):
            await connection.publish("wire.flood", bytes([index]) * size, {"Index": str(index)})
            if index % 20 == 19:
                await asyncio.sleep(0)  # the writer's turn: 18 MB, more than a socket buffer takes at once
                backlog = max(backlog, stream.get_write_buffer_size())
        got = await inbox.wait()
        assert [(m.headers or {}).get("Index") for m in got] == [str(i) for i in range(count)]
        assert all(m.data == bytes([i]) * size for i, m in enumerate(got))
        assert backlog > 0  # the socket was backed up: the flusher's path was taken too
    finally:
        await connection.close()
        await reader.close()


async def test_an_endpoint_runs_at_most_its_limit_and_the_rest_in_order_and_drains_them_all(
        nats_server: Nats) -> None:
    server = bus.Server(await bus.connect(nats_server.url, "wire-test"), "wire-test", "0.0.1", "wire test")
    await server.start()
    running, most, order = 0, 0, []
    release, full = asyncio.Event(), asyncio.Event()

    async def handle(request: bytes, ctx: Context) -> Raw:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running == 2:
            full.set()
        order.append(request)
        await release.wait()
        running -= 1
        return Raw(request)

    await server.endpoint("slow", "wire.slow", "wire", Endpoint(bus.raw, handle), limit=2)
    client = await bus.connect(nats_server.url, "wire-client")
    try:
        asks = [asyncio.create_task(client.ask("wire.slow", str(i).encode(), {}, 10.0)) for i in range(6)]
        await asyncio.wait_for(full.wait(), 5)
        draining = asyncio.create_task(server.drain(grace=10))
        release.set()
        answers = await asyncio.gather(*asks)
        await draining
        assert most == 2
        assert [answer.data for answer in answers] == [str(i).encode() for i in range(6)]
        assert order == [str(i).encode() for i in range(6)]
    finally:
        await client.close()


async def test_a_listener_hears_what_is_published_as_soon_as_listen_returns(nats_server: Nats) -> None:
    """`Bus.listen` returns once the server routes to it (a service says it is ready after that). nats-py's
    own flush let its PING overtake the SUB still queued, so on a new connection about one listener in
    twenty missed a message published at once (this test failed that way on nats-py's flush)."""
    writer = await plain(nats_server.url)
    try:
        for attempt in range(60):
            heard = asyncio.Event()

            async def hear(data: bytes, headers: Mapping[str, str], heard: asyncio.Event = heard) -> None:
                heard.set()

            listener = await bus.connect(nats_server.url, "wire-listener")
            try:
                await listener.listen(f"wire.fresh.{attempt}", hear)
                await writer.publish(f"wire.fresh.{attempt}", b"x")
                await writer.flush()
                await asyncio.wait_for(heard.wait(), 2)
            finally:
                await listener.close()
    finally:
        await writer.close()

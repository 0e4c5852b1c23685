"""The provider workers' HTTP/1.1 client (services/providers/h1.py) against a raw HTTP server on loopback
that answers exactly the bytes each test scripts: keep-alive reuse, the three ways a body ends (length,
chunks, the server's close), compression, a server that closes idle connections, a cut body, and no
header injection."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from pathlib import Path

import pytest
import trustme

from services.providers.h1 import BadRequest, ConnectFailed, Disconnected, Pool, Response

BODY = b'{"ok":true}'


class RawServer:
    """Reads one request head (and its Content-Length body) at a time and writes the next scripted answer;
    `close_after` closes the connection once that answer is written."""

    def __init__(self, answers: list[tuple[bytes, bool]]) -> None:
        self.answers = answers
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                answer, close_after = self.answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%b\r\n%b" % (
        len(body), extra, body)


async def read_all(response: Response) -> bytes:
    try:
        whole = response.whole()
        if whole is not None:
            return whole
        parts = []
        while data := await response.next():
            parts.append(data)
        return b"".join(parts)
    finally:
        response.release()


async def ask(url: str, pool: Pool) -> Response:
    return await pool.request("POST", url, {"Content-Type": "application/json", "Authorization": "Bearer k"},
                              b'{"q":1}', 5.0)


async def test_answers_reuse_one_connection_and_the_request_is_well_formed() -> None:
    server = RawServer([(ok(), False), (ok(b'{"n":2}'), False)])
    url = await server.start()
    pool = Pool(8)
    try:
        first = await ask(url, pool)
        assert (first.status, first.headers["content-type"]) == (200, "application/json")
        assert await read_all(first) == BODY
        assert await read_all(await ask(url, pool)) == b'{"n":2}'
        assert server.connections == 1
        head = server.requests[0]
        assert head.startswith(b"POST /v1/chat HTTP/1.1\r\n")
        assert b"\r\nContent-Length: 7\r\n" in head and head.endswith(b"\r\n\r\n" + b'{"q":1}')
        assert b"cookie" not in head.lower() and b"accept-encoding" not in head.lower()
    finally:
        pool.close()
        await server.stop()


async def test_a_chunked_a_compressed_and_a_close_delimited_body_are_read_whole() -> None:
    packed = gzip.compress(BODY * 100)
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n" + BODY[:5] + b"\r\n" + b"%x\r\n" % (len(BODY) - 5) + BODY[5:] + b"\r\n0\r\n\r\n")
    compressed = ok(packed, b"Content-Encoding: gzip\r\n")
    until_close = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2\n\n"
    server = RawServer([(chunked, False), (compressed, False), (until_close, True)])
    url = await server.start()
    pool = Pool(8)
    try:
        assert await read_all(await ask(url, pool)) == BODY
        assert await read_all(await ask(url, pool)) == BODY * 100
        assert await read_all(await ask(url, pool)) == b"data: 1\n\ndata: 2\n\n"
    finally:
        pool.close()
        await server.stop()


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    server = RawServer([(ok(), True), (ok(b'{"n":2}'), True)])
    url = await server.start()
    pool = Pool(8)
    try:
        assert await read_all(await ask(url, pool)) == BODY
        for _ in range(100):  # until the close has reached us (the next request would otherwise race it)
            if server.connections == 1 and all(c.closed for cs in pool._idle.values() for c in cs):
                break
            await asyncio.sleep(0.01)
        assert await read_all(await ask(url, pool)) == b'{"n":2}'
        assert server.connections == 2
    finally:
        pool.close()
        await server.stop()


async def test_bytes_after_an_answer_never_reach_the_next_request() -> None:
    """A server that writes more than the answer asked for (a stray start of another response): the
    connection is not used again, so the next request reads its own answer, not the leftover."""
    stray = ok() + b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"stale\":"
    server = RawServer([(stray, False), (ok(b'{"n":2}'), False)])
    url = await server.start()
    pool = Pool(8)
    try:
        assert await read_all(await ask(url, pool)) == BODY
        assert await read_all(await ask(url, pool)) == b'{"n":2}'  # its own, on a new connection
        assert server.connections == 2
    finally:
        pool.close()
        await server.stop()


async def test_a_body_cut_short_is_an_error_not_a_short_answer() -> None:
    server = RawServer([(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + BODY, True)])
    url = await server.start()
    pool = Pool(8)
    try:
        response = await ask(url, pool)
        with pytest.raises(Disconnected):
            await read_all(response)
    finally:
        pool.close()
        await server.stop()


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    server = RawServer([(ok(), False)])
    url = await server.start()
    pool = Pool(8)
    try:
        with pytest.raises(BadRequest):
            await pool.request("POST", url, {"X-Evil": "a\r\nX-Injected: 1"}, b"", 5.0)
        assert server.connections == 0
    finally:
        pool.close()
        await server.stop()


async def tls_server(cert: trustme.LeafCert) -> tuple[asyncio.Server, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
        writer.write(ok())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def test_https_is_verified_against_the_trusted_authorities_by_host_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    authority = trustme.CA()
    server, port = await tls_server(authority.issue_cert("localhost"))
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # OpenSSL's default store: the system's, here ours
    trusted, untrusted = Pool(8), Pool(8)
    try:
        response = await ask(f"https://localhost:{port}/v1/chat", trusted)
        assert (response.status, await read_all(response)) == (200, BODY)
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))  # a store without our authority
        with pytest.raises(ConnectFailed):
            await ask(f"https://localhost:{port}/v1/chat", untrusted)
    finally:
        trusted.close()
        untrusted.close()
        server.close()
        await server.wait_closed()

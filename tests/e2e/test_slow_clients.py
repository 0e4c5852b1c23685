"""Slow and oversized clients against a real `llm-edge ingress` process (issue #15, item 10): a request
that does not arrive in time is cut (408 while its head is missing; a stalled body closes the
connection), an oversized head is a 431, and none of it disturbs a normal request."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from llm_edge.launcher import free_port
from tests.infra import Nats

LIMITS = ("{client_header_timeout_seconds: 0.5, client_body_timeout_seconds: 0.5, max_header_bytes: 16384, "
          "keep_alive_seconds: 1, max_body_bytes: 4096}")


@pytest.fixture(scope="module")
def ingress(nats_server: Nats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    config = tmp_path_factory.mktemp("slow") / "edge.yaml"
    config.write_text(f"ingress: {LIMITS}\nproviders:\n  mock: {{}}\n")
    port = free_port()
    env = dict(os.environ, PORT=str(port), NATS_URL=nats_server.url, LLM_EDGE_CONFIG=str(config),
               LOG_LEVEL="WARNING")
    process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "ingress"], env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, "the ingress never answered"
        time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(10)


def closes_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and when it closed it."""
    begun = time.monotonic()
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {seconds}s") from None
    return data, time.monotonic() - begun


def test_a_silent_connection_is_closed(ingress: int) -> None:
    with socket.create_connection(("127.0.0.1", ingress)) as sock:
        data, _ = closes_within(sock, 5)
    assert data.startswith(b"HTTP/1.1 408")


def test_a_half_sent_head_is_a_408(ingress: int) -> None:
    with socket.create_connection(("127.0.0.1", ingress)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-")
        data, _ = closes_within(sock, 5)
    assert data.startswith(b"HTTP/1.1 408")


def test_a_stalled_body_closes_the_connection(ingress: int) -> None:
    with socket.create_connection(("127.0.0.1", ingress)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{\"model\": \"mock\", ")
        data, _ = closes_within(sock, 5)
    assert data == b""  # the handler was reading the body: nobody left to answer


def test_an_oversized_head_is_a_431(ingress: int) -> None:
    with socket.create_connection(("127.0.0.1", ingress)) as sock:
        head = b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-Filler-%d: %b\r\n" % (i, b"v" * 1000) for i in range(8 * 1024))  # about 8 MiB
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before it was all sent
            sock.sendall(head + b"\r\n")
        data, _ = closes_within(sock, 5)
    assert data.startswith(b"HTTP/1.1 431")


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a `content-length`, leaving the connection open."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_the_rest_of_a_refused_body_leaves_the_connection_to_its_keep_alive_timeout(ingress: int) -> None:
    """A 413 leaves on the request's `content-length`, before its body; the client sends the body anyway
    (the SDKs do) and keeps the connection. It must still close when idle (keep_alive_seconds: 1): a
    connection nothing closes holds a drain to its grace period's end."""
    with socket.create_connection(("127.0.0.1", ingress)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 65536\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 413")
        sock.sendall(b"x" * 65536)
        data, elapsed = closes_within(sock, 5)
    assert data == b""
    assert elapsed < 3


def test_a_stray_line_break_after_an_answer_leaves_the_connection_to_its_keep_alive_timeout(ingress: int) -> None:
    with socket.create_connection(("127.0.0.1", ingress)) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"\r\n")
        _, elapsed = closes_within(sock, 5)
    assert elapsed < 3


def test_a_normal_request_is_answered_meanwhile(ingress: int) -> None:
    response = httpx.get(f"http://127.0.0.1:{ingress}/v1/models")  # answered by the ingress alone
    assert response.status_code == 200
    assert [card["id"] for card in response.json()["data"]] == ["mock"]

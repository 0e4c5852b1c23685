"""An ingress told to stop (SIGTERM: a rolling restart, a scale-down) drains the way a load balancer
expects (issue #15, item 8): it stops accepting, and a keep-alive connection that a client reuses after
that still gets its answer, marked `Connection: close`, instead of being closed under the request. A
client that does not retry (most, for a POST) loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from llm_edge.launcher import free_port
from tests.infra import Nats

REQUEST = b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n"


def exchange(sock: socket.socket, request: bytes = REQUEST) -> bytes:
    """One request on a keep-alive connection and its whole response (head and Content-Length body);
    b"" when the server closed the connection instead of answering."""
    try:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return b""
            data += chunk
    except ConnectionError:
        return b""
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_keep_alive_connections_reused_during_the_drain_are_answered(nats_server: Nats, tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("providers:\n  mock: {}\n")
    port = free_port()
    env = dict(os.environ, PORT=str(port), NATS_URL=nats_server.url, LLM_EDGE_CONFIG=str(config),
               LOG_LEVEL="WARNING")
    process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "ingress"], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:  # until it answers: the readiness poll every client does
            try:
                first = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and process.poll() is None, "the ingress never listened"
                time.sleep(0.05)
        idle = [first, *(socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3))]
        for sock in idle:  # each connection answered once, then idle in the client's pool
            assert exchange(sock).startswith(b"HTTP/1.1 200")

        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:  # until it stops accepting: the drain has begun
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "the ingress kept accepting connections"
            time.sleep(0.01)

        for sock in idle:  # the client's pool reuses its connections, unaware of the drain
            answer = exchange(sock)
            assert answer.startswith(b"HTTP/1.1 200"), f"request lost on a reused connection: {answer!r}"
            assert b"connection: close" in answer.lower()
            assert sock.recv(1) == b""  # and then the ingress closes it
            sock.close()
        # Every connection is closed: it exits at once. uvicorn re-raises the SIGTERM once it has shut down
        # cleanly, so the status is that signal's.
        assert process.wait(timeout=5) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

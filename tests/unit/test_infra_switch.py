"""The switch in tests/infra.py: which nats-server and redis-server the integration tests get."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import infra


@pytest.fixture(autouse=True)
def fresh_choice() -> Iterator[None]:
    infra.infra.cache_clear()
    yield
    infra.infra.cache_clear()  # not the choice made under this test's environment: the session's own


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")


def test_local_is_local_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(infra.INFRA, "local")
    chosen = infra.infra()
    assert not chosen.docker
    assert isinstance(chosen.nats(), infra.NatsServer) and isinstance(chosen.redis(tmp_path), infra.RedisServer)


def test_auto_without_an_engine_falls_back_to_local_processes_and_says_why(
    monkeypatch: pytest.MonkeyPatch, no_engine: None
) -> None:
    monkeypatch.setenv(infra.INFRA, "auto")
    chosen = infra.infra()
    assert not chosen.docker and chosen.why.startswith("no Docker engine answers")


def test_docker_without_an_engine_fails_saying_why(monkeypatch: pytest.MonkeyPatch, no_engine: None) -> None:
    monkeypatch.setenv(infra.INFRA, "docker")
    with pytest.raises(RuntimeError, match="no Docker engine answers"):
        infra.infra()


def test_an_unknown_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(infra.INFRA, "kubernetes")
    with pytest.raises(RuntimeError, match="auto, docker or local"):
        infra.infra()


def test_the_local_servers_serve_their_protocols(tmp_path: Path) -> None:
    """Readiness is the protocol answering: INFO from NATS, PONG from Redis (a port alone is not enough)."""
    for server, answers in ((infra.NatsServer(), infra._nats_answers),
                            (infra.RedisServer(tmp_path), infra._redis_answers)):
        server.start()
        try:
            assert server.running
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
                assert answers(sock)
        finally:
            server.stop()
        assert not server.running

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import uvloop

from tests.infra import Nats, Server, infra
from tests.mockupstream.server import MockUpstream


def pytest_report_header(config: pytest.Config) -> str:
    chosen = infra()
    return f"nats-server and redis-server: {'containers' if chosen.docker else 'local processes'} ({chosen.why})"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[Nats]:
    server = infra().nats()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = infra().redis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: Server) -> str:
    if not redis_server.running:  # a test that stopped Redis leaves it for the next one to restart
        redis_server.start()
    return redis_server.url


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    server = MockUpstream()
    await server.start()
    yield server
    await server.stop()



def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Tests run on uvloop, as every service does in production."""
    return {"uvloop": uvloop.new_event_loop}

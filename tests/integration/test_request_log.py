"""The request log (issue #16): every request of a run (answers, streams, cache hits, errors, refusals) has
its record in the database, in SQLite and in a real PostgreSQL alike, with what the client saw: status,
key, tenant, model, provider, tokens, cost, cache result, the request id it was told. A logger that is
stopped while requests are served, and started after, loses none of them. Queried over the bus (what the
admin route and `llm-edge logs` do) by key, model, status and time, and through the CLI itself.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import msgspec
import openai
import pytest

from services.logger.service import Logger
from services.logger.store import StoreError, open_store
from shared import bus
from shared.bus.journal import Appender, Journal
from shared.config import Config
from shared.messages import ErrorReply, reply_decoder
from shared.request_log import LogPage, LogQuery, RequestRecord, ask
from shared.subjects import Subjects
from tests.infra import Nats
from tests.integration.test_request_path import eventually
from tests.mockupstream.server import MockUpstream
from tests.postgres import PostgresServer
from tests.stack import Stack, make_config

ALPHA, BETA = "sk-alpha-0123456789", "sk-beta-0123456789"
SECRET = "sk-configured-upstream-secret-4242"  # the provider's configured key: never in a stored body
WAIT = 20.0


def key(name: str, secret: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(), **fields}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the logger writes: a SQLite file, or a new database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'requests.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database(f"log_{os.getpid()}_{int(time.monotonic_ns())}")


def logged_config(nats_url: str, database: str, **fields: Any) -> Config:
    return make_config(
        nats_url, providers={"mock": {"api_key": SECRET}},
        keys=[key("alpha", ALPHA, tenant="team-a"), key("beta", BETA)],
        models=[{"name": "priced", "targets": [
            {"provider": "mock", "model": "mock", "input_price": 3.0, "output_price": 15.0}]}],
        request_log={"enabled": True, "bodies": True, "database_url": database}, **fields)


class Loggers:
    """Logger instances started and stopped during a test, each on its own bus connection."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.running: list[tuple[Logger, bus.Server]] = []

    async def start(self) -> Logger:
        connection = await bus.connect(self.config.nats_url, "test-logger")
        server = bus.Server(connection, "test-logger", "0.1.0", "test logger")
        await server.start()
        logger = Logger(self.config)
        await logger.start(server)
        self.running.append((logger, server))
        return logger

    async def stop(self, logger: Logger) -> None:
        for entry in list(self.running):
            if entry[0] is logger:
                self.running.remove(entry)
                await logger.stop_reading()
                await entry[1].drain(grace=5)
                await logger.close()

    async def close(self) -> None:
        for logger, _ in list(self.running):
            await self.stop(logger)


@pytest.fixture
async def stack(nats_server: Nats, database: str) -> AsyncIterator[Stack]:
    stack = await Stack(logged_config(nats_server.url, database)).start()
    yield stack
    await stack.close()


@pytest.fixture
async def loggers(stack: Stack) -> AsyncIterator[Loggers]:
    started = Loggers(stack.config)
    yield started
    await started.close()


async def query(stack: Stack, **filters: Any) -> LogPage:
    assert stack.ingress_bus is not None
    return await ask(stack.ingress_bus, Subjects(stack.config.prefix), LogQuery(**filters), 10.0)


async def flushed(stack: Stack) -> None:
    """Every record the ingress has made so far is on the stream."""
    for app in stack.apps:
        assert app.gateway.request_log is not None
        await asyncio.wait_for(app.gateway.request_log.flushed(), WAIT)


async def scripted_run(stack: Stack) -> dict[str, str]:
    """One of each: an answer, a stream, the Anthropic dialect, a cache hit, an unknown model, a bad key.
    The request id each client was told -> what it was."""
    told: dict[str, str] = {}
    alpha, beta = stack.openai(ALPHA), stack.openai(BETA)
    raw = await alpha.chat.completions.with_raw_response.create(
        model="priced", messages=[{"role": "user", "content": f"my upstream key is {SECRET}"}])
    told[raw.headers["x-request-id"]] = "answer"
    again = await alpha.chat.completions.with_raw_response.create(
        model="priced", messages=[{"role": "user", "content": f"my upstream key is {SECRET}"}])
    told[again.headers["x-request-id"]] = "hit"
    async with beta.chat.completions.with_streaming_response.create(
            model="priced", messages=[{"role": "user", "content": "stream it"}], stream=True,
            stream_options={"include_usage": True}) as streamed:
        told[streamed.headers["x-request-id"]] = "stream"
        async for _ in streamed.iter_lines():
            pass
    async with anthropic.AsyncAnthropic(base_url=stack.url, api_key=ALPHA, max_retries=0) as claude:
        message = await claude.messages.with_raw_response.create(
            model="priced", max_tokens=50, messages=[{"role": "user", "content": "hello from the Messages API"}])
    told[message.headers["x-request-id"]] = "messages"
    with pytest.raises(openai.NotFoundError) as unknown:
        await alpha.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    told[unknown.value.response.headers["x-request-id"]] = "unknown model"
    denied = await stack.http.post("/v1/chat/completions", headers={"x-request-id": "denied-1"},
                                   json={"model": "priced", "messages": [{"role": "user", "content": "hi"}]})
    assert denied.status_code == 401
    told["denied-1"] = "no key"
    return told


def by_request(records: list[RequestRecord]) -> dict[str, RequestRecord]:
    return {record.request_id: record for record in records}


async def test_every_request_of_a_run_is_in_the_database(stack: Stack, loggers: Loggers) -> None:
    logger = await loggers.start()
    started = time.time()
    told = await scripted_run(stack)
    await asyncio.wait_for(logger.until_written(len(told)), WAIT)

    found = by_request((await query(stack, bodies=True)).records)
    assert set(found) == set(told)
    what = {told[rid]: record for rid, record in found.items()}
    answer = what["answer"]
    assert (answer.status, answer.key, answer.tenant, answer.model, answer.provider, answer.cache, answer.stream) == (
        200, "alpha", "team-a", "priced", "mock", "miss", False)
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0
    assert answer.cost_usd == pytest.approx((answer.prompt_tokens * 3 + answer.completion_tokens * 15) / 1e6)
    assert started - 1 <= answer.time <= time.time() and answer.latency_ms > 0
    # Bodies are kept (asked for), the configured secret redacted in both.
    assert answer.request_body is not None and answer.response_body is not None
    assert SECRET not in answer.request_body and SECRET not in answer.response_body
    assert "my upstream key is [redacted]" in answer.request_body
    assert json.loads(answer.response_body)["choices"][0]["message"]["content"].startswith("Mock reply")

    hit = what["hit"]
    assert (hit.cache, hit.cost_usd, hit.status) == ("hit-l1", 0.0, 200)  # a hit costs nothing
    stream = what["stream"]
    assert (stream.stream, stream.status, stream.key, stream.tenant, stream.error) == (True, 200, "beta", "beta", None)
    assert stream.completion_tokens > 0 and stream.cost_usd > 0
    assert stream.response_body is not None and "data: [DONE]" in stream.response_body
    messages = what["messages"]
    assert (messages.path, messages.status, messages.completion_tokens > 0) == ("/v1/messages", 200, True)
    assert (what["unknown model"].status, what["unknown model"].error) == (404, "model_not_found")
    assert (what["no key"].status, what["no key"].key, what["no key"].error) == (401, None, "invalid_api_key")


async def test_queries_filter_by_key_model_status_and_time(stack: Stack, loggers: Loggers) -> None:
    logger = await loggers.start()
    told = await scripted_run(stack)
    await asyncio.wait_for(logger.until_written(len(told)), WAIT)
    everything = (await query(stack)).records
    assert [r.time for r in everything] == sorted((r.time for r in everything), reverse=True)  # newest first
    assert all(r.request_body is None for r in everything)  # bodies only when asked for

    alpha = (await query(stack, key="alpha")).records
    assert {told[r.request_id] for r in alpha} == {"answer", "hit", "messages", "unknown model"}
    assert {told[r.request_id] for r in (await query(stack, status=404)).records} == {"unknown model"}
    assert {told[r.request_id] for r in (await query(stack, model="priced", key="beta")).records} == {"stream"}
    assert {told[r.request_id] for r in (await query(stack, tenant="team-a", status=200)).records} == {
        "answer", "hit", "messages"}
    middle = everything[len(everything) // 2]
    newer = (await query(stack, since=middle.time)).records
    older = (await query(stack, until=middle.time)).records
    assert {r.id for r in newer} | {r.id for r in older} == {r.id for r in everything}
    assert not {r.id for r in newer} & {r.id for r in older}
    first = await query(stack, limit=2)
    second = await query(stack, limit=2, offset=2)
    assert first.more and [r.id for r in first.records + second.records] == [r.id for r in everything[:4]]
    assert (await query(stack, since=time.time() + 60)).records == []


async def test_a_logger_stopped_during_the_run_loses_nothing(stack: Stack, loggers: Loggers) -> None:
    first = await loggers.start()
    told = await scripted_run(stack)
    await asyncio.wait_for(first.until_written(len(told)), WAIT)
    await loggers.stop(first)

    # Served while no logger runs: the stream holds the records.
    while_down = await scripted_run(stack)
    await flushed(stack)
    with pytest.raises(bus.NoResponders):
        await query(stack)

    second = await loggers.start()
    await asyncio.wait_for(second.until_written(len(while_down)), WAIT)
    found = {r.request_id for r in (await query(stack, limit=100)).records}
    assert found == set(told) | set(while_down)
    assert second.written == len(while_down)  # nothing written twice (the first logger's were acked)


async def test_replicas_share_the_stream_and_write_each_record_once(stack: Stack, loggers: Loggers) -> None:
    """Two ingress replicas publish, two logger replicas share the consumer: each record written once."""
    one, two = await loggers.start(), await loggers.start()
    told: list[str] = []
    for _ in range(3):
        told += list(await scripted_run(stack))  # "denied-1" three times: the client's own request id
    second_ingress = stack.openai(BETA, url=await stack.add_ingress())
    for n in range(3):
        raw = await second_ingress.chat.completions.with_raw_response.create(
            model="priced", messages=[{"role": "user", "content": f"to the other replica {n}"}])
        told.append(raw.headers["x-request-id"])
    await flushed(stack)

    await eventually(lambda: one.written + two.written >= len(told), WAIT)
    assert one.written + two.written == len(told) == 21
    records = (await query(stack, limit=100)).records
    assert sorted(r.request_id for r in records) == sorted(told)
    assert len({r.id for r in records}) == 21  # records of one request id are still apart


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # the CLI asks the bus, whatever the database
async def test_logs_cli_prints_the_records(stack: Stack, loggers: Loggers, nats_server: Nats) -> None:
    logger = await loggers.start()
    told = await scripted_run(stack)
    await asyncio.wait_for(logger.until_written(len(told)), WAIT)
    env = {**os.environ, "NATS_URL": nats_server.url, "LLM_EDGE_PREFIX": stack.config.prefix}
    env.pop("LLM_EDGE_CONFIG", None)

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llm_edge.cli", "logs", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), WAIT)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, _ = await cli("--json", "--key", "alpha", "--status", "200", "--since", "10m")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert {told[line["request_id"]] for line in lines} == {"answer", "hit", "messages"}
    assert all(line["key"] == "alpha" and line["status"] == 200 for line in lines)

    code, out, _ = await cli("--status", "404")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["time", "(UTC)", "status"]
    assert len(rows) == 1 and " 404 " in rows[0] and "model_not_found" in rows[0]

    code, _, err = await cli("--since", "yesterday-ish")
    assert code == 2 and "expected 15m" in err


async def test_no_logger_anywhere_is_said_plainly(nats_server: Nats, tmp_path: Path) -> None:
    env = {**os.environ, "NATS_URL": nats_server.url, "LLM_EDGE_PREFIX": "nobody-logs-here"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llm_edge.cli", "logs", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode == 1
    assert "no logger is running" in err.decode()


async def test_records_wait_in_the_ingress_while_the_bus_is_away(nats_server: Nats) -> None:
    """The appender's bounded queue: nothing is published while there is no connection, the newest beyond
    the bound are dropped (counted), and the rest are stored, as one message, once the bus is back."""
    connection: list[bus.Bus] = []
    prefix = f"away{time.monotonic_ns()}"
    journal = Journal(f"{prefix}_LOG", f"{prefix}.log", max_age=60, max_bytes=1 << 20, storage="memory")
    appender = Appender(lambda: connection[0] if connection else None, journal, queue_size=3)
    items = [msgspec.msgpack.encode({"n": n}) for n in range(5)]
    for item in items:
        appender.append(item)
    assert (appender.pending, appender.dropped) == (3, 2)

    connection.append(await bus.connect(nats_server.url, "test-appender"))
    try:
        await asyncio.wait_for(appender.flushed(), WAIT)
        js = connection[0].nc.jetstream()
        assert (await js.stream_info(journal.stream)).state.messages == 1
        assert msgspec.msgpack.decode((await js.get_msg(journal.stream, 1)).data or b"") == [
            {"n": 0}, {"n": 1}, {"n": 2}]
        appender.append(items[3])
        await asyncio.wait_for(appender.flushed(), WAIT)
        assert msgspec.msgpack.decode((await js.get_msg(journal.stream, 2)).data or b"") == [{"n": 3}]
        assert appender.pending == 0
        await js.delete_stream(journal.stream)
    finally:
        await appender.close()
        await connection[0].close()


async def test_a_database_that_refuses_a_batch_gets_it_again(
    nats_server: Nats, postgres: PostgresServer
) -> None:
    """PostgreSQL stopped while records arrive: a logger acks nothing it did not write, a logger started
    meanwhile starts all the same, and every record is written once the database is back."""
    url = postgres.database(f"down_{time.monotonic_ns()}")
    stack = await Stack(logged_config(nats_server.url, url)).start()
    loggers = Loggers(stack.config)
    try:
        running = await loggers.start()
        postgres.stop()
        told = await scripted_run(stack)
        await flushed(stack)
        started_while_down = await loggers.start()
        assert running.written == started_while_down.written == 0
        postgres.start()
        await eventually(lambda: running.written + started_while_down.written >= len(told), WAIT)
        store = open_store(url, "")
        await store.open()
        try:
            found = await store.query(LogQuery(limit=100))
        finally:
            await store.close()
        assert {r.request_id for r in found.records} == set(told)
    finally:
        if not postgres.running:
            postgres.start()
        await loggers.close()
        await stack.close()


async def test_a_logger_holds_one_writing_connection_when_its_writer_and_sweep_reconnect_together(
    postgres: PostgresServer
) -> None:
    """Once the writing connection broke, the batch writer and the retention sweep reopen it at the same
    moment: they share one connection, and none is left open behind them."""
    import psycopg

    name = f"reopen_{time.monotonic_ns()}"
    url = postgres.database(name)
    store = open_store(url, "")
    await store.open()

    async def others(action: str) -> int:
        """`action` over the database's other sessions (pg_stat_activity): how many, or ended."""
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as check:
            cursor = await check.execute(f"SELECT {action} FROM pg_stat_activity WHERE datname = %s AND "
                                         "pid <> pg_backend_pid()", (name,))
            rows = await cursor.fetchall()
            return int(rows[0][0]) if action == "count(*)" else len(rows)

    async def connections() -> int:
        return await others("count(*)")

    try:
        assert await connections() == 1
        assert await others("pg_terminate_backend(pid)") == 1  # it breaks, as when PostgreSQL restarts
        with pytest.raises(StoreError):
            await store.purge(0.0)  # finds it broken, and drops it
        with warnings.catch_warnings(record=True) as dropped:
            warnings.simplefilter("always", ResourceWarning)
            await asyncio.gather(store.purge(0.0), store.write([]), store.purge(0.0))
            gc.collect()
        # A connection overwritten by another is dropped open: psycopg says so when it is freed.
        assert [str(w.message) for w in dropped if issubclass(w.category, ResourceWarning)] == []
        assert await connections() == 1
    finally:
        await store.close()
    assert await connections() == 0


async def test_the_bus_carries_a_page_of_records_and_bad_queries_get_400(stack: Stack, loggers: Loggers) -> None:
    await loggers.start()
    assert stack.ingress_bus is not None
    answer = await stack.ingress_bus.ask(Subjects(stack.config.prefix).logs_query, b"\x81\xa5limit\xcd\x27\x10", {},
                                         5.0)  # {"limit": 10000}: past the largest page
    reply = reply_decoder.decode(answer.data)
    assert isinstance(reply, ErrorReply) and reply.status == 400 and "limit" in reply.message


async def test_a_cut_stream_and_an_upstream_failure_are_recorded(
    nats_server: Nats, upstream: MockUpstream, tmp_path: Path
) -> None:
    config = make_config(
        nats_server.url, router={"retry": {"attempts": 1}},
        providers={"up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"}},
        request_log={"enabled": True, "database_url": f"sqlite:///{tmp_path / 'requests.db'}"})
    stack = await Stack(config).start()
    loggers = Loggers(config)
    try:
        logger = await loggers.start()
        client = stack.openai()
        fresh = {"cache-control": "no-cache, no-store"}
        upstream.script([{"status": 200, "fail_after_chunks": 2}])
        async with client.chat.completions.with_streaming_response.create(
                model="up/gpt-4o", messages=[{"role": "user", "content": "cut me"}], stream=True,
                extra_headers=fresh) as cut:
            body = b"".join([line.encode() async for line in cut.iter_lines()])
        assert b'"error"' in body and b"[DONE]" not in body  # the client saw the stream fail
        upstream.script([{"status": 429}])
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="up/gpt-4o", messages=[{"role": "user", "content": "429"}],
                                                 extra_headers=fresh)
        await asyncio.wait_for(logger.until_written(2), WAIT)
        found = by_request((await query(stack)).records)
        stream = found[cut.headers["x-request-id"]]
        assert (stream.stream, stream.status, stream.provider, stream.model) == (True, 200, "up", "up/gpt-4o")
        assert stream.error == "provider_stream_interrupted"  # the code of the error event the client got
        failed = found[limited.value.response.headers["x-request-id"]]
        assert (failed.status, failed.stream, failed.provider, failed.error) == (
            429, False, "up", limited.value.code or "rate_limit_exceeded")
    finally:
        await loggers.close()
        await stack.close()


ADMIN = "sk-admin-logs-0123456789"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # the route asks the bus, whatever the database
async def test_the_admin_api_serves_the_log_behind_the_admin_key(nats_server: Nats, database: str) -> None:
    config = logged_config(nats_server.url, database, admin={"key_sha256": hashlib.sha256(ADMIN.encode()).hexdigest()})
    stack = await Stack(config).start()
    loggers = Loggers(config)
    try:
        async with httpx.AsyncClient(base_url=f"{stack.url}/admin", timeout=10,
                                     headers={"authorization": f"Bearer {ADMIN}"}) as admin:
            no_logger = await admin.get("/logs")
            assert no_logger.status_code == 503 and no_logger.json()["error"]["code"] == "logger_unavailable"
            logger = await loggers.start()
            told = await scripted_run(stack)
            await asyncio.wait_for(logger.until_written(len(told)), WAIT)

            page = await admin.get("/logs", params={"key": "alpha", "status": "200", "since": "10m", "limit": "2"})
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["object"] == "list" and body["has_more"] is True
            assert [told[r["request_id"]] for r in body["data"]] == ["messages", "hit"]  # newest first
            assert all(r["request_body"] is None for r in body["data"])
            rest = (await admin.get("/logs", params={"key": "alpha", "status": "200", "offset": "2"})).json()
            assert [told[r["request_id"]] for r in rest["data"]] == ["answer"] and rest["has_more"] is False
            with_bodies = (await admin.get("/logs", params={"status": "404", "bodies": "true"})).json()["data"]
            assert len(with_bodies) == 1 and '"no-such-model"' in with_bodies[0]["request_body"]

            bad = await admin.get("/logs", params={"since": "whenever"})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"
        # Only the admin key reads it: a caller's key and no key are refused.
        for headers in ({"authorization": f"Bearer {ALPHA}"}, {}):
            refused = await stack.http.get("/admin/logs", headers=headers)
            assert refused.status_code == 401, refused.text
    finally:
        await loggers.close()
        await stack.close()


# ------------------------------------------------------------------ personal data in kept bodies

EMAIL, CARD = "jane.doe@example.com", "4111 1111 1111 1111"  # as in tests/integration/test_pii.py
PROMPT = f"My email is {EMAIL} and my card is {CARD}."


def holds_personal_data(text: str) -> bool:
    """The email, or the card's digits however they are spaced or escaped."""
    return EMAIL in text or re.sub(r"\D", "", CARD) in re.sub(r"\D", "", text)


def pii_config(nats_url: str, tmp_path: Path, redact_pii: bool = False) -> Config:
    def route(name: str, pii: str | None) -> dict[str, Any]:
        return {"name": name, "targets": [{"provider": "mock", "model": "mock"}],
                **({"pii": pii} if pii else {})}

    return make_config(
        nats_url, providers={"mock": {}},
        models=[route("plain", None), route("restored", "redact_restore"), route("refused", "block")],
        request_log={"enabled": True, "bodies": True, "redact_pii": redact_pii,
                     "database_url": f"sqlite:///{tmp_path / 'requests.db'}"})


async def logged_bodies(stack: Stack, told: list[str]) -> dict[str, RequestRecord]:
    """The records of the requests told these ids, once all are written."""
    logger = Loggers(stack.config)
    try:
        await asyncio.wait_for((await logger.start()).until_written(len(told)), WAIT)
        found = by_request((await query(stack, bodies=True)).records)
    finally:
        await logger.close()
    assert set(found) == set(told)
    return found


async def test_bodies_of_a_request_under_a_pii_mode_are_logged_without_its_values(
    nats_server: Nats, tmp_path: Path
) -> None:
    stack = await Stack(pii_config(nats_server.url, tmp_path)).start()
    told: list[str] = []
    try:
        async with stack.openai() as client:
            restored = await client.chat.completions.with_raw_response.create(
                model="restored", messages=[{"role": "user", "content": PROMPT}])
            assert restored.parse().choices[0].message.content == f"Mock reply to: {PROMPT}"  # the client's values
            told.append(restored.headers["x-request-id"])
            again = [{"role": "user", "content": f"again: {PROMPT}"}]
            async with client.chat.completions.with_streaming_response.create(
                    model="restored", messages=again, stream=True) as streamed:  # type: ignore[arg-type]
                told.append(streamed.headers["x-request-id"])
                chunks = await streamed.parse()
                assert isinstance(chunks, openai.AsyncStream)
                pieces = [chunk.choices[0].delta.content or "" async for chunk in chunks if chunk.choices]
            assert "".join(pieces) == f"Mock reply to: again: {PROMPT}"  # restored in the stream the client read
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(model="refused", messages=[{"role": "user", "content": PROMPT}])
            told.append(refused.value.response.headers["x-request-id"])
            plain = await client.chat.completions.with_raw_response.create(
                model="plain", messages=[{"role": "user", "content": PROMPT}])
            told.append(plain.headers["x-request-id"])
        records = await logged_bodies(stack, told)
    finally:
        await stack.close()
    answer, stream, block, unprotected = (records[rid] for rid in told)
    for record in (answer, stream, block):
        assert record.request_body is not None and record.response_body is not None
        assert not holds_personal_data(record.request_body), record.request_body
        assert not holds_personal_data(record.response_body), record.response_body
    # What went upstream: the request with placeholders, the same in the answer that echoes it.
    assert json.loads(answer.request_body or "")["messages"][0]["content"] == \
        "My email is [EMAIL_1] and my card is [CARD_1]."
    assert "Mock reply to: My email is [EMAIL_1] and my card is [CARD_1]." in (answer.response_body or "")
    assert "[EMAIL_1]" in (stream.response_body or "") and "data: [DONE]" in (stream.response_body or "")
    assert (block.status, block.error) == (400, "pii_detected")
    # No PII mode for this model and request_log.redact_pii off: its bodies are kept as they were.
    assert holds_personal_data(unprotected.request_body or "") and holds_personal_data(unprotected.response_body or "")


async def test_redact_pii_takes_personal_data_out_of_every_logged_body(nats_server: Nats, tmp_path: Path) -> None:
    stack = await Stack(pii_config(nats_server.url, tmp_path, redact_pii=True)).start()
    try:
        async with stack.openai() as client:
            plain = await client.chat.completions.with_raw_response.create(
                model="plain", messages=[{"role": "user", "content": PROMPT}])
        assert plain.parse().choices[0].message.content == f"Mock reply to: {PROMPT}"  # the request went as sent
        async with anthropic.AsyncAnthropic(base_url=stack.url, api_key="unused", max_retries=0) as claude:
            message = await claude.messages.with_raw_response.create(
                model="plain", max_tokens=50, messages=[{"role": "user", "content": f"Messages: {PROMPT}"}])
        told = [plain.headers["x-request-id"], message.headers["x-request-id"]]
        records = await logged_bodies(stack, told)
    finally:
        await stack.close()
    for record in records.values():
        assert record.request_body is not None and record.response_body is not None
        assert not holds_personal_data(record.request_body) and not holds_personal_data(record.response_body)
        assert "[EMAIL_1]" in record.request_body and "[CARD_1]" in record.response_body

"""The request log's pure parts and its SQLite store (a real file): records as the tap builds them, the
store's writes (idempotent), filters, paging and retention, a page cut to fit one bus message, the CLI's
time forms and table, and the configuration's switches."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from llm_edge.logs import table, when
from services.ingress.admin_logs import log_query
from services.ingress.context import Call
from services.ingress.gateway import Gateway
from services.ingress.request_log import RequestLog, noting, record
from services.logger.service import fit
from services.logger.store import POSTGRES, SqliteStore, StoreError, open_store
from services.providers.settings import SETTINGS
from shared import secrets
from shared.config import Config, ConfigError, build
from shared.errors import InvalidRequest, ProviderError
from shared.messages import StreamChunk, StreamEnd, Usage
from shared.request_log import LogPage, LogQuery, RequestRecord, encode, page_decoder


def rec(n: int, **fields: Any) -> RequestRecord:
    base: dict[str, Any] = {"id": f"id-{n:03d}", "request_id": f"rid-{n}", "time": 1_700_000_000.0 + n,
                            "path": "/v1/chat/completions", "status": 200, "latency_ms": 12.5, "key": "alpha",
                            "model": "gpt-4o", "provider": "openai", "prompt_tokens": 10, "completion_tokens": 5,
                            "cost_usd": 0.000125, "request_body": "{}", "response_body": "{}"}
    return RequestRecord(**(base | fields))


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = SqliteStore(str(tmp_path / "log" / "requests.db"))
    await opened.open()
    yield opened
    await opened.close()


async def test_sqlite_keeps_each_record_once_and_filters(store: SqliteStore) -> None:
    records = [rec(n, key="alpha" if n % 2 else "beta", status=200 if n % 3 else 429) for n in range(10)]
    await store.write(records)
    await store.write(records[:4])  # a batch delivered again: nothing twice
    everything = await store.query(LogQuery())
    assert [r.id for r in everything.records] == [f"id-{n:03d}" for n in reversed(range(10))]
    assert everything.records[0] == msgspec.structs.replace(records[9], request_body=None, response_body=None)
    assert (await store.query(LogQuery(bodies=True))).records[0] == records[9]
    alpha = await store.query(LogQuery(key="alpha", status=429))
    assert [r.id for r in alpha.records] == ["id-009", "id-003"]
    window = await store.query(LogQuery(since=1_700_000_002.0, until=1_700_000_005.0))
    assert [r.id for r in window.records] == ["id-004", "id-003", "id-002"]
    first, rest = await store.query(LogQuery(limit=4)), await store.query(LogQuery(limit=4, offset=8))
    assert first.more and len(first.records) == 4
    assert not rest.more and [r.id for r in rest.records] == ["id-001", "id-000"]


async def test_sqlite_retention_deletes_older_rows(store: SqliteStore) -> None:
    await store.write([rec(n) for n in range(5)])
    assert await store.purge(1_700_000_003.0) == 3
    assert [r.id for r in (await store.query(LogQuery())).records] == ["id-004", "id-003"]


async def test_an_unwritable_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    broken = SqliteStore(str(tmp_path / "file" / "requests.db"))
    with pytest.raises(StoreError, match="SQLite"):
        await broken.open()
    await broken.close()
    with pytest.raises(StoreError, match="database_url"):
        open_store("mysql://somewhere/db", "")


def test_postgres_sql_converts_times_both_ways() -> None:
    sql, params = POSTGRES.select(LogQuery(model="m", since=1.5, limit=10))
    assert "model = %s" in sql and "started_at >= to_timestamp(%s)" in sql
    assert "extract(epoch from started_at)" in sql and "NULL" in sql  # bodies left out unless asked for
    assert params == ["m", 1.5, 11, 0]
    assert "to_timestamp(%s)" in POSTGRES.insert() and "ON CONFLICT (id) DO NOTHING" in POSTGRES.insert()


def test_a_page_is_cut_to_fit_one_bus_message() -> None:
    page = LogPage(records=[rec(n, response_body="x" * 1000) for n in range(50)])
    whole = page_decoder.decode(fit(page, 1 << 20))
    assert whole == page
    cut = page_decoder.decode(fit(page, 10_000))
    assert cut.more and 0 < len(cut.records) < 10 and cut.records == page.records[: len(cut.records)]
    assert len(encode(cut)) <= 10_000


def _config(bodies: bool = True, max_body: int = 64 * 1024) -> Config:
    return build({"providers": {"mock": {"api_key": "sk-secret-in-config"}},
                  "request_log": {"enabled": True, "bodies": bodies, "max_body_bytes": max_body}}, SETTINGS)


def _log(bodies: bool = True, max_body: int = 64 * 1024) -> RequestLog:
    return RequestLog(_config(bodies, max_body), lambda: None)


def _call(**fields: Any) -> Call:
    call = Call(Gateway(_config()))
    for name, value in fields.items():
        setattr(call, name, value)
    return call


async def _exchange(log: RequestLog, request: bytes, messages: list[dict[str, Any]]) -> Any:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": request, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    tap = log.tap({"type": "http", "path": "/v1/chat/completions"}, receive, send)
    await tap.receive()
    for message in messages:
        await tap.send(message)
    assert sent == messages  # passed on unchanged
    return tap


async def test_a_record_says_what_the_client_saw() -> None:
    log = _log()
    tap = await _exchange(log, b'{"content": "my key sk-secret-in-config"}', [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]},
        {"type": "http.response.body", "body": b'{"answer": 42}'}])
    call = _call(rid="rid-1", key="alpha", tenant="team", model="gpt-4o", provider="openai", cache="miss",
                 usage=Usage(prompt_tokens=7, completion_tokens=3), cost_usd=0.5)
    made = record(tap, call)
    assert (made.status, made.key, made.tenant, made.model, made.provider, made.stream) == (
        200, "alpha", "team", "gpt-4o", "openai", False)
    assert (made.prompt_tokens, made.completion_tokens, made.cost_usd, made.error) == (7, 3, 0.5, None)
    assert made.request_body == '{"content": "my key [redacted]"}' and made.response_body == '{"answer": 42}'
    assert made.time == pytest.approx(time.time(), abs=5) and made.latency_ms >= 0


async def test_bodies_are_cut_and_left_out_unless_kept() -> None:
    start = {"type": "http.response.start", "status": 200, "headers": []}
    cut = record(await _exchange(_log(max_body=4), b"0123456789", [start]), _call())
    assert cut.request_body == "0123"
    off = record(await _exchange(_log(bodies=False), b"0123456789", [start]), _call())
    assert off.request_body is None and off.response_body is None


async def test_a_stream_records_its_end_or_what_cut_it() -> None:
    log = _log(bodies=False)
    sse = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}

    class Plain:
        def chunk(self, frame: StreamChunk) -> bytes:
            return b"chunk"

        def end(self, frame: StreamEnd) -> bytes:
            return b"end"

        def error(self, error: Any) -> bytes:
            return b"error"

    ended, cut, left = _call(), _call(), _call()
    noting(lambda first: Plain(), ended)(StreamChunk(seq=0)).end(StreamEnd(
        seq=1, id="x", model="m", created=0, finish_reason="stop", usage=Usage(completion_tokens=9), provider="p",
        target_model="m", cost_usd=0.25))
    noting(lambda first: Plain(), cut)(StreamChunk(seq=0)).error(ProviderError("cut", code="stream_cut"))
    uncounted = _call()  # a provider that reports no usage
    noting(lambda first: Plain(), uncounted)(StreamChunk(seq=0)).end(StreamEnd(
        seq=1, id="x", model="m", created=0, finish_reason="stop", usage=None, provider="p", target_model="m"))
    records = [record(await _exchange(log, b"", [sse]), state) for state in (ended, cut, left, uncounted)]
    assert [(r.stream, r.status, r.completion_tokens, r.cost_usd, r.error) for r in records] == [
        (True, 200, 9, 0.25, None), (True, 200, 0, 0.0, "stream_cut"), (True, 200, 0, 0.0, "stream_incomplete"),
        (True, 200, 0, 0.0, None)]


async def test_a_client_gone_before_its_answer_is_499() -> None:
    assert record(await _exchange(_log(), b"", []), _call()).status == 499


def test_times_for_the_cli() -> None:
    now = time.time()
    assert when("15m") == pytest.approx(now - 900, abs=2)
    assert when("2d") == pytest.approx(now - 2 * 86400, abs=2)
    assert when("2026-11-29T15:00") == 1795964400.0  # UTC unless it says otherwise
    assert when("2026-11-29T15:00+01:00") == 1795960800.0
    assert when("1700000000") == 1_700_000_000.0
    with pytest.raises(argparse.ArgumentTypeError, match="expected 15m"):
        when("last tuesday")


def test_the_cli_table() -> None:
    text = table([rec(1, error="model_not_found", status=404)])
    header, row = text.splitlines()
    assert header.split()[:3] == ["time", "(UTC)", "status"]
    assert row.startswith("2023-11-14 22:13:21  404") and row.split()[-2:] == ["rid-1", "model_not_found"]
    assert "10/5/0" in row and "0.000125" in row


def test_configuration_switches_and_secret() -> None:
    config = build({}, SETTINGS, {"ENABLE_REQUEST_LOG": "true", "REQUEST_LOG_BODIES": "1",
                                  "REQUEST_LOG_DATABASE_URL": "postgresql://log:pa55word-x@db/requests"})
    settings = config.request_log
    assert (settings.enabled, settings.bodies, settings.database_url) == (
        True, True, "postgresql://log:pa55word-x@db/requests")
    assert "pa55word-x" in secrets.configured(config)  # never in a log line
    assert not build({}, SETTINGS, {}).request_log.enabled  # opt-in


def test_admin_query_parameters() -> None:
    query = log_query({"key": "alpha", "status": "429", "since": "1700000000", "limit": "5", "bodies": "true"})
    assert query == LogQuery(key="alpha", status=429, since=1_700_000_000.0, limit=5, bodies=True)
    for params, named in (({"status": "many"}, "status"), ({"since": "soon"}, "since"), ({"colour": "red"}, "colour"),
                          ({"limit": "5000"}, "limit")):
        with pytest.raises(InvalidRequest) as caught:
            log_query(params)
        assert caught.value.http_status == 400 and named in caught.value.message


@pytest.mark.parametrize(("fields", "named"), [
    ({"database_url": "mysql://db/requests"}, "request_log.database_url"),
    ({"batch_size": 0}, "request_log.batch_size"),
    ({"retention_days": -1}, "request_log.retention_days"),
])
def test_a_bad_request_log_setting_is_named(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        build({"request_log": fields}, SETTINGS)

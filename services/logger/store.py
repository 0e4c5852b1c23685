"""Where the logger keeps request records: SQLite (the embedded default: Python's own `sqlite3`, one
thread owning the connection) or PostgreSQL (psycopg 3, async). Both are one table, `request_log`, with
the same columns and the same SQL but for placeholders and the time column's type, so one `Dialect`
describes the difference.

Writes are idempotent (a record id is written once: `ON CONFLICT DO NOTHING`), so a batch delivered
twice (its acks lost) is harmless. Driver exceptions become `StoreError` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shared.request_log import LogPage, LogQuery, RequestRecord

TABLE = "request_log"
# Column -> the record's field (two are renamed: `key` and `time` read badly as SQL).
COLUMNS = (
    ("id", "id"), ("request_id", "request_id"), ("started_at", "time"), ("path", "path"), ("status", "status"),
    ("latency_ms", "latency_ms"), ("key_name", "key"), ("tenant", "tenant"), ("model", "model"),
    ("provider", "provider"), ("stream", "stream"), ("cache", "cache"), ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"), ("cached_tokens", "cached_tokens"), ("cost_usd", "cost_usd"),
    ("error", "error"), ("request_body", "request_body"), ("response_body", "response_body"),
)
_BODIES = ("request_body", "response_body")
_FILTERS = (("key", "key_name"), ("tenant", "tenant"), ("model", "model"), ("status", "status"))


class StoreError(Exception):
    """The database cannot be reached or refused the statement; the message says which and why."""


@dataclass(frozen=True)
class Dialect:
    param: str  # the driver's placeholder
    time_type: str
    bool_type: str
    text_type: str
    real_type: str
    time_in: str  # how a placeholder for seconds since the epoch becomes a time value ({} = placeholder)
    time_out: str  # how the time column reads as seconds since the epoch

    def ddl(self) -> list[str]:
        types = {"started_at": f"{self.time_type} NOT NULL", "status": "INTEGER NOT NULL",
                 "latency_ms": f"{self.real_type} NOT NULL", "stream": f"{self.bool_type} NOT NULL",
                 "cost_usd": f"{self.real_type} NOT NULL", "prompt_tokens": "BIGINT NOT NULL",
                 "completion_tokens": "BIGINT NOT NULL", "cached_tokens": "BIGINT NOT NULL",
                 "id": f"{self.text_type} PRIMARY KEY", "request_id": f"{self.text_type} NOT NULL",
                 "path": f"{self.text_type} NOT NULL", "cache": f"{self.text_type} NOT NULL"}
        columns = ", ".join(f"{name} {types.get(name, self.text_type)}" for name, _ in COLUMNS)
        return [
            f"CREATE TABLE IF NOT EXISTS {TABLE} ({columns})",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_started_at ON {TABLE} (started_at)",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_key_name ON {TABLE} (key_name, started_at)",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_model ON {TABLE} (model, started_at)",
        ]

    def insert(self) -> str:
        names = ", ".join(name for name, _ in COLUMNS)
        values = ", ".join(self.time_in.format(self.param) if name == "started_at" else self.param
                           for name, _ in COLUMNS)
        return f"INSERT INTO {TABLE} ({names}) VALUES ({values}) ON CONFLICT (id) DO NOTHING"

    def select(self, query: LogQuery) -> tuple[str, list[Any]]:
        """Newest first; one row more than the page, to know whether there are more."""
        where, params = [], []
        for field, column in _FILTERS:
            if (value := getattr(query, field)) is not None:
                where.append(f"{column} = {self.param}")
                params.append(value)
        if query.since is not None:
            where.append(f"started_at >= {self.time_in.format(self.param)}")
            params.append(query.since)
        if query.until is not None:
            where.append(f"started_at < {self.time_in.format(self.param)}")
            params.append(query.until)
        columns = ", ".join(
            self.time_out if name == "started_at" else name if query.bodies or name not in _BODIES else "NULL"
            for name, _ in COLUMNS)
        sql = f"SELECT {columns} FROM {TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY started_at DESC, id DESC LIMIT {self.param} OFFSET {self.param}"
        return sql, [*params, query.limit + 1, query.offset]

    def purge(self) -> str:
        return f"DELETE FROM {TABLE} WHERE started_at < {self.time_in.format(self.param)}"


SQLITE = Dialect(param="?", time_type="REAL", bool_type="INTEGER", text_type="TEXT", real_type="REAL",
                 time_in="{}", time_out="started_at")
POSTGRES = Dialect(param="%s", time_type="TIMESTAMPTZ", bool_type="BOOLEAN", text_type="TEXT",
                   real_type="DOUBLE PRECISION", time_in="to_timestamp({})", time_out="extract(epoch from started_at)")


def row(record: RequestRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, field) for _, field in COLUMNS)


def page(rows: Sequence[Sequence[Any]], query: LogQuery) -> LogPage:
    records = [RequestRecord(**{field: _value(field, value) for (_, field), value in zip(COLUMNS, r, strict=True)})
               for r in rows[: query.limit]]
    return LogPage(records=records, more=len(rows) > query.limit)


def _value(field: str, value: Any) -> Any:
    if field == "stream":
        return bool(value)
    if field == "time":
        return float(value)  # PostgreSQL's extract() is a Decimal
    return value


class Store(Protocol):
    async def open(self) -> None: ...
    async def write(self, records: Sequence[RequestRecord]) -> None: ...
    async def query(self, query: LogQuery) -> LogPage: ...
    async def purge(self, before: float) -> int: ...
    async def close(self) -> None: ...


class SqliteStore:
    """One file; one thread owns the connection (sqlite3 blocks), so the event loop never waits on disk.
    Several logger processes on one machine may share the file (WAL; writers take turns)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self.db: sqlite3.Connection | None = None

    async def _run(self, work: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, work, *args)
        except (sqlite3.Error, OSError) as exc:  # OSError: the file's directory cannot be made
            raise StoreError(f"SQLite ({self.path}): {exc}") from exc

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at each checkpoint, no fsync per batch
        for statement in SQLITE.ddl():
            db.execute(statement)
        self.db = db

    def _conn(self) -> sqlite3.Connection:
        if self.db is None:
            self._open()
        assert self.db is not None
        return self.db

    async def write(self, records: Sequence[RequestRecord]) -> None:
        await self._run(self._write, [row(r) for r in records])

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(SQLITE.insert(), rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def query(self, query: LogQuery) -> LogPage:
        sql, params = SQLITE.select(query)
        rows = await self._run(lambda: self._conn().execute(sql, params).fetchall())
        return page(rows, query)

    async def purge(self, before: float) -> int:
        return int(await self._run(lambda: self._conn().execute(SQLITE.purge(), (before,)).rowcount))

    async def close(self) -> None:
        if self.db is not None:
            with contextlib.suppress(StoreError):
                await self._run(self.db.close)
            self.db = None
        self.pool.shutdown(wait=True)


class PostgresStore:
    """A PostgreSQL database through psycopg 3: one connection for writes, one for queries (a slow query
    never holds up a batch); a broken connection is opened again on next use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.writer: Any = None
        self.reader: Any = None
        self.created = False  # the table is known to exist
        # The batch writer and the retention sweep both use the writing connection: once it broke, the two
        # would each open one, and the first, overwritten, would be left open.
        self._opening = asyncio.Lock()

    async def _connect(self) -> Any:
        import psycopg  # only a logger that writes to PostgreSQL needs the driver

        try:
            return await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: cannot connect ({_reason(exc)})") from exc

    async def open(self) -> None:
        await self._writer()

    async def _writer(self) -> Any:
        """The writing connection, opened (and the table made) when there is none."""
        import psycopg

        async with self._opening:
            if self.writer is None or self.writer.closed:
                self.writer = await self._connect()
                self.created = False
            if not self.created:
                try:
                    async with self.writer.transaction():
                        for statement in POSTGRES.ddl():
                            await self.writer.execute(statement)
                except psycopg.Error as exc:
                    await self._drop("writer")
                    raise StoreError(f"PostgreSQL: cannot create the table ({_reason(exc)})") from exc
                self.created = True
            return self.writer

    async def write(self, records: Sequence[RequestRecord]) -> None:
        import psycopg

        writer = await self._writer()
        try:
            async with writer.transaction(), writer.cursor() as cursor:
                await cursor.executemany(POSTGRES.insert(), [row(r) for r in records])
        except psycopg.Error as exc:
            await self._drop("writer")
            raise StoreError(f"PostgreSQL: the batch was not written ({_reason(exc)})") from exc

    async def query(self, query: LogQuery) -> LogPage:
        import psycopg

        if self.reader is None or self.reader.closed:
            self.reader = await self._connect()
        sql, params = POSTGRES.select(query)
        try:
            cursor = await self.reader.execute(sql, params)
            rows = await cursor.fetchall()
        except psycopg.Error as exc:
            await self._drop("reader")
            raise StoreError(f"PostgreSQL: the query failed ({_reason(exc)})") from exc
        return page(rows, query)

    async def purge(self, before: float) -> int:
        import psycopg

        writer = await self._writer()
        try:
            cursor = await writer.execute(POSTGRES.purge(), (before,))
        except psycopg.Error as exc:
            await self._drop("writer")
            raise StoreError(f"PostgreSQL: old records were not deleted ({_reason(exc)})") from exc
        return int(cursor.rowcount)

    async def _drop(self, which: str) -> None:
        connection = getattr(self, which)
        setattr(self, which, None)
        if connection is not None:
            with contextlib.suppress(Exception):  # it is broken already; closing is a courtesy
                await connection.close()

    async def close(self) -> None:
        await self._drop("writer")
        await self._drop("reader")


def _reason(exc: Exception) -> str:
    """The driver's message, first line only (psycopg adds context lines that may quote the statement)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def open_store(database_url: str | None, sqlite_path: str) -> Store:
    if database_url is None:
        return SqliteStore(sqlite_path)
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(database_url)
    if database_url.startswith("sqlite:///"):
        return SqliteStore(database_url.removeprefix("sqlite:///"))
    raise StoreError("request_log.database_url: expected postgresql://... or sqlite:///path")

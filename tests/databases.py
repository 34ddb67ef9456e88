"""Which database the tests run on: SQLite in each test's temporary folder by default, or
the PostgreSQL that TRIAGE_TEST_DATABASE_URL names, e.g.

    TRIAGE_TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test

On PostgreSQL the run gets a schema of its own, migrated once at the start; every test
starts from it emptied (TRUNCATE), which is as clean as a new database and far faster than
migrating one per test. If the variable is set and PostgreSQL cannot be reached, the run
fails at once: it never quietly falls back to SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bot.storage.database import ensure_schema, make_engine
from bot.storage.models import Base

VARIABLE = "TRIAGE_TEST_DATABASE_URL"


def postgres_url() -> str | None:
    return os.environ.get(VARIABLE) or None


def on_postgres() -> bool:
    return postgres_url() is not None


def _dsn(url: str) -> str:
    """asyncpg's own form of an SQLAlchemy URL (no driver name, no search_path)."""
    parsed = make_url(url).set(drivername="postgresql").difference_update_query(["search_path"])
    return parsed.render_as_string(hide_password=False)


class PostgresSchema:
    """One schema for this test run, created and migrated at the start, dropped at the end."""

    def __init__(self, url: str) -> None:
        self.name = f"test_{os.getpid()}_{secrets.token_hex(3)}"
        self.base_url = url
        self.url = make_url(url).update_query_dict({"search_path": self.name}).render_as_string(
            hide_password=False)

    def create(self) -> None:
        async def go() -> None:
            try:
                conn = await asyncpg.connect(_dsn(self.base_url), timeout=10)
            except (OSError, asyncpg.PostgresError) as exc:
                raise RuntimeError(
                    f"{VARIABLE} is set but PostgreSQL cannot be reached: {exc}"
                ) from exc
            try:
                await conn.execute(f'CREATE SCHEMA "{self.name}"')
            finally:
                await conn.close()
            engine = make_engine(self.url)
            try:
                await ensure_schema(engine)
            finally:
                await engine.dispose()

        asyncio.run(go())

    def drop(self) -> None:
        async def go() -> None:
            conn = await asyncpg.connect(_dsn(self.base_url), timeout=10)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(go())

    async def empty(self) -> None:
        tables = ", ".join(f'"{self.name}"."{t.name}"' for t in Base.metadata.sorted_tables)
        conn = await asyncpg.connect(_dsn(self.base_url), timeout=10)
        try:
            await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()


def sqlite_url(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{folder / 'triage.db'}"


@contextlib.asynccontextmanager
async def fresh_schema(base: str) -> AsyncIterator[str]:
    """An empty PostgreSQL schema of its own, for a test that needs nothing in it."""
    name = f"empty_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(_dsn(base), timeout=10)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield make_url(base).update_query_dict({"search_path": name}).render_as_string(
            hide_password=False)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


async def connect(url: str) -> asyncpg.Connection:
    """A plain asyncpg connection to the PostgreSQL database (and schema) of `url`, beside the
    service's own pool: for a test that locks, blocks or reads what the service stored."""
    schema = make_url(url).query.get("search_path")
    settings = {"search_path": str(schema)} if schema else None
    return await asyncpg.connect(_dsn(url), timeout=10, server_settings=settings)


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    assert database, url
    return Path(database)


class Raw:
    """Plain SQL on the test's database beside the service: the stdlib sqlite3 on the file,
    read only (a committed write is visible to it in WAL mode, and a read costs a
    millisecond, a third of a round trip through aiosqlite), or asyncpg on PostgreSQL."""

    def __init__(self, sqlite: sqlite3.Connection | None, pg: asyncpg.Connection | None):
        self._sqlite, self._pg = sqlite, pg

    @classmethod
    async def open(cls, url: str) -> Raw:
        if on_postgres():
            return cls(None, await connect(url))
        return cls(sqlite3.connect(f"file:{sqlite_path(url)}?mode=ro", uri=True), None)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            return [tuple(row) for row in await self._pg.fetch(sql)]
        assert self._sqlite is not None
        return self._sqlite.execute(sql).fetchall()

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()


async def at_rest(url: str) -> bytes:
    """Everything the database holds, as a thief of its storage would read it: SQLite's file
    and write-ahead log byte for byte (free pages too), or on PostgreSQL every row of every
    table in the schema, as text."""
    if not on_postgres():
        path = sqlite_path(url)
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    conn = await connect(url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")
        assert tables, "no tables in the schema"
        found = []
        for (table,) in tables:
            query = f'SELECT t::text FROM "{table}" t'  # noqa: S608 (names from the catalog)
            found += [row[0] for row in await conn.fetch(query)]
        return "\n".join(found).encode()
    finally:
        await conn.close()

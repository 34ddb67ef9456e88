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
from collections.abc import AsyncIterator
from pathlib import Path

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

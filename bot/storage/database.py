"""Engine set-up and migrations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    create_async_engine,
)
from sqlalchemy.orm import Session

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


class DatabaseNotMigrated(RuntimeError):
    """The database is older than this code; `python -m bot db upgrade` fixes it."""


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


POOL_SIZE = 10  # connections per process on PostgreSQL for the readers; the writer has its own
POOL_OVERFLOW = 10
MIGRATION_LOCK = 0x7472696167  # pg_advisory_lock key: "triag"


def make_engine(url: str, busy_timeout_ms: int = 5000) -> AsyncEngine:
    if not is_sqlite(url):
        return _postgres_engine(url, True, POOL_SIZE, POOL_OVERFLOW)
    engine = create_async_engine(url)
    _sqlite_setup(engine.sync_engine, busy_timeout_ms)
    return engine


WRITER_APPLICATION_NAME = "triage-writer"  # how pg_stat_activity shows its connections


def make_writer_engine(url: str, lock_timeout_ms: int, connections: int) -> AsyncEngine:
    """The writer's own engine (bot.storage.writer). On PostgreSQL its transactions wait at
    most lock_timeout_ms for a row lock, and its connections are not pinged before use:
    the ping cost three round trips per transaction, and the writer runs a transaction
    again when its connection turns out to be gone. `connections`: as many as it has
    transactions in flight. On SQLite it is make_engine's."""
    if is_sqlite(url):
        return make_engine(url)
    return _postgres_engine(url, False, connections, 0, lock_timeout=str(lock_timeout_ms),
                            application_name=WRITER_APPLICATION_NAME)


def _postgres_engine(url: str, pre_ping: bool, pool_size: int, overflow: int,
                     **server_settings: str) -> AsyncEngine:
    parsed = make_url(url)
    # `?search_path=name` puts the service's tables in a schema of their own (a shared
    # database, or one schema per test run); asyncpg takes it as a server setting.
    search_path = parsed.query.get("search_path")
    if search_path:
        parsed = parsed.difference_update_query(["search_path"])
        server_settings["search_path"] = str(search_path)
    return create_async_engine(parsed, pool_pre_ping=pre_ping, pool_size=pool_size,
                               max_overflow=overflow,
                               connect_args={"server_settings": server_settings})


def make_sync_engine(
    url: str | URL, busy_timeout_ms: int = 5000, wal_autocheckpoint: int | None = None
) -> Engine:
    """The same SQLite file through the sync pysqlite driver, for the writer.

    The writer's event-loop connection is made with busy_timeout_ms=0, so that a locked
    database fails at once instead of blocking the loop, and wal_autocheckpoint=0, so that
    it never checkpoints (an fsync) on the loop either: the writer thread does both."""
    sync_url = make_url(url).set(drivername="sqlite")
    engine = create_engine(
        sync_url,
        connect_args={"check_same_thread": False},
        execution_options={"sqlite_immediate": True},  # the writer takes the lock at BEGIN
    )
    _sqlite_setup(engine, busy_timeout_ms, wal_autocheckpoint)
    return engine


def _sqlite_setup(
    engine: Engine, busy_timeout_ms: int, wal_autocheckpoint: int | None = None
) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below), which pysqlite otherwise gets wrong,
        # so savepoints work and the writer can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The busy timeout first: setting WAL may wait for a lock too.
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if wal_autocheckpoint is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # The writer asks for IMMEDIATE: taking the write lock at BEGIN means a busy database
        # waits (busy_timeout) instead of failing half-way through a batch.
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")



def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def run_in_transaction(engine: AsyncEngine, unit: Callable[[Session], T]) -> T:
    """Run a synchronous unit of work in one transaction (for the CLI and tests)."""
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        return await session.run_sync(unit)


async def ensure_schema(engine: AsyncEngine) -> None:
    """Create the schema on an empty database; refuse to run against an old one.

    On PostgreSQL several processes may start at once against an empty database: the check
    and the migration run under one advisory lock, so it is migrated once, and the others
    find it done (on SQLite the check runs under the write lock, BEGIN IMMEDIATE)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(sqlite_immediate=True)
        await conn.begin()
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
        revision = await conn.run_sync(_revision)
        if revision is None:
            await conn.run_sync(_upgrade)
        elif revision != _head():
            raise DatabaseNotMigrated(
                f"database is at revision {revision}; "
                "run `python -m bot db upgrade --config FILE`"
            )
        await conn.commit()


async def upgrade(engine: AsyncEngine) -> None:
    """Apply migrations (`db upgrade`), under the same lock as a start-up's."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
        await conn.run_sync(_upgrade)

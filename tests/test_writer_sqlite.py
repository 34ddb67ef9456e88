"""The SQLite writer runs its batches on the event loop, and never lets the loop wait for a
lock: a database locked by another connection sends the batch to the writer thread, which
waits for it. (On PostgreSQL, test_postgres.py shows that a unit waiting on a row lock holds
up no inbound message.)"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from bot.storage.database import ensure_schema, make_engine
from bot.storage.queries import audit
from bot.storage.writer import Writer
from tests.databases import on_postgres, sqlite_url

pytestmark = pytest.mark.skipif(on_postgres(), reason="the SQLite writer")


@pytest.fixture
async def writer(tmp_path: Path):
    engine = make_engine(sqlite_url(tmp_path))
    await ensure_schema(engine)
    writer = Writer(engine)
    writer.start()
    yield writer
    await writer.stop()
    await engine.dispose()


NOW = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection holds the file's write lock (BEGIN EXCLUSIVE)."""
    lite = sqlite3.connect(path, isolation_level=None)
    lite.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        lite.execute("ROLLBACK")
        lite.close()


def thread_of_unit(session: Session) -> int:
    """Writes a row; says which thread it ran on."""
    audit(session, NOW, "test", "test", 1)
    return threading.get_ident()


async def test_a_batch_runs_on_the_event_loop(writer: Writer) -> None:
    assert await writer.run(thread_of_unit) == threading.get_ident()


async def test_a_locked_database_never_holds_up_the_loop(writer: Writer, tmp_path: Path):
    await writer.run(thread_of_unit)  # the connections are open
    with write_locked(tmp_path / "triage.db"):
        unit = asyncio.create_task(writer.run(thread_of_unit))
        # While the unit waits for the lock, the loop keeps turning: ticks of 10 ms each
        # arrive on time, give or take a busy machine.
        started = time.monotonic()
        for _ in range(20):
            before = time.monotonic()
            await asyncio.sleep(0.01)
            assert time.monotonic() - before < 0.25
        assert time.monotonic() - started < 2
        assert not unit.done()
    # The lock is free: the unit commits, on the writer thread, which waited for it.
    ran_on = await asyncio.wait_for(unit, 10)
    assert ran_on != threading.get_ident()
    # And the next batch is back on the loop.
    assert await writer.run(thread_of_unit) == threading.get_ident()
    conn = sqlite3.connect(tmp_path / "triage.db")
    try:
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (3,)
    finally:
        conn.close()


async def test_the_wal_is_checkpointed_off_the_loop_and_stays_small(writer: Writer,
                                                                    tmp_path: Path):
    # About 12 MB written in 1,200 commits: the WAL is checkpointed (by the writer thread)
    # each time it passes 4 MB, and each checkpoint lets it start again from the top, so it
    # never grows far past that. Unchecked, it would hold all 12 MB.
    def big(session: Session) -> None:
        audit(session, NOW, "test", "test", 1, detail="x" * 10_000)

    wal = tmp_path / "triage.db-wal"
    largest = 0
    for _ in range(1200):
        await writer.run(big)
        largest = max(largest, wal.stat().st_size)
    assert largest < 8 * 1024 * 1024

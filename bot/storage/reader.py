"""Reads for the console and the web chat: plain synchronous functions of a Session, SELECT
only.

Writes go through the writer (bot.storage.writer), which batches them; reads do not queue
behind writes. On SQLite in WAL mode a read sees the last commit and never blocks the writer.

On SQLite a read runs on a few threads of its own, on plain pysqlite connections (deferred
BEGIN, so a read never takes the write lock). Through aiosqlite each read was a string of
hand-offs between the event loop and a connection's thread (begin, cursor, execute, fetch,
rollback), about 0.8 ms of CPU on the project machine, most of a web chat message's reads;
here it is one hand-off. On PostgreSQL reads go through the async engine (asyncpg).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from bot.storage.database import is_sqlite, make_sync_engine

T = TypeVar("T")
READ_THREADS = 2  # reads hold the GIL most of the time: more threads would only wait


class Reader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sync: Engine | None = None
        self._threads: ThreadPoolExecutor | None = None
        if is_sqlite(engine.url):
            self._sync = make_sync_engine(engine.url).execution_options(sqlite_immediate=False)
            self._threads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="reader")

    async def run(self, read: Callable[[Session], T]) -> T:
        if self._threads is None:
            async with AsyncSession(self._engine, expire_on_commit=False) as session:
                return await session.run_sync(read)
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._read, read)

    def _read(self, read: Callable[[Session], T]) -> T:
        with Session(self._sync, expire_on_commit=False) as session:
            return read(session)

    def close(self) -> None:
        """After the last read: its threads end and its connections close."""
        if self._threads is not None:
            self._threads.shutdown(wait=True)
        if self._sync is not None:
            self._sync.dispose()

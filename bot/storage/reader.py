"""Reads for the console: plain synchronous functions of a Session, SELECT only.

Writes go through the writer (bot.storage.writer), which batches them; reads do not queue
behind writes. On SQLite in WAL mode a read sees the last commit and never blocks the writer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

T = TypeVar("T")


class Reader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, read: Callable[[Session], T]) -> T:
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            return await session.run_sync(read)

"""Group commit: one task writes, committing whatever units of work are waiting in one
transaction, each unit in its own savepoint.

SQLite has a single writer, so many connections only add lock waits. One writer that batches
keeps the durability promise (a caller's await returns only after its unit is committed)
at about ten times the throughput of a transaction per request (see DESIGN.md).
A unit that raises is rolled back to its savepoint alone; the rest of the batch commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

T = TypeVar("T")
Unit = Callable[[AsyncSession], Awaitable[T]]
log = logging.getLogger(__name__)


class WriterStopped(RuntimeError):
    pass


@dataclass
class _Job:
    unit: Unit[Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = field(default=None)


class Writer:
    def __init__(
        self,
        engine: AsyncEngine,
        on_commit: Callable[[], None] = lambda: None,
        max_batch: int = 128,
    ) -> None:
        self._sessions = async_sessionmaker(
            engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )
        self.on_commit = on_commit  # wired to the outbox worker's wake-up
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="db-writer")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(WriterStopped("database writer stopped"))

    async def run(self, unit: Unit[T], timeout: float | None = None) -> T:
        """Run `unit` in the next batch; return its result once committed."""
        if not self.alive:
            raise WriterStopped("database writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        # A caller that timed out no longer reads its future; read it here so a late
        # failure is not reported as "never retrieved".
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.put_nowait(_Job(unit, future))
        # shield: a caller that gives up must not cancel the batch for everyone else.
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            # Withdraw the unit if its batch has not reached it yet: the caller has moved
            # on (to the spool) and must not see its work done twice.
            future.cancel()
            raise

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[_Job]) -> None:
        try:
            async with self._sessions() as session, session.begin():
                # Take the write lock before running any unit, so a unit whose caller gave up
                # while the database was busy is skipped rather than run late.
                await session.connection()
                for job in batch:
                    if job.future.cancelled():
                        continue
                    try:
                        async with session.begin_nested():
                            job.result = await job.unit(session)
                    except Exception as exc:  # one unit's failure is that unit's alone
                        job.error = exc
        except asyncio.CancelledError:
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(WriterStopped("database writer stopped"))
            raise
        except Exception as exc:
            log.warning("db_batch_failed", extra={"error": type(exc).__name__, "size": len(batch)})
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job in batch:
            if job.future.done():
                continue
            if job.error is not None:
                job.future.set_exception(job.error)
            else:
                job.future.set_result(job.result)
        self.on_commit()

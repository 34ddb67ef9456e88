"""Group commit: one writer commits whatever units of work are waiting in one transaction,
each unit in its own savepoint.

SQLite has a single writer, so many connections only add lock waits. One writer that batches
keeps the durability promise (a caller's await returns only after its unit is committed)
at about ten times the throughput of a transaction per request (see DESIGN.md).
A unit that raises is rolled back to its savepoint alone; the rest of the batch commits.

A caller that gives up (its timeout ran out, and it spools the message instead) withdraws its
unit. A withdrawn unit never commits: the batch checks for withdrawals just before COMMIT,
under a lock, and seals every other unit; a unit withdrawn after it ran makes the batch roll
back and run again without it. Once sealed, a unit can no longer be withdrawn, and its caller
waits for the commit's outcome instead. So "spooled" and "committed" never both happen.

Units are plain synchronous functions of a Session. On SQLite a batch runs with the sync
pysqlite driver: a statement then costs tens of microseconds, where the async driver pays a
thread hand-off per statement (measured: 35 us against 250 us). It runs on the event loop
itself, which saves the hand-off to a thread and back for every batch, and the two threads
taking turns at the GIL (bench/inbound.py: a third of the CPU per message). The loop never
waits for a lock: its connection has no busy timeout, so a database locked by another
connection (another process, a command-line tool) fails at once, and that batch runs again
on the writer thread, which waits for the lock as long as busy_timeout allows. The loop's
connection never checkpoints the WAL either (a checkpoint fsyncs): the writer thread does,
once the WAL is as large as SQLite's own automatic checkpoint would let it grow, and the
next batch waits for it there, as it waited for SQLite's.

On PostgreSQL the same units run through AsyncSession.run_sync on the async driver, and
batches are made the same way, several in flight at once: there each statement is a round
trip to the server, and a transaction per message (BEGIN, the pool's check, COMMIT) cost
as many round trips again as the message's own statements. A batch holds a row lock for a
short while only (BATCH_LOCK_TIMEOUT_MS): a unit that would wait longer, for another
process's transaction or a command-line tool's, fails the batch, and every unit in it then
runs in a transaction of its own that waits as long as it takes. So one unit waiting on a
row lock holds up its batch mates for that long at most, and nobody else at all. The
writer's engine is its own (make_writer_engine), and stop() disposes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from bot.storage import after_commit
from bot.storage.database import is_sqlite, make_sync_engine

T = TypeVar("T")
Unit = Callable[[Session], T]
log = logging.getLogger(__name__)
TRANSACTIONS_IN_FLIGHT = 8  # per process, on PostgreSQL
# How long a batch waits for a row lock before its units go on one by one: about as long as
# a busy batch takes to commit, far less than a caller's write timeout.
BATCH_LOCK_TIMEOUT_MS = 100
NO_LOCK_TIMEOUT = text("SET LOCAL lock_timeout = 0")
TRANSACTION_TRIES = 3
# serialization_failure, deadlock_detected, and unique_violation: two processes creating the
# same contact at once; the one that lost runs again and finds it.
RETRYABLE_SQLSTATES = {"40001", "40P01", "23505"}
LOCKED_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}  # primary result codes
# WAL size at which the writer thread checkpoints: SQLite's own default, 1000 pages of 4 KiB.
CHECKPOINT_BYTES = 1000 * 4096


class WriterStopped(RuntimeError):
    pass


@dataclass
class _Job:
    unit: Unit[Any]
    future: asyncio.Future[Any]
    notify: bool
    notes: after_commit.Notes = field(default_factory=after_commit.Notes)  # made after commit
    withdrawn: bool = False  # the caller gave up before the batch was sealed
    sealed: bool = False  # the batch is committing with this unit in it
    ran: bool = False  # the unit ran in the current attempt at the batch
    result: Any = None
    error: BaseException | None = field(default=None)


class _Seal:
    """Decides, under one lock, between a caller withdrawing its unit and a batch committing
    it. The caller runs on the event loop, the batch on the writer thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def withdraw(self, job: _Job) -> bool:
        with self._lock:
            if not job.sealed:
                job.withdrawn = True
            return job.withdrawn

    def seal(self, batch: list[_Job]) -> bool:
        """Seal the batch for commit; False if a unit that ran was withdrawn meanwhile."""
        with self._lock:
            if any(job.withdrawn and job.ran for job in batch):
                return False
            for job in batch:
                job.sealed = not job.withdrawn
            return True


class Writer:
    def __init__(
        self,
        engine: AsyncEngine,
        on_commit: Callable[[], None] = lambda: None,
        max_batch: int = 128,
        concurrency: int = TRANSACTIONS_IN_FLIGHT,
    ) -> None:
        self._engine = engine
        sqlite = is_sqlite(engine.url)
        # SQLite: the writer thread's engine waits for a lock; the loop's never does.
        self._sync_engine: Engine | None = make_sync_engine(engine.url) if sqlite else None
        self._loop_engine: Engine | None = (
            make_sync_engine(engine.url, busy_timeout_ms=0, wal_autocheckpoint=0)
            if sqlite else None
        )
        self._wal = f"{engine.url.database}-wal" if sqlite else ""
        self._wal_largest = CHECKPOINT_BYTES - 1  # the WAL file's size at the last checkpoint
        self._thread: ThreadPoolExecutor | None = None
        self.on_commit = on_commit  # wired to the commit fan-out (bot.notify)
        # Takes the metric observations of units that committed (bot.metrics); None: off.
        self.observer: after_commit.Observer | None = None
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._seal = _Seal()
        # PostgreSQL: several batches at once, and units on their own after a failed batch.
        self._slots = asyncio.Semaphore(concurrency)
        self._transactions: set[asyncio.Task[None]] = set()
        self._running = False

    def start(self) -> None:
        self._running = True
        if self._sync_engine is not None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
            self._task = asyncio.create_task(self._loop(), name="db-writer")
        else:
            self._task = asyncio.create_task(self._batches(), name="db-writer")

    @property
    def alive(self) -> bool:
        return self._running and self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            # SQLite: a batch under way still commits (see _loop). PostgreSQL: no new batch
            # starts, and those under way finish below.
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._transactions:
            # Transactions under way finish (a failed batch's units then run on their own):
            # their callers must learn the outcome.
            await asyncio.gather(*self._transactions, return_exceptions=True)
        if self._thread is not None:
            self._thread.shutdown(wait=True)  # a batch in flight finishes its commit
            self._thread = None
        for sync_engine in (self._loop_engine, self._sync_engine):
            if sync_engine is not None:
                sync_engine.dispose()
        await self._engine.dispose()
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(WriterStopped("database writer stopped"))

    async def run(self, unit: Unit[T], timeout: float | None = None, notify: bool = True) -> T:  # noqa: ASYNC109
        """Run `unit` in the next batch; return its result once committed.

        The commit wakes the outbox worker if the unit queued something to send
        (after_commit.queued_to_send); notify=False keeps it from doing so even then: the
        worker's own bookkeeping must not wake it again, or it would poll in a tight loop.
        """
        if not self.alive:
            raise WriterStopped("database writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(unit, future, notify)
        self._queue.put_nowait(job)
        # One timer, not asyncio.timeout and shield: this runs for every message. A caller
        # that gives up must not cancel the batch for everyone else, only withdraw its unit.
        timer = loop.call_later(timeout, self._give_up, job) if timeout is not None else None
        future.add_done_callback(lambda f: _settled(f, timer))
        return await future

    def _give_up(self, job: _Job) -> None:
        """The caller's timeout: it moves on (to the spool) and must not see its work done
        as well. Too late to withdraw once the unit's batch is committing: then its outcome
        is the answer, and the caller waits for it."""
        if self._seal.withdraw(job) and not job.future.done():
            job.future.set_exception(TimeoutError())

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            commit = asyncio.ensure_future(self._commit(batch))
            try:
                # A failed batch is read from `commit` in _settle.
                await asyncio.wait([commit])
            except asyncio.CancelledError:
                # Stopping: a batch under way still commits or fails, and its callers must
                # learn which, or one of them could spool what was also committed.
                try:
                    with contextlib.suppress(Exception):
                        await commit
                finally:
                    self._settle(batch, _failure(commit))
                raise
            self._settle(batch, _failure(commit))

    def _settle(self, batch: list[_Job], failure: BaseException | None) -> None:
        if failure is not None:
            log.warning("db_batch_failed",
                        extra={"error": type(failure).__name__, "size": len(batch)})
            _fail(batch, failure)
            return
        for job in batch:
            if job.future.done() or not job.sealed:
                continue
            if job.error is not None:
                job.future.set_exception(job.error)
            else:
                after_commit.write(job.notes, self.observer)
                job.future.set_result(job.result)
        if any(job.notify and job.notes.queued and job.sealed and job.error is None
               for job in batch):
            self.on_commit()

    async def _commit(self, batch: list[_Job]) -> None:
        assert self._sync_engine is not None and self._loop_engine is not None
        assert self._thread is not None
        checkpoint = self._checkpoint_due()
        if not checkpoint:
            try:
                _commit_sync(self._loop_engine, batch, self._seal, on_loop=True)
                return
            except Exception as exc:
                if not _locked(exc):
                    raise
        # Another connection has the write lock, or the WAL wants a checkpoint (an fsync):
        # the thread waits or works; the loop goes on serving, and batches wait their turn.
        await asyncio.get_running_loop().run_in_executor(
            self._thread, _commit_on_thread, self._sync_engine, batch, self._seal, checkpoint
        )

    def _checkpoint_due(self) -> bool:
        """As SQLite's automatic checkpoint would: once the WAL holds CHECKPOINT_BYTES. With
        no batch committing meanwhile, a checkpoint copies all of the WAL back, and the
        next commit writes the WAL from its start again: the file grows past its largest
        size only when that many bytes were written since (or readers kept the checkpoint
        from finishing, and then it runs again after every batch, as SQLite's would)."""
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return False  # no WAL file (yet)
        if size <= self._wal_largest:
            return False
        self._wal_largest = size
        return True

    async def _batches(self) -> None:
        """PostgreSQL: take what waits as one batch whenever a transaction slot is free, so
        the busier the service, the larger its batches and the fewer its round trips."""
        while True:
            job = await self._queue.get()
            try:
                await self._slots.acquire()
            except asyncio.CancelledError:
                _fail([job], WriterStopped("database writer stopped"))
                raise
            batch = [job]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._spawn(self._batch_transaction(batch))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._transactions.add(task)
        task.add_done_callback(self._transactions.discard)

    async def _batch_transaction(self, batch: list[_Job]) -> None:
        """One batch in one transaction (its slot already taken). If anything fails before
        the commit (a unit raised, a row lock was held too long, the connection had gone,
        a unit that ran was withdrawn), every unit runs again in a transaction of its own,
        where its failure is its alone and a row lock is waited for. A failed COMMIT fails
        the batch: whether it committed cannot be known, and running it again could do it
        twice."""
        committing = False
        try:
            async with AsyncSession(self._engine, expire_on_commit=False) as session, \
                    session.begin():
                await session.run_sync(_run_units, batch, False)
                if not self._seal.seal(batch):
                    raise _Withdrawn
                committing = True
        except Exception as exc:
            if committing:
                self._settle(batch, exc)
                return
            log.info("db_batch_split", extra={"error": type(exc).__name__, "size": len(batch)})
        else:
            self._settle(batch, None)
            return
        finally:
            self._slots.release()
        for job in batch:
            if not job.withdrawn:
                self._spawn(self._transaction(job))

    async def _transaction(self, job: _Job) -> None:
        """PostgreSQL: one unit, one transaction, several in flight, so a unit waiting on a
        row lock holds up nobody else. A deadlock or serialization failure rolls the unit
        back, and it runs again from the start: units do nothing outside their Session."""
        async with self._slots:
            for attempt in range(1, TRANSACTION_TRIES + 1):
                if job.withdrawn:
                    return
                committing = False
                try:
                    async with AsyncSession(self._engine, expire_on_commit=False) as session, \
                            session.begin():
                        # On its own, a unit waits for a row lock as long as it takes.
                        await session.execute(NO_LOCK_TIMEOUT)
                        job.result, job.error, job.ran = None, None, True
                        job.notes = after_commit.collect(session)
                        try:
                            job.result = await session.run_sync(job.unit)
                        except Exception as exc:
                            job.error = exc
                            raise _UnitFailed from exc
                        if not self._seal.seal([job]):
                            raise _Withdrawn
                        committing = True
                except _Withdrawn:
                    return
                except _UnitFailed:
                    if attempt < TRANSACTION_TRIES and _retryable(job.error):
                        continue
                except Exception as exc:  # BEGIN or COMMIT failed
                    if attempt < TRANSACTION_TRIES and _retryable(exc, committing):
                        continue
                    job.error = exc
                break
        if job.future.done():
            return
        if job.error is not None:
            job.future.set_exception(job.error)
            return
        after_commit.write(job.notes, self.observer)
        job.future.set_result(job.result)
        if job.notify and job.notes.queued:
            self.on_commit()


class _UnitFailed(Exception):
    """A unit raised in a batch run without savepoints: run the batch again with them."""


class _Withdrawn(Exception):
    """A unit that ran was withdrawn before the batch was sealed: run it again without."""


def _commit_sync(engine: Engine, batch: list[_Job], seal: _Seal, on_loop: bool = False) -> None:
    """Run and commit a batch. on_loop: a locked database is raised at once, from BEGIN or
    from inside a unit, as the whole batch's failure, so that the batch runs again on the
    writer thread; there, a unit's error is the unit's alone.

    Almost every batch succeeds whole, so it first runs without a savepoint per unit
    (they cost about as much as a unit's own statements). If any unit raises, the batch
    is rolled back and run again with savepoints, so that unit fails alone."""
    isolate = False
    while True:
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                # Take the write lock before running any unit (BEGIN IMMEDIATE), so a busy
                # database makes the whole batch wait rather than fail half-way.
                session.connection()
                _run_units(session, batch, isolate, on_loop)
                if not seal.seal(batch):
                    raise _Withdrawn
            return
        except _UnitFailed:
            isolate = True
        except _Withdrawn:
            continue


def _run_units(
    session: Session, batch: list[_Job], isolate: bool = True, on_loop: bool = False
) -> None:
    for job in batch:
        job.result, job.error, job.ran = None, None, False
        if job.withdrawn:
            continue
        job.ran = True
        job.notes = after_commit.collect(session)
        if not isolate:
            try:
                job.result = job.unit(session)
            except Exception as exc:
                if on_loop and _locked(exc):
                    raise
                raise _UnitFailed from exc
            continue
        try:
            with session.begin_nested():
                job.result = job.unit(session)
        except Exception as exc:  # one unit's failure is that unit's alone
            if on_loop and _locked(exc):
                raise
            job.error = exc


def _locked(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds a lock we need."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(orig, sqlite3.OperationalError) and code is not None \
        and code & 0xFF in LOCKED_CODES


def _commit_on_thread(engine: Engine, batch: list[_Job], seal: _Seal, checkpoint: bool) -> None:
    if checkpoint:
        _checkpoint(engine)
    _commit_sync(engine, batch, seal)


def _checkpoint(engine: Engine) -> None:
    # PASSIVE: copies what it can without waiting for any reader; no batch is writing.
    # On the raw connection: a checkpoint cannot run inside the transaction that
    # SQLAlchemy would begin. A failed one loses nothing (the WAL holds every commit).
    try:
        conn = engine.raw_connection()
        try:
            conn.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
        finally:
            conn.close()
    except Exception as exc:
        log.warning("wal_checkpoint_failed", extra={"error": type(exc).__name__})


def _retryable(exc: BaseException | None, committing: bool = False) -> bool:
    """PostgreSQL's "try the transaction again": a serialization failure, a deadlock, or a
    connection found gone (the pool then opens a new one), unless it went during COMMIT:
    then the transaction may have committed, and running it again could do it twice."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return not committing
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES or \
        getattr(orig, "pgcode", None) in RETRYABLE_SQLSTATES


def _failure(commit: asyncio.Future[None]) -> BaseException | None:
    return commit.exception() if commit.done() else WriterStopped("writer stopped")


def _settled(future: asyncio.Future[Any], timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()
    # Read the outcome here too, so that one nobody awaits any more (the caller was
    # cancelled) is not reported as "never retrieved".
    if not future.cancelled():
        future.exception()


def _fail(batch: list[_Job], exc: BaseException) -> None:
    for job in batch:
        if not job.future.done():
            job.future.set_exception(exc)

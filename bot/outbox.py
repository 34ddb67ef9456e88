"""The delivery worker: the only way a message leaves the service.

Rows are claimed with a lease (and FOR UPDATE SKIP LOCKED where the database has it), sent
through the channel's sender, and their result recorded. The worker wakes when the writer
commits, so a reply goes out within milliseconds; a slow timer covers retries and leases that
ran out because a process died mid-send. Sends to opted-out contacts are refused here, in one
place, whatever queued them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Protocol

from aiolimiter import AsyncLimiter
from sqlalchemy import Update, and_, bindparam, case, or_, select, update
from sqlalchemy.orm import Session

from bot.config import OutboxSettings
from bot.crypto import Cipher
from bot.domain import OutboxKind, OutboxStatus, PermanentSendError, TemporarySendError
from bot.storage import direct
from bot.storage.models import Contact, Outbox
from bot.storage.queries import audit, mark_opted_out
from bot.storage.writer import Writer
from handlers.escalation import fail_over_page

log = logging.getLogger(__name__)
MAX_LEASE = 120.0  # seconds
IDLE_WAKE_SECONDS = 1.0
CLAIM_BATCH = 64


class Sender(Protocol):
    async def send(self, address: str, text: str) -> str:
        """Hand one message to the provider; return its message id."""
        ...


@dataclass(frozen=True)
class Claimed:
    id: int
    channel: str
    kind: str
    address_enc: str
    body_enc: str
    attempts: int


def limiter(per_second: float) -> AsyncLimiter:
    # AsyncLimiter counts whole sends per period; a rate below 1/s becomes 1 per 1/rate seconds.
    if per_second >= 1:
        return AsyncLimiter(per_second, 1)
    return AsyncLimiter(1, 1 / per_second)


class OutboxWorker:
    def __init__(
        self,
        writer: Writer,
        cipher: Cipher,
        senders: Mapping[str, Sender],
        rates: Mapping[str, float],
        settings: OutboxSettings,
        clock: Callable[[], datetime],
        concurrency: int = 16,
    ) -> None:
        self._writer = writer
        self._cipher = cipher
        self._senders = senders
        self._limiters = {channel: limiter(rate) for channel, rate in rates.items()}
        self._paused_until: dict[str, datetime] = {}
        self._settings = settings
        # Long enough for a claimed row to wait its turn at the slowest rate and then time
        # out; no longer, so a send cut off by a crash is retried soon after a restart.
        slowest = min(rates.values(), default=1.0)
        self._lease = timedelta(
            seconds=min(settings.send_timeout_seconds + CLAIM_BATCH / slowest + 5, MAX_LEASE)
        )
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def busy(self) -> bool:
        """A send is in flight (claimed, not yet recorded)."""
        return bool(self._sends)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="outbox-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        # In-flight sends finish or are cut; their leases run out and they are retried.
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                claimed = await self._writer.run(self._claim, notify=False)
            except Exception as exc:  # database down: keep going, try again shortly
                log.warning("outbox_claim_failed", extra={"error": type(exc).__name__})
                claimed = []
            for row in claimed:
                await self._slots.acquire()
                task = asyncio.create_task(self._deliver(row))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
            if len(claimed) == CLAIM_BATCH:
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # arrives as the event fires, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_WAKE_SECONDS):
                    await self._wake.wait()

    def _claim(self, session: Session) -> list[Claimed]:
        now = self._clock()
        channels = [c for c in self._senders if self._paused_until.get(c, now) <= now]
        if not channels:
            return []
        rows = (
            session.execute(
                select(Outbox.id, Outbox.channel, Outbox.kind, Outbox.address_enc,
                       Outbox.body_enc, Outbox.attempts, Contact.opted_out)
                .outerjoin(Contact, Contact.id == Outbox.contact_id)
                .where(
                    Outbox.channel.in_(channels),
                    or_(
                        and_(Outbox.status == OutboxStatus.PENDING, Outbox.next_attempt_at <= now),
                        and_(Outbox.status == OutboxStatus.SENDING, Outbox.lease_until < now),
                    ),
                )
                # Pages first: a page must not queue behind a burst of replies.
                .order_by(case((Outbox.kind == OutboxKind.PAGE, 0), else_=1),
                          Outbox.next_attempt_at, Outbox.id)
                .limit(CLAIM_BATCH)
                .with_for_update(skip_locked=True, of=Outbox)
            )
        ).all()
        claimed: list[Claimed] = []
        for row in rows:
            if row.opted_out and row.kind != OutboxKind.OPTOUT_CONFIRM:
                _settle(session, row.id, now, status=OutboxStatus.REFUSED, last_error="opted_out")
                log.info("outbox_refused", extra={"outbox": row.id, "reason": "opted_out"})
            elif row.address_enc is None or row.body_enc is None:
                _settle(session, row.id, now, status=OutboxStatus.CANCELLED, last_error="erased")
            else:
                claimed.append(Claimed(row.id, row.channel, row.kind, row.address_enc,
                                       row.body_enc, row.attempts + 1))
        if claimed:
            session.execute(
                update(Outbox)
                .where(Outbox.id.in_([c.id for c in claimed]))
                .values(status=OutboxStatus.SENDING, lease_until=now + self._lease,
                        attempts=Outbox.attempts + 1, updated_at=now)
            )
        return claimed

    async def _deliver(self, row: Claimed) -> None:
        try:
            async with self._limiters[row.channel]:
                address = self._cipher.decrypt(row.address_enc)
                text = self._cipher.decrypt(row.body_enc)
                # asyncio.timeout, not wait_for: no extra task per send.
                async with asyncio.timeout(self._settings.send_timeout_seconds):
                    provider_id = await self._senders[row.channel].send(address, text)
            await self._record(row, _sent(provider_id))
            log.info("outbox_sent", extra={"outbox": row.id, "channel": row.channel})
        except TemporarySendError as exc:
            if exc.retry_after:
                self._pause(row.channel, exc.retry_after)
            await self._record(row, self._retry(row, exc.reason, exc.retry_after))
        except TimeoutError:
            await self._record(row, self._retry(row, "timeout", None))
        except PermanentSendError as exc:
            await self._record(row, _failed(exc.reason, exc.opted_out))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # An unexpected error must not kill the worker; treat it as temporary.
            log.exception("outbox_send_crashed", extra={"outbox": row.id})
            await self._record(row, self._retry(row, type(exc).__name__, None))
        finally:
            self._slots.release()

    def _pause(self, channel: str, seconds: float) -> None:
        until = self._clock() + timedelta(seconds=seconds)
        self._paused_until[channel] = max(until, self._paused_until.get(channel, until))

    def _retry(self, row: Claimed, reason: str, retry_after: float | None) -> _Result:
        if row.attempts >= self._settings.max_attempts:
            return _failed(reason, False)
        backoff = min(
            self._settings.retry_base_seconds * 2 ** (row.attempts - 1),
            self._settings.retry_max_seconds,
        )
        return _Result(OutboxStatus.PENDING, error=reason,
                       retry_in=max(backoff, retry_after or 0.0))

    async def _record(self, row: Claimed, result: _Result) -> None:
        if result.status != OutboxStatus.SENT:
            log.warning(
                "outbox_not_sent",
                extra={"outbox": row.id, "channel": row.channel, "reason": result.error,
                       "attempt": row.attempts, "final": result.status != OutboxStatus.PENDING},
            )

        def unit(session: Session) -> None:
            now = self._clock()
            if result.status == OutboxStatus.SENT and row.kind != OutboxKind.PAGE:
                # The common case, in one statement.
                _settle(session, row.id, now, status=OutboxStatus.SENT, sent_at=now,
                        provider_id=result.provider_id, last_error=None)
                return
            outbox = session.get(Outbox, row.id)
            if outbox is None or outbox.status != OutboxStatus.SENDING:
                return  # cancelled or erased meanwhile
            if result.status != OutboxStatus.SENT:
                fail_over_page(session, outbox, frozenset(self._senders), now)
            if result.retry_in is not None:
                outbox.status = OutboxStatus.PENDING
                outbox.next_attempt_at = now + timedelta(seconds=result.retry_in)
                outbox.lease_until = None
                outbox.last_error = result.error
                outbox.updated_at = now
                return
            _finish(outbox, result.status, now, error=result.error)
            outbox.provider_id = result.provider_id
            if result.status == OutboxStatus.SENT:
                outbox.sent_at = now
            if outbox.kind == OutboxKind.PAGE:
                audit(session, now, f"page_{result.status}", "escalation", outbox.escalation_id,
                      detail=f"outbox={outbox.id} channel={outbox.channel} staff={outbox.staff_id}")
            if result.opted_out and outbox.contact_id is not None:
                mark_opted_out(session, outbox.contact_id, now)

        try:
            # A sent row wakes nobody; a retry or a fail-over page may be due for sending.
            await self._writer.run(unit, notify=result.status != OutboxStatus.SENT)
        except Exception as exc:
            # The lease runs out and the row is tried again: a possible repeat beats a loss.
            log.warning("outbox_record_failed", extra={"outbox": row.id,
                                                       "error": type(exc).__name__})
        if result.retry_in is not None:
            asyncio.get_running_loop().call_later(result.retry_in, self.wake)


@dataclass(frozen=True)
class _Result:
    status: OutboxStatus
    provider_id: str | None = None
    error: str | None = None
    retry_in: float | None = None
    opted_out: bool = False


def _sent(provider_id: str) -> _Result:
    return _Result(OutboxStatus.SENT, provider_id=provider_id)


def _failed(reason: str, opted_out: bool) -> _Result:
    return _Result(OutboxStatus.FAILED, error=reason, opted_out=opted_out)


def _settle(session: Session, outbox_id: int, now: datetime, **values: object) -> None:
    """_finish for a row not loaded: only a row still being sent is settled."""
    direct.execute(
        session.connection(),
        _settle_statement(),
        {"row_id": outbox_id, "lease_until": None, "address_enc": None, "body_enc": None,
         "updated_at": now, **values},
    )


@cache
def _settle_statement() -> Update:
    # Built once; the SET clause comes from the parameters.
    table = Outbox.__table__
    return update(table).where(
        table.c.id == bindparam("row_id"),
        # Two comparisons, not IN: bot.storage.direct runs no expanding IN lists.
        or_(table.c.status == OutboxStatus.PENDING, table.c.status == OutboxStatus.SENDING),
    )


def _finish(row: Outbox, status: OutboxStatus, now: datetime, error: str | None = None) -> None:
    """Settle a row. The address and body go: the message's own row keeps the text."""
    row.status = status
    row.last_error = error
    row.lease_until = None
    row.address_enc = None
    row.body_enc = None
    row.updated_at = now

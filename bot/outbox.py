"""The delivery worker: the only way a message leaves the service.

Rows are claimed with a lease (and FOR UPDATE SKIP LOCKED where the database has it), sent
through the channel's sender, and their result recorded. The worker wakes when the writer
commits, so a reply goes out within milliseconds; a slow timer covers retries and leases that
ran out because a process died mid-send; such a row is in doubt, and the provider is asked
whether it already has the message before it is sent again. A row to an opted-out address is
refused at the claim (bot.storage.outbox), whatever queued it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from aiolimiter import AsyncLimiter
from sqlalchemy.orm import Session

from bot.config import OutboxSettings
from bot.crypto import Cipher
from bot.domain import (
    Observed,
    OutboxKind,
    OutboxStatus,
    PermanentSendError,
    SendError,
    TemporarySendError,
)
from bot.notify import Notifier
from bot.storage import outbox
from bot.storage.after_commit import observe
from bot.storage.models import Outbox
from bot.storage.outbox import Claimed
from bot.storage.queries import audit, mark_opted_out
from bot.storage.writer import Writer
from handlers.escalation import fail_over_page

log = logging.getLogger(__name__)
MAX_LEASE = 120.0  # seconds
IDLE_WAKE_SECONDS = 1.0
CLAIM_BATCH = 64
# How many attempts at a row left in doubt may end in "cannot ask the provider" before it is
# sent anyway.
RECONCILE_TRIES = 3


class Sender(Protocol):
    async def send(self, address: str, text: str, origin: str | None) -> str:
        """Hand one message to the provider, from `origin` (our own number) when given;
        return the provider's message id."""
        ...

    async def find_sent(self, address: str, text: str) -> list[str]:
        """Provider ids of messages with this text that the provider already accepted for
        `address`, newest first; [] when the provider cannot say (Telegram)."""
        ...


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
        notifier: Notifier,
        concurrency: int = 16,
    ) -> None:
        self._writer = writer
        self._notifier = notifier
        self._cipher = cipher
        self._senders = senders
        self._limiters = {channel: limiter(rate) for channel, rate in rates.items()}
        self._paused_until: dict[str, datetime] = {}
        self._settings = settings
        # Long enough for a claimed row to wait its turn at the slowest rate and then time
        # out; no longer, so a send cut off by a crash is retried soon after a restart.
        slowest = min(rates.values(), default=1.0)
        self._lease = timedelta(
            seconds=min(settings.send_timeout_seconds + concurrency / slowest + 5, MAX_LEASE)
        )
        self._clock = clock
        # Send slots are per channel, and a channel never has more rows claimed than free
        # slots: a hung provider holds only its own slots, and never another's rows.
        self._concurrency = concurrency
        self._in_flight: dict[str, int] = defaultdict(int)
        self._backlog: set[str] = set()  # channels whose last claim left rows behind
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

    def paused_channels(self) -> set[str]:
        """Channels waiting out a provider's rate limit: nothing is claimed for them now."""
        now = self._clock()
        return {channel for channel, until in self._paused_until.items() if until > now}

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
            free = self._free_slots()
            claimed: list[Claimed] = []
            if free:
                try:
                    claimed, self._backlog = await self._writer.run(
                        lambda session, free=free: self._claim(session, free), notify=False
                    )
                except Exception as exc:  # database down: keep going, try again shortly
                    log.warning("outbox_claim_failed", extra={"error": type(exc).__name__})
            for row in claimed:
                self._in_flight[row.channel] += 1
                task = asyncio.create_task(self._deliver(row))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # arrives as the event fires, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_WAKE_SECONDS):
                    await self._wake.wait()

    def _free_slots(self) -> dict[str, int]:
        now = self._clock()
        return {
            channel: min(self._concurrency - self._in_flight[channel], CLAIM_BATCH)
            for channel in self._senders
            if self._paused_until.get(channel, now) <= now
            and self._in_flight[channel] < self._concurrency
        }

    def _claim(
        self, session: Session, free: Mapping[str, int]
    ) -> tuple[list[Claimed], set[str]]:
        """Rows to send, and the channels that filled every free slot (more may wait)."""
        now = self._clock()
        claimed: list[Claimed] = []
        backlog = set()
        for channel, slots in free.items():
            rows, refused = outbox.claim(session, channel, slots, now, self._lease)
            claimed.extend(rows)
            if len(rows) + len(refused) == slots:
                backlog.add(channel)
            for row in refused:
                # A page refused on one channel (that address opted out) still tries the
                # person's other one.
                fail_over_page(session, row, frozenset(self._senders), now)
        return claimed, backlog

    async def _deliver(self, row: Claimed) -> None:
        try:
            async with self._limiters[row.channel]:
                sender = self._senders[row.channel]
                address = self._cipher.decrypt(row.address_enc)
                text = self._cipher.decrypt(row.body_enc)
                provider_id = await self._sent_before(sender, row, address, text)
                if provider_id is not None:
                    log.info("outbox_reconciled", extra={"outbox": row.id,
                                                         "channel": row.channel})
                else:
                    # asyncio.timeout, not wait_for: no extra task per send.
                    async with asyncio.timeout(self._settings.send_timeout_seconds):
                        provider_id = await sender.send(address, text, row.origin)
            await self._record(row, _sent(provider_id))
            log.info("outbox_sent", extra={"outbox": row.id, "channel": row.channel})
        except TemporarySendError as exc:
            if exc.retry_after:
                self._pause(row.channel, exc.retry_after)
            await self._record(row, self._retry(row, exc.reason, exc.retry_after, exc.in_doubt))
        except TimeoutError:
            # The provider may have taken it and only the answer was lost.
            await self._record(row, self._retry(row, "timeout", None, in_doubt=True))
        except PermanentSendError as exc:
            await self._record(row, _failed(exc.reason, exc.opted_out))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # An unexpected error must not kill the worker; treat it as temporary.
            # Its type only: a traceback's text may quote the message or the address.
            log.error("outbox_send_crashed", extra={"outbox": row.id,
                                                    "error": type(exc).__name__})
            await self._record(row, self._retry(row, type(exc).__name__, None, in_doubt=True))
        finally:
            self._release(row.channel)

    async def _sent_before(
        self, sender: Sender, row: Claimed, address: str, text: str
    ) -> str | None:
        """For a row an earlier attempt may have delivered: the provider's id for that
        message, if the provider has one we have not matched to another row."""
        if not row.in_doubt:
            return None
        try:
            async with asyncio.timeout(self._settings.send_timeout_seconds):
                found = await sender.find_sent(address, text)
        except (SendError, TimeoutError) as exc:
            log.warning("outbox_reconcile_failed", extra={"outbox": row.id,
                                                          "error": type(exc).__name__})
            if row.attempts <= RECONCILE_TRIES:
                # Ask again later: an overloaded or briefly unreachable provider is the
                # usual reason, and sending now could be a repeat.
                raise TemporarySendError("reconcile_failed", in_doubt=True) from None
            return None  # still cannot tell: send. A possible repeat beats a possible loss.
        if not found:
            return None
        known = await self._writer.run(
            lambda session: outbox.known_provider_ids(session, found), notify=False
        )
        unmatched = [sid for sid in found if sid not in known]
        return unmatched[-1] if unmatched else None  # the oldest: sent first

    def _release(self, channel: str) -> None:
        self._in_flight[channel] -= 1
        if channel in self._backlog:
            self.wake()  # rows are waiting for this slot

    def _pause(self, channel: str, seconds: float) -> None:
        seconds = min(seconds, self._settings.retry_max_seconds)
        until = self._clock() + timedelta(seconds=seconds)
        self._paused_until[channel] = max(until, self._paused_until.get(channel, until))
        # Claiming resumes when the pause ends, not at the next idle wake after it.
        asyncio.get_running_loop().call_later(seconds, self.wake)

    def _retry(
        self, row: Claimed, reason: str, retry_after: float | None, in_doubt: bool = False
    ) -> _Result:
        if row.attempts >= self._settings.max_attempts:
            return _failed(reason, False)
        backoff = min(
            self._settings.retry_base_seconds * 2 ** (row.attempts - 1),
            self._settings.retry_max_seconds,
        )
        wait = max(backoff, min(retry_after or 0.0, self._settings.retry_max_seconds))
        return _Result(OutboxStatus.PENDING, error=reason, retry_in=wait, in_doubt=in_doubt)

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
                outbox.settle(session, row.id, now, status=OutboxStatus.SENT, sent_at=now,
                              provider_id=result.provider_id, last_error=None)
                return
            row_now = session.get(Outbox, row.id)
            if row_now is None or row_now.status != OutboxStatus.SENDING:
                return  # cancelled or erased meanwhile
            if result.status != OutboxStatus.SENT:
                fail_over_page(session, row_now, frozenset(self._senders), now)
            if result.retry_in is not None:
                outbox.retry_later(session, row.id, now, now + timedelta(seconds=result.retry_in),
                                   result.error or "", result.in_doubt)
                observe(session, Observed.OUTBOX_RETRIED, channel=row.channel, kind=row.kind)
                return
            sent = result.status == OutboxStatus.SENT
            if not sent:
                observe(session, Observed.OUTBOX_FAILED, channel=row.channel, kind=row.kind)
            outbox.settle(session, row.id, now, status=result.status, last_error=result.error,
                          provider_id=result.provider_id, sent_at=now if sent else None)
            if row.kind == OutboxKind.PAGE:
                audit(session, now, f"page_{result.status}", "escalation",
                      row_now.escalation_id,
                      detail=f"outbox={row.id} channel={row.channel} staff={row_now.staff_id}")
            if result.opted_out:
                mark_opted_out(session, row_now.contact_id, row_now.address_hash, now)

        try:
            # A sent row wakes nobody; a retry or a fail-over page may be due for sending.
            await self._writer.run(unit, notify=result.status != OutboxStatus.SENT)
            # Pages showing this message's delivery status read it again.
            self._notifier.conversation(row.conversation_id)
            self._notifier.escalation(row.escalation_id)
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
    in_doubt: bool = False


def _sent(provider_id: str) -> _Result:
    return _Result(OutboxStatus.SENT, provider_id=provider_id)


def _failed(reason: str, opted_out: bool) -> _Result:
    return _Result(OutboxStatus.FAILED, error=reason, opted_out=opted_out)

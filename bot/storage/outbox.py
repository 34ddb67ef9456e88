"""An outbox row's whole life, in one place: queued, claimed, settled, cancelled.

Every message the service sends is a row here, written in the same transaction as its
cause (a reply, a page, a notice to staff). The delivery worker (bot/outbox.py) claims due
rows, sends them and settles them. The opt-out rule is kept at the claim, for every kind of
row at once: a row whose address belongs to an opted-out contact is refused, whatever queued
it and whenever; the one exception is the single opt-out confirmation on channels where the
provider does not send its own (Twilio confirms STOP on SMS itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

from sqlalchemy import Select, Update, and_, bindparam, case, exists, or_, select, update
from sqlalchemy.orm import Session

from bot.domain import Channel, OutboxKind, OutboxStatus
from bot.storage import after_commit
from bot.storage.models import Contact, Outbox
from bot.storage.rows import OUTBOX, execute_statement, insert_row


def pending_values(now: datetime) -> dict[str, Any]:
    """The bookkeeping columns of a row not tried yet."""
    return {
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "in_doubt": False,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def enqueue(
    session: Session,
    now: datetime,
    *,
    channel: str,
    kind: OutboxKind,
    address_enc: str,
    address_hash: str,
    body_enc: str,
    origin: str | None = None,
    contact_id: int | None = None,
    staff_id: int | None = None,
    conversation_id: int | None = None,
    message_id: int | None = None,
    escalation_id: int | None = None,
    failover_of: int | None = None,
) -> int:
    """Queue one message; it leaves once the transaction commits. Returns the row's id."""
    after_commit.queued_to_send(session)
    # Every column is always given, so the hot path compiles this insert once.
    return insert_row(
        session.connection(),
        OUTBOX,
        channel=channel,
        kind=kind,
        address_enc=address_enc,
        address_hash=address_hash,
        body_enc=body_enc,
        origin=origin,
        contact_id=contact_id,
        staff_id=staff_id,
        conversation_id=conversation_id,
        message_id=message_id,
        escalation_id=escalation_id,
        failover_of=failover_of,
        **pending_values(now),
    )


@dataclass(frozen=True)
class Claimed:
    """A row handed to the worker to send."""

    id: int
    channel: str
    kind: str
    address_enc: str
    body_enc: str
    origin: str | None
    attempts: int  # counting this one
    in_doubt: bool  # an earlier attempt may have reached the provider
    conversation_id: int | None
    escalation_id: int | None


class SentRow(Protocol):
    """What a fail-over needs of a row that did not get through (an Outbox, or Refused)."""

    id: int
    channel: str
    kind: str
    staff_id: int | None
    escalation_id: int | None
    failover_of: int | None
    body_enc: str | None


@dataclass(frozen=True)
class Refused:
    """A due row that was not sent, because its address opted out."""

    id: int
    channel: str
    kind: str
    staff_id: int | None
    escalation_id: int | None
    failover_of: int | None
    body_enc: str | None


def _opted_out() -> Any:
    # By the address's hash, so erasure (which drops the contact's address but keeps its
    # hash) and staff addresses are covered too; by contact id for rows queued before the
    # hash was kept.
    return exists().where(
        Contact.opted_out.is_(True),
        or_(Contact.address_hash == Outbox.address_hash, Contact.id == Outbox.contact_id),
    )


def claim(
    session: Session, channel: str, limit: int, now: datetime, lease: timedelta
) -> tuple[list[Claimed], list[Refused]]:
    """Take up to `limit` due rows of one channel for sending, pages first.

    A row still "sending" whose lease ran out was cut off mid-send (a crash, or a worker that
    lost its database): it is claimed again, marked in doubt. Rows are locked with FOR UPDATE
    SKIP LOCKED where the database has it, so two workers never take the same row.
    """
    # Core, on statements built once: the worker claims after every send, and building
    # these and their cache keys each time cost more than running them (ms per claim).
    conn = session.connection()
    rows = conn.execute(_claim_query(), {"channel": channel, "now": now, "limit": limit}).all()
    claimed: list[Claimed] = []
    refused: list[Refused] = []
    for row in rows:
        if row.opted_out and not _confirms_opt_out(channel, row.kind):
            settle(session, row.id, now, status=OutboxStatus.REFUSED, last_error="opted_out")
            refused.append(Refused(row.id, channel, row.kind, row.staff_id, row.escalation_id,
                                   row.failover_of, row.body_enc))
        elif row.address_enc is None or row.body_enc is None:
            settle(session, row.id, now, status=OutboxStatus.CANCELLED, last_error="erased")
        else:
            in_doubt = row.in_doubt or row.status == OutboxStatus.SENDING
            claimed.append(Claimed(row.id, channel, row.kind, row.address_enc, row.body_enc,
                                   row.origin, row.attempts + 1, in_doubt,
                                   row.conversation_id, row.escalation_id))
    if claimed:
        conn.execute(_claim_update(), {"ids": [c.id for c in claimed],
                                       "lease": now + lease, "now": now})
    return claimed, refused


@cache
def _claim_query() -> Select[Any]:
    table = OUTBOX
    return (
        select(table.c.id, table.c.kind, table.c.status, table.c.address_enc,
               table.c.body_enc, table.c.origin, table.c.attempts, table.c.in_doubt,
               table.c.staff_id, table.c.escalation_id, table.c.failover_of,
               table.c.conversation_id, _opted_out().label("opted_out"))
        .where(
            table.c.channel == bindparam("channel"),
            or_(
                and_(table.c.status == OutboxStatus.PENDING,
                     table.c.next_attempt_at <= bindparam("now")),
                and_(table.c.status == OutboxStatus.SENDING,
                     table.c.lease_until < bindparam("now")),
            ),
        )
        # Pages first: a page must not queue behind a burst of replies.
        .order_by(case((table.c.kind == OutboxKind.PAGE, 0), else_=1),
                  table.c.next_attempt_at, table.c.id)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True, of=table)
    )


@cache
def _claim_update() -> Update:
    table = OUTBOX
    return (
        update(table)
        .where(table.c.id.in_(bindparam("ids", expanding=True)))
        .values(status=OutboxStatus.SENDING, lease_until=bindparam("lease"),
                attempts=table.c.attempts + 1, updated_at=bindparam("now"),
                in_doubt=or_(table.c.in_doubt, table.c.status == OutboxStatus.SENDING))
    )


def _confirms_opt_out(channel: str, kind: str) -> bool:
    return kind == OutboxKind.OPTOUT_CONFIRM and channel != Channel.SMS


def settle(session: Session, outbox_id: int, now: datetime, **values: object) -> bool:
    """Settle a row still pending or being sent (sent, failed, refused, cancelled). The
    address and body go: the message's own row keeps the text. False if it was settled
    already (cancelled or erased meanwhile)."""
    touched = execute_statement(
        session.connection(),
        _settle_statement(),
        {"row_id": outbox_id, "lease_until": None, "address_enc": None, "body_enc": None,
         "updated_at": now, **values},
    )
    return touched == 1


@cache
def _settle_statement() -> Update:
    # Built once; the SET clause comes from the parameters.
    table = OUTBOX
    return update(table).where(
        table.c.id == bindparam("row_id"),
        # Two comparisons, not IN: bot.storage.direct runs no expanding IN lists.
        or_(table.c.status == OutboxStatus.PENDING, table.c.status == OutboxStatus.SENDING),
    )


def retry_later(
    session: Session, outbox_id: int, now: datetime, at: datetime, error: str, in_doubt: bool
) -> None:
    """Back to pending, for another attempt at `at`."""
    after_commit.queued_to_send(session)
    session.execute(
        update(Outbox)
        .where(Outbox.id == outbox_id, Outbox.status == OutboxStatus.SENDING)
        .values(status=OutboxStatus.PENDING, next_attempt_at=at, lease_until=None,
                last_error=error, updated_at=now,
                in_doubt=or_(Outbox.in_doubt, in_doubt))
    )


def cancel_pending_to_contact(
    session: Session, contact_id: int, now: datetime, keep_optout_confirm: bool = False
) -> None:
    """Nothing queued may still go out after STOP, EXIT or DELETE. keep_optout_confirm: for
    a STOP repeated before the first one's confirmation went out, which must still go."""
    kept = [Outbox.kind != OutboxKind.OPTOUT_CONFIRM] if keep_optout_confirm else []
    session.execute(
        update(Outbox)
        .where(
            Outbox.contact_id == contact_id,
            # A row already handed to the provider cannot be called back.
            Outbox.status == OutboxStatus.PENDING,
            *kept,
        )
        .values(status=OutboxStatus.CANCELLED, address_enc=None, body_enc=None, updated_at=now)
    )


def forget_contact(session: Session, contact_id: int) -> None:
    """Erasure: no row keeps the contact's address, body or link to them. The address hash
    stays, so a row still in flight to an opted-out address is refused, not sent."""
    session.execute(
        update(Outbox)
        .where(Outbox.contact_id == contact_id)
        .values(address_enc=None, body_enc=None, contact_id=None)
    )


def known_provider_ids(session: Session, provider_ids: Iterable[str]) -> set[str]:
    """Which of these provider message ids some row already has."""
    wanted = list(provider_ids)
    if not wanted:
        return set()
    return set(session.scalars(select(Outbox.provider_id).where(Outbox.provider_id.in_(wanted))))


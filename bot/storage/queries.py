"""Small queries shared by the handlers. Each takes the session it runs in."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from sqlalchemy import Insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.domain import DuplicateMessage, OutboxStatus
from bot.storage import direct
from bot.storage.models import AuditEntry, Contact, Outbox, ProviderEvent


def record_provider_event(
    session: Session, channel: str, provider_id: str, now: datetime
) -> None:
    """Insert the provider's message id; a replay hits the unique constraint and inserts
    nothing (ON CONFLICT DO NOTHING: no savepoint, no check-then-insert race)."""
    conn = session.connection()
    inserted = direct.execute(
        conn,
        _insert_event_once(conn.dialect.name),
        {"channel": channel, "provider_id": provider_id, "received_at": now},
    )
    if inserted != 1:
        raise DuplicateMessage(f"{channel} {provider_id}")


@cache
def _insert_event_once(dialect: str) -> Insert:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(ProviderEvent.__table__).on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=["channel", "provider_id"]
    )



def cancel_pending_to_contact(session: Session, contact_id: int, now: datetime) -> None:
    """Nothing queued may still go out after STOP, EXIT or DELETE."""
    session.execute(
        update(Outbox)
        .where(
            Outbox.contact_id == contact_id,
            # A row already handed to the provider cannot be called back.
            Outbox.status == OutboxStatus.PENDING,
        )
        .values(status=OutboxStatus.CANCELLED, address_enc=None, body_enc=None, updated_at=now)
    )


def audit(
    session: Session,
    now: datetime,
    action: str,
    target_type: str,
    target_id: int | None,
    actor: str = "system",
    actor_staff_id: int | None = None,
    detail: str = "",
) -> None:
    session.add(
        AuditEntry(
            at=now,
            actor=actor,
            actor_staff_id=actor_staff_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            detail=detail,
        )
    )


def mark_opted_out(session: Session, contact_id: int, now: datetime) -> None:
    session.execute(
        update(Contact)
        .where(Contact.id == contact_id, Contact.opted_out.is_(False))
        .values(opted_out=True, opted_out_at=now)
    )

"""Small queries shared by the handlers. Each takes the session it runs in."""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cache

from sqlalchemy import Insert, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.domain import DuplicateMessage
from bot.storage.models import AuditEntry, Contact, ProviderEvent
from bot.storage.rows import execute_statement, record_event_and_lock_sender


def record_provider_event(
    session: Session, channel: str, provider_id: str, now: datetime, sender_hashes: list[str]
) -> None:
    """Insert the provider's message id; a replay hits the unique constraint and inserts
    nothing (ON CONFLICT DO NOTHING: no savepoint, no check-then-insert race), and raises
    DuplicateMessage. With several writers (PostgreSQL) the sender's contact row is locked
    in the same statement (rows.record_event_and_lock_sender says why)."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        record_event_and_lock_sender(conn, channel, provider_id, now, sender_hashes)
        return
    inserted = execute_statement(
        conn,
        _insert_event_once(),
        {"channel": channel, "provider_id": provider_id, "received_at": now},
    )
    if inserted != 1:
        raise DuplicateMessage(f"{channel} {provider_id}")


@cache
def _insert_event_once() -> Insert:
    return sqlite_insert(ProviderEvent.__table__).on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=["channel", "provider_id"]
    )


def insert_unless_taken(session: Session, model: type, *unique: str) -> Insert:
    """INSERT ... ON CONFLICT (unique) DO NOTHING: a claim that a unique key decides. Of
    the processes that try the same key at once, only the one whose insert took it gets a
    row back from RETURNING, and does the work; a restart finds the key taken."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(model).on_conflict_do_nothing(index_elements=list(unique))
    return statement  # type: ignore[no-any-return]


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


def mark_opted_out(
    session: Session, contact_id: int | None, address_hash: str | None, now: datetime
) -> None:
    """The provider says this address unsubscribed (Twilio 21610)."""
    if contact_id is None and address_hash is None:
        return
    match = Contact.id == contact_id if contact_id is not None else \
        Contact.address_hash == address_hash
    session.execute(
        update(Contact)
        .where(match, Contact.opted_out.is_(False))
        .values(opted_out=True, opted_out_at=now)
    )


def try_exclusive(session: Session, job: str) -> bool:
    """Whether this transaction is the only one doing `job` right now, for work that any
    number of processes may start at once (the nightly purge). On PostgreSQL a transaction
    advisory lock, released at commit; SQLite's single writer makes every unit exclusive."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    key = int.from_bytes(hashlib.sha256(job.encode()).digest()[:8], "big", signed=True)
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"),
                                {"key": key}).scalar())

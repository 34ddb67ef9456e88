"""Small queries shared by the handlers. Each takes the session it runs in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import DuplicateMessage, OutboxStatus
from bot.storage.models import AuditEntry, Contact, Conversation, Outbox, ProviderEvent


async def record_provider_event(
    session: AsyncSession, channel: str, provider_id: str, now: datetime
) -> None:
    """Insert the provider's message id; a replay violates the unique constraint."""
    try:
        async with session.begin_nested():
            session.add(ProviderEvent(channel=channel, provider_id=provider_id, received_at=now))
            await session.flush()
    except IntegrityError:
        raise DuplicateMessage(f"{channel} {provider_id}") from None


async def contact_with_latest_conversation(
    session: AsyncSession, address_hash: str
) -> tuple[Contact | None, Conversation | None]:
    latest = (
        select(func.max(Conversation.id))
        .where(Conversation.contact_id == Contact.id)
        .correlate(Contact)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            select(Contact, Conversation)
            .outerjoin(Conversation, Conversation.id == latest)
            .where(Contact.address_hash == address_hash)
        )
    ).first()
    if row is None:
        return None, None
    return row[0], row[1]


async def cancel_pending_to_contact(session: AsyncSession, contact_id: int, now: datetime) -> None:
    """Nothing queued may still go out after STOP, EXIT or DELETE."""
    await session.execute(
        update(Outbox)
        .where(
            Outbox.contact_id == contact_id,
            # A row already handed to the provider cannot be called back.
            Outbox.status == OutboxStatus.PENDING,
        )
        .values(status=OutboxStatus.CANCELLED, address_enc=None, body_enc=None, updated_at=now)
    )


def audit(
    session: AsyncSession,
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

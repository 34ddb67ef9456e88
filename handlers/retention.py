"""Retention: closed conversations are deleted once past the configured period."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import ConversationStatus, OutboxStatus
from bot.storage.models import Contact, Conversation, Message, Outbox, ProviderEvent
from bot.storage.queries import audit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Purged:
    conversations: int
    contacts: int


async def purge_expired(session: AsyncSession, now: datetime, retention_days: int) -> Purged:
    cutoff = now - timedelta(days=retention_days)
    expired = select(Conversation.id).where(
        Conversation.status == ConversationStatus.CLOSED, Conversation.closed_at < cutoff
    )
    ids = list((await session.scalars(expired)).all())
    if ids:
        await session.execute(delete(Message).where(Message.conversation_id.in_(ids)))
        await session.execute(
            update(Outbox)
            .where(Outbox.conversation_id.in_(ids), Outbox.status == OutboxStatus.PENDING)
            .values(status=OutboxStatus.CANCELLED)
        )
        await session.execute(
            update(Outbox)
            .where(Outbox.conversation_id.in_(ids))
            .values(address_enc=None, body_enc=None, conversation_id=None)
        )
        await session.execute(delete(Conversation).where(Conversation.id.in_(ids)))
    # A contact with nothing left goes too, unless it opted out: that fact must outlive
    # retention, or the next message could be answered.
    has_conversation = exists().where(Conversation.contact_id == Contact.id)
    contacts = await session.execute(
        delete(Contact).where(
            ~has_conversation, Contact.opted_out.is_(False), Contact.created_at < cutoff
        )
    )
    await session.execute(delete(ProviderEvent).where(ProviderEvent.received_at < cutoff))
    result = Purged(conversations=len(ids), contacts=contacts.rowcount or 0)
    audit(session, now, "retention_purge", "conversation", None,
          detail=f"conversations={result.conversations} contacts={result.contacts}")
    log.info("retention_purged", extra={"conversations": result.conversations,
                                        "contacts": result.contacts})
    return result

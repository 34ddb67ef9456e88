"""Retention: closed conversations are deleted once past the configured period."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from bot.domain import ConversationStatus, OutboxStatus
from bot.storage.after_commit import note
from bot.storage.models import Contact, Conversation, Message, Outbox, ProviderEvent
from bot.storage.queries import audit, try_exclusive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Purged:
    conversations: int
    contacts: int


def purge_expired(session: Session, now: datetime, retention_days: int) -> Purged:
    if not try_exclusive(session, "retention-purge"):
        return Purged(conversations=0, contacts=0)  # another process is purging right now
    cutoff = now - timedelta(days=retention_days)
    expired = select(Conversation.id).where(
        Conversation.status == ConversationStatus.CLOSED, Conversation.closed_at < cutoff
    )
    ids = list((session.scalars(expired)).all())
    if ids:
        session.execute(delete(Message).where(Message.conversation_id.in_(ids)))
        session.execute(
            update(Outbox)
            .where(Outbox.conversation_id.in_(ids), Outbox.status == OutboxStatus.PENDING)
            .values(status=OutboxStatus.CANCELLED)
        )
        session.execute(
            update(Outbox)
            .where(Outbox.conversation_id.in_(ids))
            .values(address_enc=None, body_enc=None, conversation_id=None)
        )
        session.execute(delete(Conversation).where(Conversation.id.in_(ids)))
    # A contact with nothing left goes too, unless it opted out: that fact must outlive
    # retention, or the next message could be answered.
    has_conversation = exists().where(Conversation.contact_id == Contact.id)
    contacts = session.execute(
        delete(Contact).where(
            ~has_conversation, Contact.opted_out.is_(False), Contact.created_at < cutoff
        )
    )
    session.execute(delete(ProviderEvent).where(ProviderEvent.received_at < cutoff))
    result = Purged(conversations=len(ids), contacts=contacts.rowcount or 0)
    audit(session, now, "retention_purge", "conversation", None,
          detail=f"conversations={result.conversations} contacts={result.contacts}")
    note(session, log, "retention_purged", conversations=result.conversations,
         contacts=result.contacts)
    return result

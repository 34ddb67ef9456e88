"""What the bot and staff both do to a conversation: queue a reply, close it, escalate it.

The inbound handler (handlers/inbound.py) and the console (handlers/staff.py) call these, so
a staff reply leaves by the same path as the bot's, and a staff "mark emergency" opens its
escalation by the same code as a keyword emergency.

These run on the inbound hot path, so they use its Core statements (bot/storage/rows.py) and
its tracked ConversationRow: a change to the row is saved by the caller, with the rest of its
changes, in one UPDATE. Each function touches only its Session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain import (
    PRIORITY_EMERGENCY,
    ConversationStatus,
    Direction,
    EscalationStatus,
    OutboxKind,
)
from bot.storage import outbox
from bot.storage.models import Escalation
from bot.storage.queries import audit
from bot.storage.rows import MESSAGES, ConversationRow, insert_row
from handlers.escalation import EscalationDeps, open_escalation


def queue_reply(
    session: Session,
    now: datetime,
    *,
    channel: str,
    address_enc: str,
    address_hash: str,
    body_enc: str,
    origin: str | None,
    contact_id: int | None,
    conversation_id: int | None,
    kind: OutboxKind = OutboxKind.REPLY,
    author_staff_id: int | None = None,
) -> int | None:
    """Queue one message to a contact: its outbound Message row in the conversation (when
    there is one) and the outbox row that sends it, in this transaction. `origin` is our
    number the contact wrote to, so the reply comes from the number they know. Returns the
    message's id. The caller has checked the opt-out rule; the outbox checks it again at
    every claim."""
    message_id = None
    if conversation_id is not None:
        message_id = insert_row(
            session.connection(),
            MESSAGES,
            conversation_id=conversation_id,
            direction=Direction.OUTBOUND,
            body_enc=body_enc,
            media_count=0,
            automatic=author_staff_id is None,  # the bot's own, or written by a person
            author_staff_id=author_staff_id,
            created_at=now,
        )
    outbox.enqueue(
        session,
        now,
        channel=channel,
        kind=kind,
        address_enc=address_enc,
        address_hash=address_hash,
        body_enc=body_enc,
        origin=origin,
        contact_id=contact_id,
        conversation_id=conversation_id,
        message_id=message_id,
    )
    return message_id


def close(
    session: Session,
    now: datetime,
    conversation: ConversationRow,
    outcome: str,
    actor: str = "system",
    actor_staff_id: int | None = None,
) -> None:
    """Close with an outcome; the caller saves the row."""
    conversation.status = ConversationStatus.CLOSED
    conversation.outcome = outcome
    conversation.closed_at = now
    audit(session, now, "conversation_closed", "conversation", conversation.id, actor=actor,
          actor_staff_id=actor_staff_id, detail=outcome)


@dataclass(frozen=True)
class Escalated:
    escalation_id: int
    opened: bool  # False: one was open already, and it goes on paging


def open_escalation_id(session: Session, conversation_id: int) -> int | None:
    """The conversation's escalation that is not resolved yet, if any."""
    return session.scalar(
        select(Escalation.id)
        .where(
            Escalation.conversation_id == conversation_id,
            Escalation.status != EscalationStatus.RESOLVED,
        )
        .order_by(Escalation.id)
        .limit(1)
    )


def escalate(
    session: Session,
    deps: EscalationDeps,
    conversation: ConversationRow,
    channel: str,
    trigger: str,
    now: datetime,
    *,
    new: bool = False,
    actor: str = "system",
    actor_staff_id: int | None = None,
) -> Escalated:
    """Top of the queue, and an escalation that pages on-call, unless one is open already.
    `new`: the conversation was created in this transaction, so none can be open."""
    conversation.emergency = True
    conversation.priority = PRIORITY_EMERGENCY
    already = None if new else open_escalation_id(session, conversation.id)
    if already is not None:
        return Escalated(already, opened=False)
    conversation.save(session.connection())  # the sweep must see this as an emergency too
    escalation = open_escalation(session, deps, conversation.id, channel, trigger, now,
                                 actor=actor, actor_staff_id=actor_staff_id)
    return Escalated(escalation.id, opened=True)

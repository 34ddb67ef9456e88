"""A web chat's life: opened by the page, written in, ended, and what the page is sent.

The page holds a random token in memory only. The token is the web contact's address: its
keyed hash finds the session and the contact, exactly as a phone number's does for SMS.
Messages from the page go through the same intake and handlers as every channel; replies
are outbox rows like every other, and the page reads the ones the outbox has sent. A
session ends on quick exit (the conversation closes silently, as with EXIT), when the page
goes away, or after `[webchat] idle_minutes` without a message; an ended session is never
written to again, and staff see that the contact has left.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.crypto import Cipher
from bot.domain import Channel, ConversationStatus, Direction, OutboxStatus
from bot.storage.after_commit import note
from bot.storage.models import Contact, Conversation, Message, Outbox, WebSession
from bot.storage.outbox import cancel_pending_to_contact
from handlers import conversations

log = logging.getLogger(__name__)
SHOWN = (OutboxStatus.SENT, OutboxStatus.DELIVERED)


class ChatClosed(Exception):
    """The token opens no live chat (never did, ended, or idle too long)."""


class TooManyChats(Exception):
    """`[webchat] max_sessions` chats are open already."""


@dataclass(frozen=True)
class Opened:
    token: str  # for the page's memory; never stored
    session_id: int


def address_hash(cipher: Cipher, token: str) -> str:
    return cipher.address_hash(Channel.WEB, token)


def open_chat(session: Session, cipher: Cipher, language: str, max_sessions: int,
              idle: timedelta, now: datetime) -> Opened:
    live = session.scalar(
        select(func.count()).select_from(WebSession)
        .where(WebSession.ended_at.is_(None), WebSession.last_seen_at >= now - idle)
    )
    if live is not None and live >= max_sessions:
        raise TooManyChats()
    token = secrets.token_urlsafe(32)
    row = WebSession(address_hash=address_hash(cipher, token), language=language,
                     created_at=now, last_seen_at=now)
    session.add(row)
    session.flush()
    note(session, log, "webchat_opened", chat=row.id)
    return Opened(token, row.id)


def live_session(session: Session, hash_: str, idle: timedelta,
                 now: datetime) -> WebSession:
    """The open session for this address hash; ChatClosed if there is none."""
    row = session.scalar(select(WebSession).where(WebSession.address_hash == hash_))
    if row is None or row.ended_at is not None or now - row.last_seen_at > idle:
        raise ChatClosed()
    return row


def is_open(session: Session, hash_: str, idle: timedelta, now: datetime) -> bool:
    try:
        live_session(session, hash_, idle, now)
    except ChatClosed:
        return False
    return True


def seen(session: Session, hash_: str, idle: timedelta, now: datetime) -> int:
    """The page wrote: the session is alive until idle_minutes from now."""
    row = live_session(session, hash_, idle, now)
    row.last_seen_at = now
    return row.id


def end_session(session: Session, hash_: str, reason: str, now: datetime) -> bool:
    """Mark the session ended: nothing is written to it again. False if it was already."""
    ended = bool(session.execute(
        update(WebSession)
        .where(WebSession.address_hash == hash_, WebSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    ).rowcount)
    if ended:
        note(session, log, "webchat_ended", reason=reason)
    return ended


def end_chat(session: Session, hash_: str, reason: str, now: datetime) -> int | None:
    """End a session from the page. On quick exit the conversation closes silently, as with
    EXIT, and nothing queued for the contact goes out. Returns the conversation closed."""
    if not end_session(session, hash_, reason, now):
        return None
    contact_id = session.scalar(select(Contact.id).where(Contact.address_hash == hash_))
    if contact_id is None:
        return None
    cancel_pending_to_contact(session, contact_id, now)
    if reason != "exit":
        return None
    conversation = session.scalar(
        select(Conversation)
        .where(Conversation.contact_id == contact_id,
               Conversation.status == ConversationStatus.OPEN)
        .order_by(Conversation.id.desc()).limit(1)
    )
    if conversation is None:
        return None
    # The ORM row has what close() sets; the session flushes it.
    conversations.close(session, now, conversation, "quick_exit")  # type: ignore[arg-type]
    return conversation.id


def expire_idle(session: Session, idle: timedelta, now: datetime) -> list[int]:
    """Sessions idle past the limit end ("idle"); their conversations stay open for staff,
    who now see that the contact has left. Returns those conversations."""
    stale = list(session.scalars(
        select(WebSession.address_hash)
        .where(WebSession.ended_at.is_(None), WebSession.last_seen_at < now - idle)
        .limit(500)
    ))
    changed = []
    for hash_ in stale:
        end_chat(session, hash_, "idle", now)
        changed.extend(session.scalars(
            select(Conversation.id).join(Contact, Contact.id == Conversation.contact_id)
            .where(Contact.address_hash == hash_,
                   Conversation.status == ConversationStatus.OPEN)
        ))
    return changed


def conversation_ids(session: Session, hash_: str) -> set[int]:
    """The web contact's conversations, whose changes its page listens for."""
    return set(session.scalars(
        select(Conversation.id).join(Contact, Contact.id == Conversation.contact_id)
        .where(Contact.address_hash == hash_)
    ))


@dataclass(frozen=True)
class Shown:
    id: int
    text: str
    at: datetime
    staff: bool  # written by a person, not the bot


def replies_since(session: Session, cipher: Cipher, hash_: str, after: int) -> list[Shown]:
    """What the outbox has sent this contact since message `after`, for the page to show.
    A reply the outbox refused or cancelled (an opted-out contact, a quick exit) is never
    shown: the page sees only what left through the one way out."""
    rows = session.execute(
        select(Message.id, Message.body_enc, Message.created_at, Message.author_staff_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(Contact, Contact.id == Conversation.contact_id)
        .join(Outbox, Outbox.message_id == Message.id)
        .where(Contact.address_hash == hash_, Message.direction == Direction.OUTBOUND,
               Message.id > after, Outbox.status.in_(SHOWN))
        .order_by(Message.id)
        .limit(100)
    ).all()
    return [Shown(r.id, cipher.decrypt(r.body_enc), r.created_at, r.author_staff_id is not None)
            for r in rows]


def mark_read(session: Session, hash_: str, message_ids: list[int], now: datetime) -> None:
    """The page has shown these replies: their outbox rows are delivered."""
    if not message_ids:
        return
    mine = (select(Message.id).join(Conversation, Conversation.id == Message.conversation_id)
            .join(Contact, Contact.id == Conversation.contact_id)
            .where(Contact.address_hash == hash_, Message.id.in_(message_ids)))
    session.execute(
        update(Outbox)
        .where(Outbox.message_id.in_(mine), Outbox.status == OutboxStatus.SENT)
        .values(status=OutboxStatus.DELIVERED, updated_at=now)
        .execution_options(synchronize_session=False)
    )

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

import functools
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, Update, bindparam, func, select, update
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


# The statements read for every message and every reply, built once on first use, with
# bound parameters: SQLAlchemy then reuses their compiled form and builds nothing per call.
# (Building the expression again each time was a good part of each read's cost.)


@functools.cache
def _live_query() -> Select[tuple[int, datetime | None, datetime]]:
    return (select(WebSession.id, WebSession.ended_at, WebSession.last_seen_at)
            .where(WebSession.address_hash == bindparam("hash")))


@functools.cache
def _touch() -> Update:
    return (update(WebSession).where(WebSession.id == bindparam("chat_id"))
            .values(last_seen_at=bindparam("seen_at"))
            .execution_options(synchronize_session=False))


def live_session(session: Session, hash_: str, idle: timedelta, now: datetime) -> int:
    """The open session's id for this address hash; ChatClosed if there is none."""
    row = session.execute(_live_query(), {"hash": hash_}).first()
    if row is None or row.ended_at is not None or now - row.last_seen_at > idle:
        raise ChatClosed()
    return row.id


def is_open(session: Session, hash_: str, idle: timedelta, now: datetime) -> bool:
    try:
        live_session(session, hash_, idle, now)
    except ChatClosed:
        return False
    return True


def seen(session: Session, hash_: str, idle: timedelta, now: datetime) -> int:
    """The page wrote: the session is alive until idle_minutes from now."""
    chat_id = live_session(session, hash_, idle, now)
    session.execute(_touch(), {"chat_id": chat_id, "seen_at": now})
    return chat_id


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


@functools.cache
def _conversations_query() -> Select[tuple[int]]:
    return (select(Conversation.id).join(Contact, Contact.id == Conversation.contact_id)
            .where(Contact.address_hash == bindparam("hash")))


def conversation_ids(session: Session, hash_: str) -> set[int]:
    """The web contact's conversations, whose changes its page listens for."""
    return set(session.scalars(_conversations_query(), {"hash": hash_}))


@dataclass(frozen=True)
class Shown:
    id: int
    text: str
    at: datetime
    staff: bool  # written by a person, not the bot


@functools.cache
def _replies_query() -> Select[tuple[int, str | None, datetime, int | None]]:
    return (select(Message.id, Message.body_enc, Message.created_at, Message.author_staff_id)
            .join(Outbox, Outbox.message_id == Message.id)
            .where(Outbox.address_hash == bindparam("hash"), Outbox.status.in_(SHOWN),
                   Outbox.message_id > bindparam("after"),
                   Message.direction == Direction.OUTBOUND)
            .order_by(Message.id)
            .limit(100))


def replies_since(session: Session, cipher: Cipher, hash_: str, after: int) -> list[Shown]:
    """What the outbox has sent this contact since message `after`, for the page to show.
    A reply the outbox refused or cancelled (an opted-out contact, a quick exit) is never
    shown: the page sees only what left through the one way out.

    Found by the outbox rows' own (indexed) address hash: this chat's rows only, however
    many every other chat has been sent."""
    rows = session.execute(_replies_query(), {"hash": hash_, "after": after}).all()
    return [Shown(r.id, cipher.decrypt(r.body_enc), r.created_at, r.author_staff_id is not None)
            for r in rows]


def mark_read(session: Session, hash_: str, message_ids: list[int], now: datetime) -> None:
    """The page has shown these replies: their outbox rows are delivered."""
    if not message_ids:
        return
    # Found by this chat's address hash, then each row by its id. A status test in the same
    # statement would let SQLite (which keeps no statistics here) choose the status index,
    # and walk every sent row of every chat.
    rows = session.execute(_shown_query(), {"hash": hash_, "ids": message_ids}).all()
    for row in rows:
        if row.status == OutboxStatus.SENT:
            session.execute(_deliver(), {"row_id": row.id, "at": now})


@functools.cache
def _shown_query() -> Select[tuple[int, str]]:
    return (select(Outbox.id, Outbox.status)
            .where(Outbox.address_hash == bindparam("hash"),
                   Outbox.message_id.in_(bindparam("ids", expanding=True))))


@functools.cache
def _deliver() -> Update:
    return (update(Outbox)
            .where(Outbox.id == bindparam("row_id"), Outbox.status == OutboxStatus.SENT)
            .values(status=OutboxStatus.DELIVERED, updated_at=bindparam("at"))
            .execution_options(synchronize_session=False))

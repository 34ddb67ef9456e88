"""Telling staff, without content, that something is waiting for them.

During hours, a new conversation can be announced in a staff Telegram chat
(`[console] staff_chat_id`): its number and channel and a console link, never a word the
contact wrote, nor who they are. At each opening the chat gets one line: how many
conversations wait, and how many emergencies came in while staff were out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.crypto import Cipher
from bot.domain import Channel, ConversationStatus, OutboxKind
from bot.hours import BusinessHours
from bot.storage import outbox
from bot.storage.after_commit import note
from bot.storage.models import Conversation, Escalation, OpeningDigest
from bot.storage.queries import insert_unless_taken

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StaffChat:
    chat_id: str
    public_url: str

    def address_hash(self, cipher: Cipher) -> str:
        return cipher.address_hash(Channel.TELEGRAM, self.chat_id)


def notice_text(conversation_id: int, channel: str, public_url: str) -> str:
    return (f"New conversation #{conversation_id} ({channel}) is waiting. "
            f"{public_url}/console/conversations/{conversation_id}")


def _to_chat(session: Session, chat: StaffChat, cipher: Cipher, text: str, now: datetime,
             conversation_id: int | None = None) -> None:
    outbox.enqueue(session, now, channel=Channel.TELEGRAM, kind=OutboxKind.STAFF_NOTICE,
                   address_enc=cipher.encrypt(chat.chat_id),
                   address_hash=chat.address_hash(cipher), body_enc=cipher.encrypt(text),
                   conversation_id=conversation_id)


def announce_new_conversation(
    session: Session, chat: StaffChat, cipher: Cipher, conversation_id: int, channel: str,
    now: datetime,
) -> None:
    _to_chat(session, chat, cipher, notice_text(conversation_id, channel, chat.public_url),
             now, conversation_id)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def digest_text(waiting: int, emergencies: int, public_url: str) -> str:
    return (f"Open now: {_count(waiting, 'conversation', 'conversations')} waiting, "
            f"{_count(emergencies, 'emergency', 'emergencies')} came in while staff were out. "
            f"{public_url}/console")


def opening_digest(session: Session, chat: StaffChat, cipher: Cipher, hours: BusinessHours,
                   now: datetime) -> datetime | None:
    """The staff chat's one line for the opening staff are in now, if it has not had it.
    Returns the opening it was sent for.

    Once per opening whatever the number of processes and restarts: the opening's time is
    unique in opening_digests, and only the transaction whose insert took it sends. Waiting
    is counted as the console's Waiting tab does (open, nobody has claimed it); emergencies
    are the escalations opened between the last closing and this opening."""
    opening = hours.opening_of(now)
    if opening is None:
        return None  # closed, or open all the time: no opening to speak of
    if session.scalar(select(OpeningDigest.id).where(OpeningDigest.opening_at == opening)):
        return None  # the usual case, read without writing
    taken = session.execute(
        insert_unless_taken(session, OpeningDigest, "opening_at")
        .values(opening_at=opening, sent_at=now).returning(OpeningDigest.id)
    ).scalar_one_or_none()
    if taken is None:
        return None
    waiting = session.scalar(select(func.count()).select_from(Conversation).where(
        Conversation.status == ConversationStatus.OPEN, Conversation.assigned_to.is_(None)))
    out = select(func.count()).select_from(Escalation).where(Escalation.opened_at < opening)
    closed_at = hours.last_closing(opening)
    if closed_at is not None:
        out = out.where(Escalation.opened_at >= closed_at)
    emergencies = session.scalar(out)
    _to_chat(session, chat, cipher, digest_text(waiting or 0, emergencies or 0,
                                                chat.public_url), now)
    note(session, log, "opening_digest", waiting=waiting, emergencies=emergencies)
    return opening


"""Telling staff, without content, that something is waiting for them.

During hours, a new conversation can be announced in a staff Telegram chat
(`[console] staff_chat_id`): its number and channel and a console link, never a word the
contact wrote, nor who they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from bot.crypto import Cipher
from bot.domain import Channel, OutboxKind
from bot.storage import outbox


@dataclass(frozen=True)
class StaffChat:
    chat_id: str
    public_url: str

    def address_hash(self, cipher: Cipher) -> str:
        return cipher.address_hash(Channel.TELEGRAM, self.chat_id)


def notice_text(conversation_id: int, channel: str, public_url: str) -> str:
    return (f"New conversation #{conversation_id} ({channel}) is waiting. "
            f"{public_url}/console/conversations/{conversation_id}")


def announce_new_conversation(
    session: Session, chat: StaffChat, cipher: Cipher, conversation_id: int, channel: str,
    now: datetime,
) -> None:
    text = notice_text(conversation_id, channel, chat.public_url)
    outbox.enqueue(session, now, channel=Channel.TELEGRAM, kind=OutboxKind.STAFF_NOTICE,
                   address_enc=cipher.encrypt(chat.chat_id),
                   address_hash=chat.address_hash(cipher), body_enc=cipher.encrypt(text),
                   conversation_id=conversation_id)

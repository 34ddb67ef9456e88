"""Entry for every contact message: one unit of work in one transaction.

Dedupe, keywords, triage, queue and escalation all happen here, and every reply is an outbox
row written in the same transaction, so a message is either taken in whole or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.orm import Session

from bot.crypto import Cipher
from bot.domain import (
    Channel,
    ConversationStatus,
    Direction,
    InboundMessage,
    IntakeCategory,
    IntakeState,
    Language,
    OutboxKind,
)
from bot.hours import BusinessHours, describe_opening
from bot.storage.after_commit import note
from bot.storage.models import Contact, Conversation, Message, Staff
from bot.storage.outbox import cancel_pending_to_contact, forget_contact
from bot.storage.queries import audit, record_provider_event
from bot.storage.rows import (
    CONTACTS,
    CONVERSATIONS,
    MESSAGES,
    ContactRow,
    ConversationRow,
    insert_row,
    load_sender,
)
from handlers import conversations, webchat
from handlers.escalation import EscalationDeps
from handlers.keywords import (
    EmergencyMatcher,
    Keyword,
    looks_spanish,
    match_keyword,
    parse_intake_answer,
)
from handlers.replies import FirstReplies, Templates, reply_text
from handlers.staff_commands import handle_staff_message
from handlers.staff_notices import StaffChat, announce_new_conversation

log = logging.getLogger(__name__)
EMERGENCY_REPLY_INTERVAL = timedelta(minutes=10)


@dataclass(frozen=True)
class InboundDeps:
    cipher: Cipher
    hours: BusinessHours
    templates: Templates
    emergency: EmergencyMatcher
    escalation: EscalationDeps
    first_replies: FirstReplies
    staff_chat: StaffChat | None = None  # told of new conversations during hours


@dataclass
class InboundOutcome:
    conversation_id: int | None = None
    keyword: str | None = None
    emergency: bool = False
    new_conversation: bool = False
    replies: list[str] = field(default_factory=list)  # template keys, for logs and tests
    staff: bool = False
    escalation_id: int | None = None  # opened by this message


def take_in(
    session: Session,
    msg: InboundMessage,
    deps: InboundDeps,
    now: datetime,
    *,
    auto_reply: bool = True,
) -> InboundOutcome:
    """Take one contact message in. Raises DuplicateMessage for a replayed provider id.

    auto_reply=False is for messages from the spool: the contact already had the safety
    text straight from the webhook, so the bot does not answer again, late.
    """
    hashes = deps.cipher.address_hashes(msg.channel, msg.address)
    record_provider_event(session, msg.channel, msg.provider_id, now, hashes)
    conn = session.connection()
    sender = load_sender(conn, msg.channel, hashes)
    address_hash = sender.address_hash
    # Staff first: a message from a registered staff address is never a contact's.
    staff = session.get(Staff, sender.staff_id) if sender.staff_id is not None else None
    if staff is not None:
        command = handle_staff_message(session, deps.escalation, staff, msg, now)
        note(session, log, "staff_message", channel=msg.channel.value, staff=staff.id)
        return InboundOutcome(staff=True, escalation_id=command.escalation_id)
    turn = _Turn(session, conn, deps, msg, now, auto_reply, sender.contact,
                 sender.conversation, address_hash)
    turn.handle()
    turn.save()
    conversation_id = turn.outcome.conversation_id
    if (deps.staff_chat is not None and turn.outcome.new_conversation
            and conversation_id is not None and deps.hours.is_open(now)):
        announce_new_conversation(session, deps.staff_chat, deps.cipher, conversation_id,
                                  msg.channel.value, now)
    # At DEBUG: a line per message cost 5% of the CPU of each (README, Benchmarks). The
    # counts are in triage_inbound_messages; an emergency logs its escalation at INFO.
    note(session, log, "inbound_taken", logging.DEBUG, channel=msg.channel.value,
         conversation=turn.outcome.conversation_id, keyword=turn.outcome.keyword,
         emergency=turn.outcome.emergency, replies=turn.outcome.replies)
    return turn.outcome


class _Turn:
    """What the bot does with one message. State lives on the instance for the
    length of the transaction only."""

    def __init__(
        self,
        session: Session,
        conn: Connection,
        deps: InboundDeps,
        msg: InboundMessage,
        now: datetime,
        auto_reply: bool,
        contact: ContactRow | None,
        conversation: ConversationRow | None,
        address_hash: str,
    ) -> None:
        self.session = session
        self.conn = conn
        self.deps = deps
        self.msg = msg
        self.now = now
        self.auto_reply = auto_reply
        self.contact = contact
        self.conversation = conversation
        self.address_hash = address_hash
        self.outcome = InboundOutcome()

    def save(self) -> None:
        for row in (self.contact, self.conversation):
            if row is not None:
                row.save(self.conn)
        if self.conversation is not None:
            self.outcome.conversation_id = self.conversation.id

    @property
    def open_conversation(self) -> ConversationRow | None:
        c = self.conversation
        return c if c is not None and c.status == ConversationStatus.OPEN else None

    def handle(self) -> None:
        text = self.msg.text
        opted_out = self.contact is not None and self.contact.opted_out
        keyword = None if self.msg.is_start else match_keyword(text, opted_out)
        self.outcome.keyword = keyword.value if keyword else None
        if keyword in _KEYWORD_ACTIONS:
            _KEYWORD_ACTIONS[keyword](self)
            return
        if keyword is Keyword.OPT_IN and opted_out:
            self._opt_in()
            return
        if keyword is Keyword.SAFE and self._awaiting_safe_answer():
            self._safe_answer(safe=True)
            return
        if keyword is Keyword.NOT_SAFE and self.open_conversation is not None:
            self._safe_answer(safe=False)
            return
        self._message(not_safe=keyword is Keyword.NOT_SAFE)

    # --- keywords -------------------------------------------------------------------------

    def _opt_out(self) -> None:
        contact = self._ensure_contact()
        already = contact.opted_out
        contact.opted_out = True
        if not already:
            contact.opted_out_at = self.now
        # A second STOP right after the first (a double tap) must not call back the first's
        # confirmation before it went out: the contact would never learn STOP worked.
        cancel_pending_to_contact(self.session, contact.id, self.now, keep_optout_confirm=already)
        if self.open_conversation is not None:
            self._store_inbound(self.open_conversation)
        audit(self.session, self.now, "contact_opted_out", "contact", contact.id)
        # Twilio answers STOP on SMS itself and blocks anything after; elsewhere we confirm,
        # once: a second STOP gets nothing.
        if self.msg.channel != "sms" and not already:
            self._reply("optout_confirm", kind=OutboxKind.OPTOUT_CONFIRM)

    def _opt_in(self) -> None:
        contact = self._ensure_contact()
        contact.opted_out = False
        contact.opted_out_at = None
        if contact.address_enc is None:  # erased while opted out: needed again to reply
            contact.address_enc = self.deps.cipher.encrypt(self.msg.address)
        if self.open_conversation is not None:
            self._store_inbound(self.open_conversation)
        audit(self.session, self.now, "contact_opted_in", "contact", contact.id)
        if self.msg.channel != "sms":  # Twilio confirms START on SMS itself
            self._reply("optin_confirm")

    def _info(self) -> ConversationRow:
        # The service description, hotlines and opt-out words; the conversation still queues.
        conversation = self._ensure_conversation()
        self._store_inbound(conversation)
        self._reply("help")
        return conversation

    def _help(self) -> None:
        # HELP / AYUDA may mean "I need help": the same answer as INFO, and an emergency too.
        # That answer carries 911 and the hotline, so it stands in for the emergency text and
        # counts as one for the 10-minute limit: a "help me" right after gets no second text.
        conversation = self._info()
        conversation.last_emergency_reply_at = self.now
        self._escalate(conversation, "keyword")

    def _quick_exit(self) -> None:
        conversation = self.open_conversation
        if self.contact is not None:
            cancel_pending_to_contact(self.session, self.contact.id, self.now)
        if conversation is not None:
            conversations.close(self.session, self.now, conversation, "quick_exit")
            self.outcome.conversation_id = conversation.id
        if self.msg.channel == Channel.WEB:  # EXIT typed in the chat ends the chat too
            webchat.end_session(self.session, self.address_hash, "exit", self.now)

    def _erase(self) -> None:
        language = self._language()
        contact = self.contact
        opted_out = contact is not None and contact.opted_out
        if contact is not None:
            self._erase_contact(contact)
        # Nothing, not even this, goes to an address that opted out. Otherwise the
        # confirmation is the one row that still knows the address, until it is sent.
        if self.auto_reply and not opted_out:
            self.outcome.replies.append("erase_confirm")
            text = reply_text(self.deps.templates, language, "erase_confirm")
            conversations.queue_reply(
                self.session, self.now, channel=self.msg.channel.value,
                address_enc=self.deps.cipher.encrypt(self.msg.address),
                address_hash=self.address_hash, body_enc=self.deps.cipher.encrypt(text),
                origin=self.msg.our_address, contact_id=None, conversation_id=None,
            )

    def _erase_contact(self, contact: ContactRow) -> None:
        ids = self.session.scalars(
            select(Conversation.id).where(Conversation.contact_id == contact.id)
        ).all()
        cancel_pending_to_contact(self.session, contact.id, self.now)
        forget_contact(self.session, contact.id)
        if ids:
            self.session.execute(delete(Message).where(Message.conversation_id.in_(ids)))
            self.session.execute(
                update(Conversation)
                .where(Conversation.id.in_(ids))
                .values(contact_id=None, outcome="erased", status=ConversationStatus.CLOSED)
            )
            self.session.execute(
                update(Conversation)
                .where(Conversation.id.in_(ids), Conversation.closed_at.is_(None))
                .values(closed_at=self.now)
            )
        for conversation_id in ids:
            audit(self.session, self.now, "conversation_erased", "conversation", conversation_id)
        self.conversation = None
        if contact.opted_out:
            # The opt-out outlives the erasure, as the keyed hash alone: without it the next
            # message would be answered as a first contact.
            contact.address_enc = None
            return
        self.session.execute(delete(Contact).where(Contact.id == contact.id))
        self.contact = None

    def _language_switch(self, language: Language) -> None:
        contact = self._ensure_contact()
        contact.language = language.value
        if self.open_conversation is None:
            self._message(not_safe=False)
            return
        self._store_inbound(self.open_conversation)
        self._reply("language_set")

    def _to_spanish(self) -> None:
        self._language_switch(Language.ES)

    def _to_english(self) -> None:
        self._language_switch(Language.EN)

    def _awaiting_safe_answer(self) -> bool:
        c = self.open_conversation
        return c is not None and c.intake_state == IntakeState.SAFE_ASKED

    def _safe_answer(self, safe: bool) -> None:
        conversation = self.open_conversation
        assert conversation is not None
        self._store_inbound(conversation)
        conversation.safe_to_text = safe
        if conversation.intake_state == IntakeState.SAFE_ASKED:
            conversation.intake_state = IntakeState.DONE
        self._reply("safe_yes" if safe else "safe_no")

    # --- ordinary messages ------------------------------------------------------------------

    def _message(self, not_safe: bool) -> None:
        emergency = self.deps.emergency.matches(self.msg.text)
        is_new = self.open_conversation is None
        first = None
        if (is_new or self.msg.is_start) and not emergency:
            first = self.deps.first_replies(self._language(), self.now)
        # A new conversation is written with its first-reply state at once (no UPDATE after).
        conversation = self._ensure_conversation(
            intake_state=IntakeState.ASKED if first else IntakeState.NOT_ASKED,
            after_hours_notice_for=first[1] if first else None,
            safe_to_text=False if not_safe else None,
        )
        self._store_inbound(conversation)
        if not_safe:
            conversation.safe_to_text = False
        if emergency and (is_new or self.msg.is_start):
            self._emergency(conversation, "keyword")
            return
        if first is not None:
            self._first_contact(conversation, *first)
            return
        intake = None
        if conversation.intake_state == IntakeState.ASKED:
            intake = parse_intake_answer(self.msg.text)
        if intake is not None:
            conversation.intake_category = intake.value
            conversation.intake_state = IntakeState.SAFE_ASKED
        if emergency or intake is IntakeCategory.NEED_HELP_NOW:
            self._emergency(conversation, "keyword" if emergency else "intake")
        if intake is not None:
            self._reply("safe_question")
        elif not self.outcome.emergency:
            self._after_hours_notice(conversation)

    def _first_contact(
        self, conversation: ConversationRow, text: str, opening: datetime | None
    ) -> None:
        conversation.intake_state = IntakeState.ASKED
        # The first reply already says when staff are back: it counts as this period's notice.
        conversation.after_hours_notice_for = opening
        self._reply_text("first_contact", text)

    def _after_hours_notice(self, conversation: ConversationRow) -> None:
        if self.deps.hours.is_open(self.now):
            return
        opening = self.deps.hours.next_opening(self.now)
        if opening is None or conversation.after_hours_notice_for == opening:
            return
        conversation.after_hours_notice_for = opening
        when = describe_opening(opening, self.now, self._language())
        self._reply("after_hours", next_opening=when)

    def _emergency(self, conversation: ConversationRow, trigger: str) -> None:
        self._escalate(conversation, trigger)
        last = conversation.last_emergency_reply_at
        if last is None or self.now - last >= EMERGENCY_REPLY_INTERVAL:
            conversation.last_emergency_reply_at = self.now
            self._reply("emergency")

    def _escalate(self, conversation: ConversationRow, trigger: str) -> None:
        self.outcome.emergency = True
        escalated = conversations.escalate(
            self.session, self.deps.escalation, conversation, self.msg.channel.value, trigger,
            self.now, new=self.outcome.new_conversation,
        )
        if escalated.opened:
            self.outcome.escalation_id = escalated.escalation_id

    # --- building blocks --------------------------------------------------------------------

    def _language(self) -> str:
        if self.contact is not None:
            return self.contact.language
        return Language.ES if looks_spanish(self.msg.text) else Language.EN

    def _ensure_contact(self) -> ContactRow:
        if self.contact is None:
            values = {
                "address_enc": self.deps.cipher.encrypt(self.msg.address),
                "language": self._language(),
                "opted_out": False,
                "opted_out_at": None,
            }
            contact_id = insert_row(self.conn, CONTACTS, channel=self.msg.channel.value,
                                    address_hash=self.address_hash, created_at=self.now,
                                    **values)
            self.contact = ContactRow(id=contact_id, **values)
        return self.contact

    def _ensure_conversation(self, **initial: Any) -> ConversationRow:
        """The open conversation, or a new one with `initial` values."""
        if self.open_conversation is not None:
            conversation = self.open_conversation
            conversation.last_inbound_at = self.now
            if conversation.awaiting_since is None:
                conversation.awaiting_since = self.now
            if self.msg.our_address:
                conversation.origin = self.msg.our_address
            self.outcome.conversation_id = conversation.id
            return conversation
        contact = self._ensure_contact()
        values: dict[str, Any] = {
            "status": ConversationStatus.OPEN,
            "intake_state": IntakeState.NOT_ASKED,
            "intake_category": None,
            "safe_to_text": None,
            "emergency": False,
            "priority": 0,
            "last_inbound_at": self.now,
            "last_emergency_reply_at": None,
            "after_hours_notice_for": None,
            "closed_at": None,
            "outcome": None,
            "origin": self.msg.our_address,
            "awaiting_since": self.now,
            **initial,
        }
        conversation_id = insert_row(self.conn, CONVERSATIONS, contact_id=contact.id,
                                     channel=self.msg.channel.value, opened_at=self.now,
                                     **values)
        self.conversation = ConversationRow(id=conversation_id, **values)
        self.outcome.new_conversation = True
        return self.conversation

    def _store_inbound(self, conversation: ConversationRow) -> None:
        insert_row(
            self.conn,
            MESSAGES,
            conversation_id=conversation.id,
            direction=Direction.INBOUND,
            body_enc=self.deps.cipher.encrypt(self.msg.text),
            media_count=self.msg.media_count,
            automatic=False,
            created_at=self.msg.received_at,
        )

    def _reply(self, key: str, kind: OutboxKind = OutboxKind.REPLY, **values: str) -> None:
        self._reply_text(key, reply_text(self.deps.templates, self._language(), key, **values),
                         kind)

    def _reply_text(self, key: str, text: str, kind: OutboxKind = OutboxKind.REPLY) -> None:
        contact = self.contact
        assert contact is not None
        if not self.auto_reply:
            return
        if contact.opted_out and kind != OutboxKind.OPTOUT_CONFIRM:
            return  # the contact still reaches the queue; nothing is sent to them
        self.outcome.replies.append(key)
        conversation = self.open_conversation
        assert contact.address_enc is not None  # only an opted-out contact has none
        conversations.queue_reply(
            self.session,
            self.now,
            channel=self.msg.channel.value,
            address_enc=contact.address_enc,
            address_hash=self.address_hash,
            body_enc=self.deps.cipher.encrypt(text),
            origin=self.msg.our_address,
            contact_id=contact.id,
            conversation_id=conversation.id if conversation else None,
            kind=kind,
        )


_KEYWORD_ACTIONS: Mapping[Keyword, Callable[[_Turn], object]] = {
    Keyword.OPT_OUT: _Turn._opt_out,
    Keyword.HELP: _Turn._help,
    Keyword.INFO: _Turn._info,
    Keyword.EXIT: _Turn._quick_exit,
    Keyword.ERASE: _Turn._erase,
    Keyword.LANG_ES: _Turn._to_spanish,
    Keyword.LANG_EN: _Turn._to_english,
}

"""What staff do to a conversation from the console: claim, release, transfer, reply, write
an internal note, close, reopen, set the category or priority, mark an emergency.

Each action is a unit of work (a plain function of a Session, run by the writer) and every
rule is kept here, on the server, in the same transaction as the change: a hidden button or
a crafted POST changes nothing. An action returns what happened (Done, Sent, Refused or
NeedsConfirmation) and writes one audit row when it changed something: who, what, when,
and never message text or an address.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.crypto import Cipher
from bot.domain import (
    PRIORITY_NORMAL,
    Channel,
    ConversationStatus,
    Direction,
    IntakeCategory,
    Observed,
    StaffRole,
)
from bot.storage.after_commit import observe
from bot.storage.models import Contact, Conversation, ConversationViewer, Staff
from bot.storage.queries import audit
from bot.storage.rows import MESSAGES, ConversationRow, insert_row
from handlers import conversations, webchat
from handlers.escalation import EscalationDeps
from handlers.staff_auth import SignedIn

# Twilio refuses a body over 1600 characters; Telegram one over 4096. Counted in UTF-16
# code units, as browsers count a textarea's maxlength, so the page and the server agree.
SMS_MAX_CHARS = 1600
OTHER_MAX_CHARS = 4096
NOTE_MAX_CHARS = 4096
OUTCOMES = ("referred", "information_given", "no_response", "spam")
PRIORITY_HIGH = 50
PRIORITY_URGENT = 80
PRIORITIES = (PRIORITY_NORMAL, PRIORITY_HIGH, PRIORITY_URGENT)
ERASED = "erased"  # the outcome of a conversation its contact erased


class Caution(enum.StrEnum):
    """Why a reply needs a second, explicit confirmation."""

    NOT_SAFE = "not_safe"  # the contact said NOT SAFE: someone else may read their phone
    QUIET = "quiet"  # the contact's last message is older than [privacy] quiet_window_hours


@dataclass(frozen=True)
class StaffDeps:
    cipher: Cipher
    escalation: EscalationDeps
    quiet_window: timedelta
    web_idle: timedelta = timedelta(minutes=30)


class ConversationNotFound(Exception):
    pass


@dataclass(frozen=True)
class Done:
    """The action was taken (or there was nothing to do: claiming your own again)."""

    changed: bool = True
    escalation_id: int | None = None  # an escalation opened, or already open


@dataclass(frozen=True)
class Sent:
    message_id: int


@dataclass(frozen=True)
class Refused:
    """Not done, and why. `reason` is a short code; `message` is safe to show staff."""

    reason: str
    message: str


@dataclass(frozen=True)
class NeedsConfirmation:
    """A reply waits for the person to confirm these cautions; nothing was queued."""

    cautions: tuple[Caution, ...]


Outcome = Done | Refused
ReplyOutcome = Sent | Refused | NeedsConfirmation
CLOSED = Refused("closed", "This conversation is closed. Reopen it first.")


@dataclass
class _Target:
    """A conversation an action works on, with its contact, locked for this transaction
    where the database can lock rows."""

    row: ConversationRow
    channel: str
    contact_id: int | None
    assigned_to: int | None
    opened_at: datetime
    first_staff_reply_at: datetime | None
    address_enc: str | None  # None once the contact erased it
    address_hash: str | None
    opted_out: bool

    @property
    def open(self) -> bool:
        return self.row.status == ConversationStatus.OPEN


def _load(session: Session, number: int) -> _Target:
    c = Conversation
    found = session.execute(
        select(*ConversationRow.columns(), c.channel, c.contact_id, c.assigned_to,
               c.opened_at, c.first_staff_reply_at, Contact.address_enc.label("address_enc"),
               Contact.address_hash.label("address_hash"),
               Contact.opted_out.label("opted_out"))
        .outerjoin(Contact, Contact.id == c.contact_id)
        .where(c.id == number)
        .with_for_update(of=c)
    ).mappings().first()
    if found is None:
        raise ConversationNotFound(number)
    row = ConversationRow.loaded(found)
    return _Target(row, found["channel"], found["contact_id"], found["assigned_to"],
                   found["opened_at"], found["first_staff_reply_at"], found["address_enc"],
                   found["address_hash"], bool(found["opted_out"]))


def _audit(session: Session, now: datetime, me: SignedIn, action: str, number: int,
           detail: str = "") -> None:
    audit(session, now, action, "conversation", number, actor=me.username,
          actor_staff_id=me.staff_id, detail=detail)


def _username(session: Session, staff_id: int | None) -> str:
    name = session.scalar(select(Staff.username).where(Staff.id == staff_id))
    return name or "someone"


def _set_assignee(session: Session, number: int, seen: int | None, to: int | None) -> bool:
    """Compare-and-set: only if the conversation is still held by `seen` (None: nobody), so
    of two people acting at once exactly one wins."""
    holder = Conversation.assigned_to
    touched = session.execute(
        update(Conversation)
        .where(Conversation.id == number, Conversation.status == ConversationStatus.OPEN,
               holder.is_(None) if seen is None else holder == seen)
        .values(assigned_to=to)
    ).rowcount
    return touched == 1


# --- claiming -------------------------------------------------------------------------------


def claim(session: Session, number: int, me: SignedIn, now: datetime) -> Outcome:
    target = _load(session, number)
    if not target.open:
        return CLOSED
    if target.assigned_to == me.staff_id:
        return Done(changed=False)
    if _set_assignee(session, number, None, me.staff_id):
        _audit(session, now, me, "conversation_claimed", number)
        return Done()
    holder = session.scalar(select(Conversation.assigned_to).where(Conversation.id == number))
    return Refused("taken", f"{_username(session, holder)} has already claimed it.")


def _may_move(target: _Target, me: SignedIn) -> bool:
    """Whoever holds a conversation may hand it on; nobody takes it from them but an
    admin (someone away with conversations claimed)."""
    return target.assigned_to in (None, me.staff_id) or me.has_role(StaffRole.ADMIN)


def release(session: Session, number: int, me: SignedIn, now: datetime) -> Outcome:
    target = _load(session, number)
    if not target.open:
        return CLOSED
    if target.assigned_to is None:
        return Done(changed=False)
    holder = _username(session, target.assigned_to)
    if not _may_move(target, me):
        return Refused("not_yours", f"{holder} has it. Only they or an admin can release it.")
    if not _set_assignee(session, number, target.assigned_to, None):
        return Refused("moved", "Someone else changed who has it. Look again.")
    detail = "" if target.assigned_to == me.staff_id else f"from={holder}"
    _audit(session, now, me, "conversation_released", number, detail)
    return Done()


def transfer(session: Session, number: int, me: SignedIn, to_staff_id: int,
             now: datetime) -> Outcome:
    target = _load(session, number)
    if not target.open:
        return CLOSED
    to = session.execute(
        select(Staff.id, Staff.username)
        .where(Staff.id == to_staff_id, Staff.disabled.is_(False))
    ).first()
    if to is None:
        return Refused("no_such_staff", "Choose an active staff member.")
    if target.assigned_to == to.id:
        return Refused("already", f"{to.username} has it already.")
    if not _may_move(target, me):
        holder = _username(session, target.assigned_to)
        return Refused("not_yours", f"{holder} has it. Only they or an admin can transfer it.")
    if not _set_assignee(session, number, target.assigned_to, to.id):
        return Refused("moved", "Someone else changed who has it. Look again.")
    detail = f"to={to.username}"
    if target.assigned_to not in (None, me.staff_id):
        detail += f" from={_username(session, target.assigned_to)}"
    _audit(session, now, me, "conversation_transferred", number, detail)
    return Done()


# --- writing --------------------------------------------------------------------------------


def max_chars(channel: str) -> int:
    return SMS_MAX_CHARS if channel == Channel.SMS else OTHER_MAX_CHARS


def length(text: str) -> int:
    """UTF-16 code units: what Twilio and a browser's maxlength count."""
    return len(text.encode("utf-16-le")) // 2


def clean_text(text: str, limit: int) -> str | Refused:
    """The text as it will be sent: browsers post a textarea's line breaks as CRLF, and
    blank lines around it are a slip of the keyboard."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return Refused("empty", "Write something first.")
    if length(text) > limit:
        return Refused("too_long", f"That is {length(text)} characters; at most {limit} "
                                   "can be sent here. Shorten it.")
    return text


def cautions(target: _Target, now: datetime, quiet_window: timedelta) -> tuple[Caution, ...]:
    found = []
    if target.row.safe_to_text is False:
        found.append(Caution.NOT_SAFE)
    if now - target.row.last_inbound_at > quiet_window:
        found.append(Caution.QUIET)
    return tuple(found)


def reply(session: Session, deps: StaffDeps, number: int, me: SignedIn, text: str,
          confirmed: frozenset[str], now: datetime) -> ReplyOutcome:
    """Queue a reply to the contact, on the channel they used and from the number they wrote
    to, through the outbox. Refused to an opted-out or erased contact and on a closed
    conversation; a contact who said NOT SAFE, or has gone quiet, needs each caution
    confirmed (`confirmed`), checked here against the conversation as it is now."""
    target = _load(session, number)
    if not target.open:
        return CLOSED
    if target.address_enc is None or target.address_hash is None:
        return Refused(ERASED, "The contact erased their address: nothing can be sent.")
    if target.opted_out:
        return Refused("opted_out", "The contact opted out (STOP). Nothing can be sent to "
                                    "them unless they write START.")
    if target.channel == Channel.WEB and not webchat.is_open(
            session, target.address_hash, deps.web_idle, now):
        return Refused("left", "The contact has left the chat. Web chat reaches a person "
                               "only while their chat is open: nothing can be sent now.")
    if target.channel not in deps.escalation.channels:
        return Refused("channel_off", "This channel is switched off in the config: nothing "
                                      "can be sent on it.")
    cleaned = clean_text(text, max_chars(target.channel))
    if isinstance(cleaned, Refused):
        return cleaned
    needed = cautions(target, now, deps.quiet_window)
    if any(c not in confirmed for c in needed):
        return NeedsConfirmation(needed)
    message_id = conversations.queue_reply(
        session,
        now,
        channel=target.channel,
        address_enc=target.address_enc,
        address_hash=target.address_hash,
        body_enc=deps.cipher.encrypt(cleaned),
        origin=target.row.origin,
        contact_id=target.contact_id,
        conversation_id=number,
        author_staff_id=me.staff_id,
    )
    assert message_id is not None
    values: dict[str, Any] = {"awaiting_since": None}  # answered: off the waiting clock
    if target.first_staff_reply_at is None:
        values["first_staff_reply_at"] = now
        observe(session, Observed.FIRST_STAFF_REPLY,
                (now - target.opened_at).total_seconds(), channel=target.channel)
    session.execute(update(Conversation).where(Conversation.id == number).values(**values))
    detail = f"channel={target.channel}"
    if needed:
        detail += " confirmed=" + ",".join(needed)
    _audit(session, now, me, "conversation_replied", number, detail)
    return Sent(message_id)


def note(session: Session, deps: StaffDeps, number: int, me: SignedIn, text: str,
         now: datetime) -> Outcome:
    """An internal note: in the history for staff, never sent to anyone."""
    target = _load(session, number)
    if target.row.outcome == ERASED:
        return Refused(ERASED, "The contact erased this conversation; it keeps no notes.")
    cleaned = clean_text(text, NOTE_MAX_CHARS)
    if isinstance(cleaned, Refused):
        return cleaned
    insert_row(session.connection(), MESSAGES, conversation_id=number,
               direction=Direction.NOTE, body_enc=deps.cipher.encrypt(cleaned), media_count=0,
               automatic=False, author_staff_id=me.staff_id, created_at=now)
    _audit(session, now, me, "note_added", number)
    return Done()


# --- the conversation's state ---------------------------------------------------------------


def close(session: Session, number: int, me: SignedIn, outcome: str,
          now: datetime) -> Outcome:
    if outcome not in OUTCOMES:
        return Refused("bad_outcome", "Choose how it ended.")
    target = _load(session, number)
    if not target.open:
        return Refused("closed", "It is closed already.")
    conversations.close(session, now, target.row, outcome, actor=me.username,
                        actor_staff_id=me.staff_id)
    target.row.save(session.connection())
    return Done()


def reopen(session: Session, number: int, me: SignedIn, now: datetime) -> Outcome:
    target = _load(session, number)
    if target.open:
        return Done(changed=False)
    if target.row.outcome == ERASED or target.contact_id is None:
        return Refused(ERASED, "The contact erased this conversation; it cannot be reopened.")
    # The bot adds a contact's messages to their latest conversation only: reopening an
    # older one would split what they write from what staff see.
    newer = session.scalar(
        select(Conversation.id)
        .where(Conversation.contact_id == target.contact_id, Conversation.id > number)
        .order_by(Conversation.id.desc())
        .limit(1)
    )
    if newer is not None:
        return Refused("newer", f"The contact has written again since: see #{newer}.")
    was = target.row.outcome or ""
    target.row.status = ConversationStatus.OPEN
    target.row.outcome = None
    target.row.closed_at = None
    target.row.save(session.connection())
    _audit(session, now, me, "conversation_reopened", number, f"was={was}")
    return Done()


def set_category(session: Session, number: int, me: SignedIn, category: str,
                 now: datetime) -> Outcome:
    if category not in {c.value for c in IntakeCategory}:
        return Refused("bad_category", "Choose one of the categories.")
    target = _load(session, number)
    if target.row.intake_category == category:
        return Done(changed=False)
    target.row.intake_category = category
    target.row.save(session.connection())
    _audit(session, now, me, "conversation_category_set", number, category)
    return Done()


def set_priority(session: Session, number: int, me: SignedIn, priority: int,
                 now: datetime) -> Outcome:
    if priority not in PRIORITIES:
        return Refused("bad_priority", "Choose one of the priorities.")
    target = _load(session, number)
    if target.row.priority == priority:
        return Done(changed=False)
    target.row.priority = priority
    target.row.save(session.connection())
    _audit(session, now, me, "conversation_priority_set", number, str(priority))
    return Done()


def mark_emergency(session: Session, deps: StaffDeps, number: int, me: SignedIn,
                   now: datetime) -> Outcome:
    """The same path as an emergency keyword: top of the queue, and an escalation that
    pages on-call, unless one is open already."""
    target = _load(session, number)
    if not target.open:
        return CLOSED
    escalated = conversations.escalate(
        session, deps.escalation, target.row, target.channel, "staff", now,
        actor=me.username, actor_staff_id=me.staff_id,
    )
    target.row.save(session.connection())
    detail = f"escalation={escalated.escalation_id}"
    if not escalated.opened:
        detail += " already_open"
    _audit(session, now, me, "conversation_marked_emergency", number, detail)
    return Done(escalation_id=escalated.escalation_id)


# --- who has it open ------------------------------------------------------------------------


def seen(session: Session, number: int, me: SignedIn, now: datetime) -> bool:
    """The page is open (its presence beat): False if there is no such conversation."""
    if session.scalar(select(Conversation.id).where(Conversation.id == number)) is None:
        return False
    insert = pg_insert if session.connection().dialect.name == "postgresql" else sqlite_insert
    statement = insert(ConversationViewer).values(conversation_id=number,
                                                  staff_id=me.staff_id, seen_at=now)
    session.execute(statement.on_conflict_do_update(
        index_elements=["conversation_id", "staff_id"],
        set_={"seen_at": statement.excluded.seen_at},
    ))
    return True


def view(session: Session, number: int, me: SignedIn, now: datetime) -> bool:
    """Someone opened the conversation: every view is audited."""
    if not seen(session, number, me, now):
        return False
    _audit(session, now, me, "conversation_viewed", number)
    return True

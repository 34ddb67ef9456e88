"""The console's read side: what staff pages show, as plain rows. SELECT only.

Each function is a synchronous read of a Session (run through bot.storage.reader) and
returns small frozen rows, so templates never touch the ORM or lazy-load anything.
Nothing here decrypts: the console route decrypts what a person is allowed to see.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from bot.domain import ConversationStatus, Direction, EscalationStatus
from bot.storage.models import (
    CannedReply,
    Contact,
    Conversation,
    ConversationViewer,
    Escalation,
    Message,
    Outbox,
    Staff,
)

QUEUE_LIMIT = 200  # rows on one queue tab; older waiting conversations are counted, not shown
VIEWING_FRESH = timedelta(seconds=75)  # a viewer's page refreshes its presence every 30 s


class Tab(enum.StrEnum):
    WAITING = "waiting"  # open, nobody has claimed it
    MINE = "mine"
    OPEN = "open"
    EMERGENCIES = "emergencies"
    CLOSED = "closed"


@dataclass(frozen=True)
class QueueRow:
    number: int
    channel: str
    category: str | None
    language: str
    emergency: bool
    priority: int
    status: str
    waiting_since: datetime | None  # None: staff have answered everything
    last_inbound_at: datetime
    opted_out: bool
    not_safe: bool
    quiet: bool  # past [privacy] quiet_window_hours: a reply needs a confirmation
    claimed_by: str | None
    viewers: tuple[str, ...]
    closed_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class QueueCounts:
    waiting: int
    mine: int
    open: int
    emergencies: int


def queue_counts(session: Session, staff_id: int) -> QueueCounts:
    c = Conversation
    row = session.execute(
        select(
            func.count().filter(c.assigned_to.is_(None)),
            func.count().filter(c.assigned_to == staff_id),
            func.count(),
            func.count().filter(c.emergency.is_(True)),
        ).where(c.status == ConversationStatus.OPEN)
    ).one()
    return QueueCounts(*(int(n) for n in row))


def queue(
    session: Session, tab: Tab, staff_id: int, now: datetime, quiet_window: timedelta,
    number: int | None = None,
) -> list[QueueRow]:
    """One tab of the queue, in the order staff work it: emergencies first, then higher
    priority, then whoever has waited longest."""
    c = Conversation
    claimer = aliased(Staff)
    waiting = func.coalesce(c.awaiting_since, c.opened_at)
    query = (
        select(c, Contact.language, Contact.opted_out, claimer.username)
        .outerjoin(Contact, Contact.id == c.contact_id)
        .outerjoin(claimer, claimer.id == c.assigned_to)
    )
    if tab is Tab.CLOSED:
        query = query.where(c.status == ConversationStatus.CLOSED)
        if number is not None:
            query = query.where(c.id == number)
        query = query.order_by(c.closed_at.desc(), c.id.desc())
    else:
        query = query.where(c.status == ConversationStatus.OPEN)
        if tab is Tab.WAITING:
            query = query.where(c.assigned_to.is_(None))
        elif tab is Tab.MINE:
            query = query.where(c.assigned_to == staff_id)
        elif tab is Tab.EMERGENCIES:
            query = query.where(c.emergency.is_(True))
        query = query.order_by(c.emergency.desc(), c.priority.desc(), waiting, c.id)
    found = session.execute(query.limit(QUEUE_LIMIT)).all()
    viewers = _viewers(session, [row[0].id for row in found], now)
    return [
        QueueRow(
            number=conv.id,
            channel=conv.channel,
            category=conv.intake_category,
            language=language or "en",
            emergency=conv.emergency,
            priority=conv.priority,
            status=conv.status,
            waiting_since=conv.awaiting_since,
            last_inbound_at=conv.last_inbound_at,
            opted_out=bool(opted_out),
            not_safe=conv.safe_to_text is False,
            quiet=now - conv.last_inbound_at > quiet_window,
            claimed_by=claimed_by,
            viewers=viewers.get(conv.id, ()),
            closed_at=conv.closed_at,
            outcome=conv.outcome,
        )
        for conv, language, opted_out, claimed_by in found
    ]


def _viewers(session: Session, numbers: list[int], now: datetime) -> dict[int, tuple[str, ...]]:
    if not numbers:
        return {}
    rows = session.execute(
        select(ConversationViewer.conversation_id, Staff.username)
        .join(Staff, Staff.id == ConversationViewer.staff_id)
        .where(and_(ConversationViewer.conversation_id.in_(numbers),
                    ConversationViewer.seen_at >= now - VIEWING_FRESH))
        .order_by(Staff.username)
    ).all()
    found: dict[int, list[str]] = {}
    for number, username in rows:
        found.setdefault(number, []).append(username)
    return {number: tuple(names) for number, names in found.items()}


# --- one conversation -------------------------------------------------------------------------

HISTORY_LIMIT = 1000  # the newest messages shown on a conversation page; older ones counted


@dataclass(frozen=True)
class ConversationView:
    number: int
    channel: str
    status: str
    category: str | None
    language: str
    emergency: bool
    priority: int
    opened_at: datetime
    last_inbound_at: datetime
    waiting_since: datetime | None
    first_staff_reply_at: datetime | None
    closed_at: datetime | None
    outcome: str | None
    opted_out: bool
    safe_to_text: bool | None
    address_exists: bool  # False once the contact erased their conversation
    quiet: bool  # past [privacy] quiet_window_hours
    claimed_by: str | None
    claimed_by_id: int | None
    open_escalation: int | None
    newer: int | None  # a later conversation of the same contact

    @property
    def open(self) -> bool:
        return self.status == ConversationStatus.OPEN

    @property
    def not_safe(self) -> bool:
        return self.safe_to_text is False


def conversation(
    session: Session, number: int, now: datetime, quiet_window: timedelta
) -> ConversationView | None:
    c = Conversation
    claimer = aliased(Staff)
    later = aliased(Conversation)
    open_escalation = (
        select(Escalation.id)
        .where(Escalation.conversation_id == c.id,
               Escalation.status != EscalationStatus.RESOLVED)
        .order_by(Escalation.id)
        .limit(1)
        .scalar_subquery()
    )
    newer = (
        select(func.max(later.id))
        .where(later.contact_id == c.contact_id, later.id > c.id)
        .scalar_subquery()
    )
    found = session.execute(
        select(c, Contact.language, Contact.opted_out, Contact.address_enc.is_not(None),
               claimer.username, open_escalation, newer)
        .outerjoin(Contact, Contact.id == c.contact_id)
        .outerjoin(claimer, claimer.id == c.assigned_to)
        .where(c.id == number)
    ).first()
    if found is None:
        return None
    conv, language, opted_out, has_address, claimed_by, escalation_id, newer_id = found
    return ConversationView(
        number=conv.id,
        channel=conv.channel,
        status=conv.status,
        category=conv.intake_category,
        language=language or "en",
        emergency=conv.emergency,
        priority=conv.priority,
        opened_at=conv.opened_at,
        last_inbound_at=conv.last_inbound_at,
        waiting_since=conv.awaiting_since,
        first_staff_reply_at=conv.first_staff_reply_at,
        closed_at=conv.closed_at,
        outcome=conv.outcome,
        opted_out=bool(opted_out),
        safe_to_text=conv.safe_to_text,
        address_exists=bool(has_address),
        quiet=now - conv.last_inbound_at > quiet_window,
        claimed_by=claimed_by,
        claimed_by_id=conv.assigned_to,
        open_escalation=escalation_id,
        newer=newer_id,
    )


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    direction: str  # Direction: in, out or note
    body_enc: str  # decrypted by the route that shows it
    created_at: datetime
    media_count: int
    automatic: bool  # the bot's own reply
    author: str | None  # the staff member who wrote a reply or note
    delivery: str | None  # an outbound message's outbox status (OutboxStatus)


@dataclass(frozen=True)
class History:
    entries: tuple[HistoryEntry, ...]  # oldest first
    earlier: int  # older messages not shown


def history(session: Session, number: int, limit: int = HISTORY_LIMIT) -> History:
    """The conversation's messages and notes in order, each outbound one with how far its
    delivery got."""
    author = aliased(Staff)
    newest_first = session.execute(
        select(Message.id, Message.direction, Message.body_enc, Message.created_at,
               Message.media_count, Message.automatic, author.username)
        .outerjoin(author, author.id == Message.author_staff_id)
        .where(Message.conversation_id == number)
        .order_by(Message.id.desc())
        .limit(limit)
    ).all()
    rows = list(reversed(newest_first))
    outbound = [r.id for r in rows if r.direction == Direction.OUTBOUND]
    delivery: dict[int, str] = {}
    if outbound:
        for message_id, status in session.execute(
            select(Outbox.message_id, Outbox.status)
            .where(Outbox.message_id.in_(outbound))
            .order_by(Outbox.id)
        ):
            delivery[message_id] = status
    earlier = 0
    if len(rows) == limit:
        earlier = int(session.scalar(
            select(func.count()).select_from(Message)
            .where(Message.conversation_id == number, Message.id < rows[0].id)
        ) or 0)
    return History(
        entries=tuple(
            HistoryEntry(r.id, r.direction, r.body_enc, r.created_at, r.media_count,
                         r.automatic, r.username, delivery.get(r.id))
            for r in rows
        ),
        earlier=earlier,
    )


def viewers(session: Session, number: int, now: datetime) -> tuple[str, ...]:
    """Who has the conversation open right now."""
    return _viewers(session, [number], now).get(number, ())


@dataclass(frozen=True)
class StaffOption:
    id: int
    username: str
    role: str


def active_staff(session: Session) -> list[StaffOption]:
    """Whom a conversation can be transferred to."""
    rows = session.execute(
        select(Staff.id, Staff.username, Staff.role)
        .where(Staff.disabled.is_(False))
        .order_by(Staff.username)
    ).all()
    return [StaffOption(*row) for row in rows]


@dataclass(frozen=True)
class CannedOption:
    id: int
    title: str
    language: str
    body: str


def canned_replies(session: Session, language: str) -> list[CannedOption]:
    """Every canned reply, those in the contact's language first."""
    rows = session.execute(
        select(CannedReply.id, CannedReply.title, CannedReply.language, CannedReply.body)
        .order_by((CannedReply.language != language), CannedReply.title, CannedReply.id)
    ).all()
    return [CannedOption(*row) for row in rows]

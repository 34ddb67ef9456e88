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

from bot.domain import ConversationStatus
from bot.storage.models import Contact, Conversation, ConversationViewer, Staff

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

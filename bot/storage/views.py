"""The console's read side: what staff pages show, as plain rows. SELECT only.

Each function is a synchronous read of a Session (run through bot.storage.reader) and
returns small frozen rows, so templates never touch the ORM or lazy-load anything.
Nothing here decrypts: the console route decrypts what a person is allowed to see.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from bot.domain import Channel, ConversationStatus, Direction, EscalationStatus, OutboxKind
from bot.storage.models import (
    AuditEntry,
    CannedReply,
    ConsoleSession,
    Contact,
    Conversation,
    ConversationViewer,
    Escalation,
    Message,
    OncallOverride,
    Outbox,
    Staff,
    WebSession,
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


# --- escalations ---------------------------------------------------------------------------
# Pages carry no content, and neither do these rows: no message text, no address, not even
# a page's body (which quotes the contact when include_preview is on). The conversation's
# number is the way to the content, through the conversation page and its rights.

ESCALATION_LIST_LIMIT = 200


@dataclass(frozen=True)
class EscalationRow:
    number: int
    channel: str
    trigger: str
    status: str  # open, acked, resolved
    conversation: int | None  # None once the conversation has been erased
    step: int  # the next step of the ladder to fire, counting from 0
    next_step_at: datetime | None  # when it fires (for an acknowledged one: the ack timeout)
    opened_at: datetime
    acked_at: datetime | None
    acked_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note_enc: str | None  # staff words, decrypted by the route that shows them


@dataclass(frozen=True)
class PageRow:
    """One page sent (or being sent) to a staff member: an outbox row of kind "page"."""

    id: int
    staff: str | None  # None once the account has been deleted
    channel: str
    status: str  # pending, sending, sent, delivered, failed, refused, cancelled
    attempts: int
    error: str | None  # a provider's code ("undelivered:30003"), never text
    queued_at: datetime
    sent_at: datetime | None
    updated_at: datetime
    failover_of: int | None  # the page on the other channel this one stands in for


@dataclass(frozen=True)
class EscalationEvent:
    """An entry in an escalation's audit trail: opened, a ladder step, a fail-over, an ack,
    an ack timeout, a resolve."""

    id: int
    at: datetime
    action: str
    actor: str
    detail: str  # key=value words written by handlers.escalation, never content


@dataclass(frozen=True)
class EscalationTimeline:
    events: tuple[EscalationEvent, ...]
    pages: tuple[PageRow, ...]

    @property
    def entries(self) -> list[EscalationEvent | PageRow]:
        """Events and pages in one list, in time order. A ladder step (or a fail-over) is
        audited in the transaction that queues its pages, at the same moment: its pages
        follow it, before anything else that happened at that moment."""
        queued = {"page_queued", "page_failover"}
        anchors: dict[datetime, int] = {}
        for event in self.events:
            if event.action in queued:
                anchors[event.at] = max(anchors.get(event.at, 0), event.id)

        def key(entry: EscalationEvent | PageRow) -> tuple[datetime, int, int, int]:
            if isinstance(entry, PageRow):
                return entry.queued_at, anchors.get(entry.queued_at, 2**63), 1, entry.id
            return entry.at, entry.id, 0, 0

        return sorted([*self.events, *self.pages], key=key)

    @property
    def paged(self) -> list[str]:
        """Who has been paged, in the order they were first paged."""
        return list(dict.fromkeys(p.staff for p in self.pages if p.staff is not None))


def _escalation_rows(session: Session, *where: ColumnElement[bool],
                     order: tuple[ColumnElement[object], ...], limit: int) -> list[EscalationRow]:
    e = Escalation
    acker, resolver = aliased(Staff), aliased(Staff)
    found = session.execute(
        select(e, acker.username, resolver.username)
        .outerjoin(acker, acker.id == e.acked_by)
        .outerjoin(resolver, resolver.id == e.resolved_by)
        .where(*where)
        .order_by(*order)
        .limit(limit)
    ).all()
    return [
        EscalationRow(
            number=row.id, channel=row.channel, trigger=row.trigger, status=row.status,
            conversation=row.conversation_id, step=row.step, next_step_at=row.next_step_at,
            opened_at=row.opened_at, acked_at=row.acked_at, acked_by=acked_by,
            resolved_at=row.resolved_at, resolved_by=resolved_by,
            resolution_note_enc=row.resolution_note_enc,
        )
        for row, acked_by, resolved_by in found
    ]


def open_escalations(session: Session) -> list[EscalationRow]:
    """Escalations not resolved yet: those still paging first, then the acknowledged ones;
    the longest-running first in each."""
    e = Escalation
    return _escalation_rows(
        session, e.status != EscalationStatus.RESOLVED,
        order=((e.status == EscalationStatus.ACKED).asc(), e.opened_at, e.id),
        limit=ESCALATION_LIST_LIMIT,
    )


def recent_escalations(session: Session, now: datetime, within: timedelta) -> list[EscalationRow]:
    """Escalations resolved in the last `within`, the newest first."""
    e = Escalation
    return _escalation_rows(
        session, e.status == EscalationStatus.RESOLVED, e.resolved_at >= now - within,
        order=(e.resolved_at.desc(), e.id.desc()), limit=ESCALATION_LIST_LIMIT,
    )


def escalation(session: Session, number: int) -> EscalationRow | None:
    found = _escalation_rows(session, Escalation.id == number, order=(), limit=1)
    return found[0] if found else None


def escalation_timeline(session: Session, number: int) -> EscalationTimeline:
    """Every page sent for an escalation and every entry in its audit trail, each in time
    order (the template merges them)."""
    pages = session.execute(
        select(Outbox.id, Staff.username, Outbox.channel, Outbox.status, Outbox.attempts,
               Outbox.last_error, Outbox.created_at, Outbox.sent_at, Outbox.updated_at,
               Outbox.failover_of)
        .outerjoin(Staff, Staff.id == Outbox.staff_id)
        .where(Outbox.escalation_id == number, Outbox.kind == OutboxKind.PAGE)
        .order_by(Outbox.created_at, Outbox.id)
    ).all()
    events = session.execute(
        select(AuditEntry.id, AuditEntry.at, AuditEntry.action, AuditEntry.actor,
               AuditEntry.detail)
        .where(AuditEntry.target_type == "escalation", AuditEntry.target_id == number)
        .order_by(AuditEntry.at, AuditEntry.id)
    ).all()
    return EscalationTimeline(
        events=tuple(EscalationEvent(*row) for row in events),
        pages=tuple(PageRow(*row) for row in pages),
    )


# --- admin -------------------------------------------------------------------------------------

AUDIT_PAGE = 100  # rows on one page of the audit log


@dataclass(frozen=True)
class StaffRow:
    """An account as the admin pages show it: whether a phone or Telegram chat is
    registered, never what it is."""

    id: int
    username: str
    role: str
    two_factor: bool
    disabled: bool
    has_phone: bool
    has_telegram: bool
    created_at: datetime
    open_sessions: int


def staff_accounts(session: Session, fresh_since: datetime,
                   staff_id: int | None = None) -> list[StaffRow]:
    """Every account by name (or the one `staff_id`), with its sessions seen since
    `fresh_since` (the idle timeout ago)."""
    sessions = (
        select(ConsoleSession.staff_id, func.count().label("n"))
        .where(ConsoleSession.ended_at.is_(None), ConsoleSession.last_seen_at >= fresh_since)
        .group_by(ConsoleSession.staff_id)
        .subquery()
    )
    query = (select(Staff, sessions.c.n)
             .outerjoin(sessions, sessions.c.staff_id == Staff.id)
             .order_by(Staff.username))
    if staff_id is not None:
        query = query.where(Staff.id == staff_id)
    return [
        StaffRow(s.id, s.username, s.role, s.totp_confirmed_at is not None, s.disabled,
                 s.phone_enc is not None, s.telegram_enc is not None, s.created_at, n or 0)
        for s, n in session.execute(query).all()
    ]


@dataclass(frozen=True)
class OverrideRow:
    id: int
    username: str
    starts_at: datetime
    until: datetime | None  # None: until further notice
    active: bool


def overrides(session: Session, now: datetime, ended_since: datetime,
              limit: int = 20) -> list[OverrideRow]:
    """Overrides running now, and those that ended after `ended_since`, newest first."""
    rows = session.execute(
        select(OncallOverride, Staff.username)
        .join(Staff, Staff.id == OncallOverride.staff_id)
        .where(or_(OncallOverride.until.is_(None), OncallOverride.until > ended_since))
        .order_by(OncallOverride.id.desc())
        .limit(limit)
    ).all()
    return [
        OverrideRow(o.id, username, o.starts_at, o.until,
                    o.starts_at <= now and (o.until is None or o.until > now))
        for o, username in rows
    ]


@dataclass(frozen=True)
class CannedRow:
    id: int
    title: str
    language: str
    body: str  # staff text, not a contact's: stored plain
    updated_at: datetime


def canned_replies(session: Session, language: str | None = None,
                   canned_id: int | None = None) -> list[CannedRow]:
    query = select(CannedReply).order_by(CannedReply.language, CannedReply.title,
                                         CannedReply.id)
    if language is not None:
        query = query.where(CannedReply.language == language)
    if canned_id is not None:
        query = query.where(CannedReply.id == canned_id)
    return [CannedRow(c.id, c.title, c.language, c.body, c.updated_at)
            for c in session.scalars(query)]


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: int | None
    target_name: str | None  # the account's name when the target is a staff account
    detail: str


def audit_log(session: Session, user: str | None = None, conversation: int | None = None,
              before: int | None = None, limit: int = AUDIT_PAGE) -> list[AuditRow]:
    """The audit log, newest first, a page at a time (`before` is the last id shown).
    `user` is who acted: an account's name, or "cli" / "system". `conversation` is a
    conversation's number: what was done to it, and to its escalations."""
    a = AuditEntry
    target = aliased(Staff)
    query = (select(a, target.username)
             .outerjoin(target, and_(a.target_type == "staff", target.id == a.target_id))
             .order_by(a.id.desc()).limit(limit))
    if user is not None:
        account = session.scalar(select(Staff.id).where(Staff.username == user))
        # An account's actions are found by its id (indexed); "cli" and "system" by name.
        query = query.where(a.actor_staff_id == account if account is not None
                            else a.actor == user)
    if conversation is not None:
        escalations = select(Escalation.id).where(Escalation.conversation_id == conversation)
        query = query.where(or_(
            and_(a.target_type == "conversation", a.target_id == conversation),
            and_(a.target_type == "escalation", a.target_id.in_(escalations)),
        ))
    if before is not None:
        query = query.where(a.id < before)
    return [AuditRow(e.id, e.at, e.actor, e.action, e.target_type, e.target_id, name,
                     e.detail) for e, name in session.execute(query).all()]


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
    left: bool = False  # a web contact whose chat has ended: nothing can reach them now

    @property
    def open(self) -> bool:
        return self.status == ConversationStatus.OPEN

    @property
    def not_safe(self) -> bool:
        return self.safe_to_text is False


def conversation(
    session: Session, number: int, now: datetime, quiet_window: timedelta,
    web_idle: timedelta = timedelta(minutes=30),
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
    chat_open = and_(WebSession.ended_at.is_(None), WebSession.last_seen_at >= now - web_idle)
    found = session.execute(
        select(c, Contact.language, Contact.opted_out, Contact.address_enc.is_not(None),
               claimer.username, open_escalation, newer, func.coalesce(chat_open, False))
        .outerjoin(Contact, Contact.id == c.contact_id)
        .outerjoin(claimer, claimer.id == c.assigned_to)
        .outerjoin(WebSession, WebSession.address_hash == Contact.address_hash)
        .where(c.id == number)
    ).first()
    if found is None:
        return None
    (conv, language, opted_out, has_address, claimed_by, escalation_id, newer_id,
     chatting) = found
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
        left=conv.channel == Channel.WEB and not chatting,
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


def canned_for_reply(session: Session, language: str) -> list[CannedRow]:
    """Every canned reply, those in the contact's language first."""
    rows = session.scalars(
        select(CannedReply)
        .order_by((CannedReply.language != language), CannedReply.title, CannedReply.id)
    )
    return [CannedRow(c.id, c.title, c.language, c.body, c.updated_at) for c in rows]

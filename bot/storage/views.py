"""The console's read side: what staff pages show, as plain rows. SELECT only.

Each function is a synchronous read of a Session (run through bot.storage.reader) and
returns small frozen rows, so templates never touch the ORM or lazy-load anything.
Nothing here decrypts: the console route decrypts what a person is allowed to see.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    and_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
)
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
    UTCDateTime,
    WebSession,
)

QUEUE_LIMIT = 200  # rows on one page of a queue tab
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


@dataclass(frozen=True)
class OpenCounts:
    """The open conversations counted once for everyone: a page picks its own "mine"."""

    waiting: int
    open: int
    emergencies: int
    by_staff: dict[int, int]  # claimed, by whom

    def of(self, staff_id: int) -> QueueCounts:
        return QueueCounts(self.waiting, self.by_staff.get(staff_id, 0), self.open,
                           self.emergencies)


def open_counts(session: Session) -> OpenCounts:
    c = Conversation
    rows = session.execute(
        select(c.assigned_to, func.count(), func.count().filter(c.emergency.is_(True)))
        .where(c.status == ConversationStatus.OPEN)
        .group_by(c.assigned_to)
    ).all()
    by_staff = {staff: int(n) for staff, n, _ in rows if staff is not None}
    return OpenCounts(
        waiting=sum(int(n) for staff, n, _ in rows if staff is None),
        open=sum(int(n) for _, n, _ in rows),
        emergencies=sum(int(e) for _, _, e in rows),
        by_staff=by_staff,
    )


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    after: int | None  # more follow: the number the next page starts after (?after=)


def queue(
    session: Session, tab: Tab, staff_id: int, now: datetime, quiet_window: timedelta,
    number: int | None = None, after: int | None = None,
) -> QueuePage:
    """One page of a tab of the queue, in the order staff work it: emergencies first, then
    higher priority, then whoever has waited longest (closed ones: the latest closed first).

    Pages are keyset, not OFFSET: the next page starts after the conversation `after` (the
    last one shown), where it now sorts, so a deep page costs what the first does (if that
    conversation is gone, the tab starts again from the top). First the page's numbers,
    from the queue's covering index and sorted on its narrow entries; then only those rows
    are read, with their contact and claimer. The statements are built once per kind of
    page and run with parameters: building them cost more than running them."""
    params: dict[str, Any] = {"staff_id": staff_id, "number": number}
    anchor = None
    if after is not None:
        anchor = session.execute(_anchor_query(tab is Tab.CLOSED), {"number": after}).first()
        if anchor is not None:
            params.update(anchor._asdict())
    numbers = list(session.scalars(
        _numbers_query(tab, number is not None, anchor is not None), params))
    more = len(numbers) > QUEUE_LIMIT
    numbers = numbers[:QUEUE_LIMIT]
    found = {row[0]: row for row in session.execute(_rows_query(), {"numbers": numbers})} \
        if numbers else {}
    viewers = _viewers(session, numbers, now)
    rows = []
    for n in numbers:
        if n not in found:
            continue  # gone between the two reads (erased just now)
        # Unpacked, not read by name: a few hundred rows, and by-name access cost more than
        # the query.
        (number_, channel, category, emergency, priority, status, waiting_since,
         last_inbound_at, safe_to_text, closed_at, outcome, language, opted_out,
         claimed_by) = found[n]
        rows.append(QueueRow(
            number=number_, channel=channel, category=category, language=language or "en",
            emergency=emergency, priority=priority, status=status,
            waiting_since=waiting_since, last_inbound_at=last_inbound_at,
            opted_out=bool(opted_out), not_safe=safe_to_text is False,
            quiet=now - last_inbound_at > quiet_window, claimed_by=claimed_by,
            viewers=viewers.get(number_, ()), closed_at=closed_at, outcome=outcome,
        ))
    return QueuePage(rows, numbers[-1] if more else None)


def _waiting() -> ColumnElement[datetime]:
    c = Conversation
    return func.coalesce(c.awaiting_since, c.opened_at)


@cache
def _anchor_query(closed: bool) -> Select[Any]:
    """Where the conversation a page starts after sorts: its keys in the tab's order."""
    c = Conversation
    keys = ((c.closed_at.label("a_closed_at"),) if closed else
            (c.emergency.label("a_emergency"), c.priority.label("a_priority"),
             _waiting().label("a_waiting")))
    return select(*keys, c.id.label("a_id")).where(c.id == bindparam("number"))


@cache
def _numbers_query(tab: Tab, by_number: bool, paged: bool) -> Select[Any]:
    c = Conversation
    if tab is Tab.CLOSED:
        where = [c.status == ConversationStatus.CLOSED]
        if by_number:
            where.append(c.id == bindparam("number"))
        order: tuple[ColumnElement[Any], ...] = (c.closed_at.desc(), c.id.desc())
        if paged:
            where.append(tuple_(c.closed_at, c.id) < tuple_(
                bindparam("a_closed_at", type_=UTCDateTime), bindparam("a_id")))
    else:
        where = [c.status == ConversationStatus.OPEN]
        if tab is Tab.WAITING:
            where.append(c.assigned_to.is_(None))
        elif tab is Tab.MINE:
            where.append(c.assigned_to == bindparam("staff_id"))
        elif tab is Tab.EMERGENCIES:
            where.append(c.emergency.is_(True))
        order = (c.emergency.desc(), c.priority.desc(), _waiting(), c.id)
        if paged:
            emergency = bindparam("a_emergency", type_=Boolean)
            priority, waiting = bindparam("a_priority"), bindparam("a_waiting",
                                                                   type_=UTCDateTime)
            same_emergency, same_priority = c.emergency == emergency, c.priority == priority
            # emergency DESC, priority DESC, waiting, id: a mixed order, so spelled out.
            where.append(or_(
                c.emergency < emergency,
                and_(same_emergency, c.priority < priority),
                and_(same_emergency, same_priority, _waiting() > waiting),
                and_(same_emergency, same_priority, _waiting() == waiting,
                     c.id > bindparam("a_id")),
            ))
    return select(c.id).where(*where).order_by(*order).limit(QUEUE_LIMIT + 1)


@cache
def _rows_query() -> Select[Any]:
    c = Conversation
    claimer = aliased(Staff)
    return (
        select(c.id, c.channel, c.intake_category, c.emergency, c.priority, c.status,
               c.awaiting_since, c.last_inbound_at, c.safe_to_text, c.closed_at, c.outcome,
               Contact.language, Contact.opted_out, claimer.username)
        .outerjoin(Contact, Contact.id == c.contact_id)
        .outerjoin(claimer, claimer.id == c.assigned_to)
        .where(c.id.in_(bindparam("numbers", expanding=True)))
    )


def _viewers(session: Session, numbers: list[int], now: datetime) -> dict[int, tuple[str, ...]]:
    if not numbers:
        return {}
    rows = session.execute(_viewers_query(),
                           {"numbers": numbers, "fresh_since": now - VIEWING_FRESH}).all()
    found: dict[int, list[str]] = {}
    for number, username in rows:
        found.setdefault(number, []).append(username)
    return {number: tuple(names) for number, names in found.items()}


@cache
def _viewers_query() -> Select[Any]:
    v = ConversationViewer
    return (
        select(v.conversation_id, Staff.username)
        .join(Staff, Staff.id == v.staff_id)
        .where(v.conversation_id.in_(bindparam("numbers", expanding=True)),
               v.seen_at >= bindparam("fresh_since", type_=UTCDateTime))
        .order_by(Staff.username)
    )


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

# Messages on one page of a conversation, the newest first; older ones a page at a time
# (keyset, by message id), so a conversation thousands of messages long opens as fast as a
# short one.
HISTORY_LIMIT = 200


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


@cache
def _conversation_query() -> Select[Any]:
    # Built once, run with parameters: building it cost more than running it.
    c = Conversation
    claimer = aliased(Staff)
    later = aliased(Conversation)
    open_escalation = (
        select(Escalation.id)
        .where(Escalation.conversation_id == c.id,
               Escalation.status != bindparam("resolved"))
        .order_by(Escalation.id)
        .limit(1)
        .scalar_subquery()
    )
    newer = (
        select(func.max(later.id))
        .where(later.contact_id == c.contact_id, later.id > c.id)
        .scalar_subquery()
    )
    chat_open = and_(WebSession.ended_at.is_(None),
                     WebSession.last_seen_at >= bindparam("chat_since", type_=UTCDateTime))
    return (
        select(c, Contact.language, Contact.opted_out, Contact.address_enc.is_not(None),
               claimer.username, open_escalation, newer, func.coalesce(chat_open, False))
        .outerjoin(Contact, Contact.id == c.contact_id)
        .outerjoin(claimer, claimer.id == c.assigned_to)
        .outerjoin(WebSession, WebSession.address_hash == Contact.address_hash)
        .where(c.id == bindparam("number"))
    )


def conversation(
    session: Session, number: int, now: datetime, quiet_window: timedelta,
    web_idle: timedelta = timedelta(minutes=30),
) -> ConversationView | None:
    found = session.execute(_conversation_query(), {
        "number": number, "resolved": EscalationStatus.RESOLVED, "chat_since": now - web_idle,
    }).first()
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


@cache
def _history_query(older: bool) -> Select[Any]:
    author = aliased(Staff)
    query = (
        select(Message.id, Message.direction, Message.body_enc, Message.created_at,
               Message.media_count, Message.automatic, author.username)
        .outerjoin(author, author.id == Message.author_staff_id)
        .where(Message.conversation_id == bindparam("number"))
    )
    if older:
        query = query.where(Message.id < bindparam("before"))
    return query.order_by(Message.id.desc()).limit(bindparam("limit"))


def history(session: Session, number: int, limit: int = HISTORY_LIMIT,
            before: int | None = None) -> History:
    """The conversation's newest messages and notes (or those before message `before`),
    oldest first, each outbound one with how far its delivery got."""
    newest_first = session.execute(_history_query(before is not None),
                                   {"number": number, "before": before, "limit": limit}).all()
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

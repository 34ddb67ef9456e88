"""Emergencies in the console: the open and recent escalations, one escalation's page (the
link in every page SMS leads here), and acknowledge and resolve.

Acknowledge and resolve run the same handlers as ACK and RESOLVE by text
(handlers.escalation.acknowledge / resolve), inside a unit of work that loads the staff
member. Nothing here shows contact text: pages carry none, and the conversation's own page,
with its rights and its audit, is the way to the content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.console.deps import ConsoleDeps, deps, me
from bot.console.formatting import waited
from bot.console.pages import render
from bot.console.security import Access, access
from bot.domain import EscalationStatus, OutboxStatus
from bot.storage.models import Escalation, Staff
from bot.storage.views import (
    EscalationEvent,
    EscalationRow,
    EscalationTimeline,
    PageRow,
    escalation,
    escalation_timeline,
    open_escalations,
    recent_escalations,
)
from handlers.escalation import (
    LEVELS,
    MAX_ID,
    ONCALL_ROLES,
    EscalationDeps,
    acknowledge,
    recipients,
    resolve,
    who_is_on_call,
)

routes = web.RouteTableDef()
RECENT = timedelta(days=7)
NOTE_LIMIT = 2000
# Who may acknowledge and resolve: the on-call role and admins, the people the ladder pages.
# An acknowledgement stops the pages to everyone on the rota, so it has to come from someone
# who has taken on answering emergencies at any hour. Staff (office hours, never paged) can
# see every escalation and open its conversation, but cannot silence the pages.
MAY_ACT = tuple(str(role) for role in ONCALL_ROLES)

TRIGGERS = {
    "keyword": "Emergency words in a message",
    "intake": "Chose \"need help now\"",
    "staff": "Marked an emergency by staff",
}
STATUSES: dict[str, str] = {
    EscalationStatus.OPEN: "Not acknowledged",
    EscalationStatus.ACKED: "Acknowledged",
    EscalationStatus.RESOLVED: "Resolved",
}
PAGE_STATUSES: dict[str, str] = {
    OutboxStatus.PENDING: "Waiting to send",
    OutboxStatus.SENDING: "Sending",
    OutboxStatus.SENT: "Sent",
    OutboxStatus.DELIVERED: "Delivered",
    OutboxStatus.FAILED: "Failed",
    OutboxStatus.REFUSED: "Not sent: the number opted out",
    OutboxStatus.CANCELLED: "Cancelled",
}
PAGE_TONES: dict[str, str] = {
    OutboxStatus.PENDING: "warn", OutboxStatus.SENDING: "warn", OutboxStatus.DELIVERED: "ok",
    OutboxStatus.FAILED: "danger", OutboxStatus.REFUSED: "danger",
    OutboxStatus.CANCELLED: "danger",
}
PAGE_SETTLED = {f"page_{status}" for status in OutboxStatus}
LEVEL_NAMES = ("the person on call", "the person on call and the backup", "everyone on call")
CHANNEL_NAMES = {"sms": "SMS", "telegram": "Telegram", "web": "web chat"}


class Done:
    """What a POST did, carried to the page it redirects to (`?done=`)."""

    ACKED = "acked"
    ALREADY_ACKED = "already-acked"
    RESOLVED = "resolved"
    ALREADY_RESOLVED = "already-resolved"
    ALL = frozenset({ACKED, ALREADY_ACKED, RESOLVED, ALREADY_RESOLVED})
    MISSING = "missing"  # these two are answered at once, not redirected
    NOT_ALLOWED = "not-allowed"


class Missing(Exception):
    """A number in the path that no escalation can have."""


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of the timeline."""

    at: datetime
    text: str
    page: PageRow | None = None
    status: str = ""  # a page's delivery status, in words
    tone: str = ""  # "ok", "warn" or "danger": how that status is shown


@dataclass(frozen=True)
class Detail:
    row: EscalationRow
    timeline: EscalationTimeline
    on_call: str | None  # None: a gap in the rota
    backup: str | None
    next_paged: tuple[str, ...]  # who the ladder's next step pages, as the rota stands now


def _number(request: web.Request) -> int:
    """The number in the path (digits, by the route); one no escalation can have is a 404."""
    number = int(request.match_info["number"])
    if not 0 < number <= MAX_ID:
        raise Missing
    return number


def _detail(session: Session, d: ConsoleDeps, number: int, now: datetime) -> Detail | None:
    row = escalation(session, number)
    if row is None:
        return None
    oncall = who_is_on_call(session, d.escalation.rota, now)
    next_paged: tuple[str, ...] = ()
    if row.status != EscalationStatus.RESOLVED and row.next_step_at is not None:
        # An acknowledgement that times out starts the ladder again from its first step.
        level = 0 if row.status == EscalationStatus.ACKED else row.step % LEVELS
        next_paged = tuple(s.username for s in recipients(session, level, oncall))
    return Detail(
        row=row,
        timeline=escalation_timeline(session, number),
        on_call=oncall.primary.username if oncall.primary else None,
        backup=oncall.backup.username if oncall.backup else None,
        next_paged=next_paged,
    )


def _words(detail: str) -> dict[str, str]:
    """handlers.escalation writes audit details as `key=value` words and bare flags."""
    found = {}
    for word in detail.split():
        key, _, value = word.partition("=")
        found[key] = value
    return found


def _event_text(event: EscalationEvent) -> str:
    words = _words(event.detail)
    if event.action == "escalation_opened":
        trigger = TRIGGERS.get(words.get("trigger", ""), words.get("trigger", ""))
        return f"Opened: {trigger}." if trigger else "Opened."
    if event.action == "page_queued":
        step = int(words["step"]) + 1 if words.get("step", "").isdigit() else None
        level = int(words["level"]) if words.get("level", "").isdigit() else None
        who = LEVEL_NAMES[level] if level is not None and level < LEVELS else "on call"
        text = f"Step {step}: paging {who}." if step else f"Paging {who}."
        if "rota_gap" in words:
            text += " Nobody was on call, so every on-call member and admin was paged."
        if words.get("paged") == "0":
            text += " Nobody could be paged: no one has a phone or Telegram chat registered."
        return text
    if event.action == "page_failover":
        was = CHANNEL_NAMES.get(words.get("from", ""), "one channel")
        now = CHANNEL_NAMES.get(words.get("to", ""), "the other")
        return f"A page did not get through by {was}: sent again by {now}."
    if event.action == "escalation_acked":
        return f"Acknowledged by {event.actor}. Paging stopped."
    if event.action == "ack_timed_out":
        return "Acknowledged but not resolved in time: paging started again."
    if event.action == "escalation_resolved":
        return f"Resolved by {event.actor}."
    return event.action.replace("_", " ").capitalize() + "."


def _page_line(page: PageRow, pages: dict[int, PageRow]) -> Line:
    channel = CHANNEL_NAMES.get(page.channel, page.channel)
    text = f"Page to {page.staff or 'a deleted account'} by {channel}"
    first = pages.get(page.failover_of) if page.failover_of is not None else None
    if first is not None:
        text += f" (fail-over: the {CHANNEL_NAMES.get(first.channel, first.channel)} page " \
                "did not get through)"
    elif page.failover_of is not None:
        text += " (fail-over)"
    status = PAGE_STATUSES.get(page.status, page.status)
    if page.status == OutboxStatus.PENDING and page.attempts:
        status = f"Retrying (tried {page.attempts} times)"
    if page.error and page.status in (OutboxStatus.FAILED, OutboxStatus.PENDING):
        status += f" ({page.error})"
    tone = PAGE_TONES.get(page.status, "")
    return Line(page.queued_at, text + ".", page=page, status=status, tone=tone)


def _lines(timeline: EscalationTimeline) -> list[Line]:
    pages = {p.id: p for p in timeline.pages}
    return [
        _page_line(entry, pages) if isinstance(entry, PageRow)
        else Line(entry.at, _event_text(entry))
        for entry in timeline.entries
        # The worker audits each page's send ("page_sent", "page_failed"): the page's own
        # line already shows that, with its delivery receipt.
        if isinstance(entry, PageRow) or entry.action not in PAGE_SETTLED
    ]


# --- the pages ------------------------------------------------------------------------------


@routes.get("/escalations")
async def escalations_page(request: web.Request) -> web.Response:
    d = deps(request)
    now = d.clock()

    def read(session: Session) -> tuple[list[EscalationRow], list[EscalationRow]]:
        return open_escalations(session), recent_escalations(session, now, RECENT)

    still_open, recent = await d.reader.run(read)
    return await render(request, "escalations.html", still_open=still_open, recent=recent,
                        statuses=STATUSES, triggers=TRIGGERS, recent_days=RECENT.days)


@routes.get(r"/escalations/{number:\d+}")
async def escalation_page(request: web.Request) -> web.Response:
    return await _show(request)


async def _show(request: web.Request, status: int = 200, problem: str | None = None,
                note: str = "") -> web.Response:
    d = deps(request)
    now = d.clock()
    try:
        number = _number(request)
    except Missing:
        return await _missing(request, request.match_info["number"])
    found = await d.reader.run(lambda s: _detail(s, d, number, now))
    if found is None:
        return await _missing(request, number)
    row = found.row
    done = request.query.get("done")
    resolution_note = d.cipher.decrypt(row.resolution_note_enc) \
        if row.resolution_note_enc else None
    return await render(
        request, "escalation.html", status=status,
        e=row, detail=found, lines=_lines(found.timeline), paged=found.timeline.paged,
        done=done if done in Done.ALL else None, problem=problem, note=note,
        resolution_note=resolution_note, may_act=me(request).has_role(*MAY_ACT),
        started_ago=_ago(row.opened_at, now), trigger=TRIGGERS.get(row.trigger, row.trigger),
        note_limit=NOTE_LIMIT,
    )


def _ago(moment: datetime, now: datetime) -> str:
    spent = waited(moment, now)
    return spent if spent == "just now" else f"{spent} ago"


async def _missing(request: web.Request, number: int | str) -> web.Response:
    return await render(request, "escalation_missing.html", status=404, number=number)


# --- acknowledge and resolve ----------------------------------------------------------------


def _claim(session: Session, number: int, staff_id: int) -> tuple[Escalation, Staff] | str:
    """The escalation, locked for this transaction (two people tapping at once: the second
    is told, on PostgreSQL as on SQLite), and the signed-in person; or what stops them."""
    found = session.scalar(select(Escalation).where(Escalation.id == number).with_for_update())
    if found is None:
        return Done.MISSING
    staff = session.get(Staff, staff_id)
    # The middleware has checked the role; this reads the same rule in the transaction that
    # writes, so a role taken away a moment ago counts.
    if staff is None or staff.disabled or staff.role not in MAY_ACT:
        return Done.NOT_ALLOWED
    if found.status == EscalationStatus.RESOLVED:
        return Done.ALREADY_RESOLVED
    return found, staff


def _acknowledge(session: Session, deps_: EscalationDeps, number: int, staff_id: int,
                 now: datetime) -> str:
    claimed = _claim(session, number, staff_id)
    if isinstance(claimed, str):
        return claimed
    found, staff = claimed
    if found.status == EscalationStatus.ACKED:
        # Someone already has it (or this is a second tap): say so, and leave their
        # acknowledgement and its timeout as they are.
        return Done.ALREADY_ACKED
    acknowledge(session, deps_, number, staff, now)
    return Done.ACKED


def _resolve(session: Session, number: int, staff_id: int, note_enc: str | None,
             now: datetime) -> str:
    claimed = _claim(session, number, staff_id)
    if isinstance(claimed, str):
        return claimed
    _, staff = claimed
    resolved = resolve(session, number, staff, now)
    resolved.resolution_note_enc = note_enc
    return Done.RESOLVED


async def _after(request: web.Request, number: int, done: str) -> web.StreamResponse:
    if done == Done.MISSING:
        return await _missing(request, number)
    if done == Done.NOT_ALLOWED:
        raise web.HTTPForbidden(text="Your role does not allow this.")
    if done in (Done.ACKED, Done.RESOLVED):
        deps(request).notifier.escalation(number)  # open pages of it read it again
    raise web.HTTPSeeOther(f"/console/escalations/{number}?done={done}")


@routes.post(r"/escalations/{number:\d+}/ack")
@access(Access.STAFF, roles=MAY_ACT)
async def acknowledge_escalation(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    staff_id, now = me(request).staff_id, d.clock()
    try:
        number = _number(request)
        done = await d.writer.run(lambda s: _acknowledge(s, d.escalation, number, staff_id, now))
    except Missing:
        return await _missing(request, request.match_info["number"])
    return await _after(request, number, done)


@routes.post(r"/escalations/{number:\d+}/resolve")
@access(Access.STAFF, roles=MAY_ACT)
async def resolve_escalation(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    staff_id, now = me(request).staff_id, d.clock()
    form = await request.post()
    raw = form.get("note", "")
    note = raw.strip() if isinstance(raw, str) else ""
    if len(note) > NOTE_LIMIT:
        return await _show(request, status=400, note=note,
                           problem=f"The note is too long: {NOTE_LIMIT} characters at most.")
    note_enc = d.cipher.encrypt(note) if note else None
    try:
        number = _number(request)
        done = await d.writer.run(lambda s: _resolve(s, number, staff_id, note_enc, now))
    except Missing:
        return await _missing(request, request.match_info["number"])
    return await _after(request, number, done)

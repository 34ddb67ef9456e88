"""A conversation at /console/conversations/{number}: its history, the reply box, notes, and
everything staff do to it. The rules live in handlers/staff.py; this reads the forms, runs
the units through the writer, and shows the outcome. Every role may work conversations.

Contact text is decrypted here, for the signed-in person looking, and only shown escaped.
After a change the page is reloaded with a redirect (303), and open pages are told.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy.orm import Session

from bot.console.deps import ConsoleDeps, deps, me
from bot.console.pages import render
from bot.domain import IntakeCategory, OutboxStatus
from bot.storage.views import (
    HISTORY_LIMIT,
    CannedRow,
    ConversationView,
    History,
    HistoryEntry,
    StaffOption,
    active_staff,
    canned_for_reply,
    conversation,
    history,
    viewers,
)
from handlers import staff
from handlers.staff import (
    ConversationNotFound,
    Done,
    NeedsConfirmation,
    Refused,
    Sent,
    StaffDeps,
)
from handlers.staff_auth import SignedIn

routes = web.RouteTableDef()
PAGE = "/conversations/{number:\\d{1,18}}"  # digits only, and within a 64-bit integer
PRIORITY_LABELS = {staff.PRIORITY_NORMAL: "Normal", staff.PRIORITY_HIGH: "High",
                   staff.PRIORITY_URGENT: "Urgent"}
DELIVERY = {
    OutboxStatus.PENDING: "Waiting to send",
    OutboxStatus.SENDING: "Sending",
    OutboxStatus.SENT: "Sent",
    OutboxStatus.DELIVERED: "Delivered",
    OutboxStatus.FAILED: "Failed",
    OutboxStatus.REFUSED: "Not sent: opted out",
    OutboxStatus.CANCELLED: "Cancelled",
}
DONE = {  # ?done= after a redirect: what the person just did, said back plainly
    "replied": "Reply queued. It goes out now.",
    "noted": "Note saved. Notes are never sent.",
    "claimed": "You have claimed it.",
    "released": "Released. It is back with the waiting conversations.",
    "transferred": "Transferred.",
    "closed": "Closed.",
    "reopened": "Reopened.",
    "category": "Category set.",
    "priority": "Priority set.",
    "emergency": "Marked as an emergency. On-call is paged until someone acknowledges.",
}
REFUSED_STATUS = {"empty": 400, "too_long": 400, "bad_outcome": 400, "bad_category": 400,
                  "bad_priority": 400, "no_such_staff": 400}


def _number(request: web.Request) -> int:
    return int(request.match_info["number"])


def _url(number: int) -> str:
    return f"/console/conversations/{number}"


def _staff_deps(d: ConsoleDeps) -> StaffDeps:
    return StaffDeps(d.cipher, d.escalation,
                     timedelta(hours=d.settings.privacy.quiet_window_hours),
                     timedelta(minutes=d.settings.webchat.idle_minutes))


def _field(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Shown:
    """A history entry with its text, decrypted for this page only."""

    entry: HistoryEntry
    text: str


@dataclass(frozen=True)
class _Read:
    conv: ConversationView
    history: History
    viewing: tuple[str, ...]
    staff: list[StaffOption]
    canned: list[CannedRow]
    before: int | None  # a page of older messages


def _before(request: web.Request) -> int | None:
    """?before=: a page of older messages, those before this message id."""
    raw = request.query.get("before", "") if request.method == "GET" else ""
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(text="before is a message number, digits only.")
    return int(raw)


async def _read(request: web.Request, number: int) -> _Read | None:
    d = deps(request)
    now = d.clock()
    quiet = timedelta(hours=d.settings.privacy.quiet_window_hours)
    before = _before(request)

    def read(session: Session) -> _Read | None:
        view = conversation(session, number, now, quiet,
                            timedelta(minutes=d.settings.webchat.idle_minutes))
        if view is None:
            return None
        return _Read(view, history(session, number, before=before),
                     viewers(session, number, now), active_staff(session),
                     canned_for_reply(session, view.language), before)

    return await d.reader.run(read)


def _context(request: web.Request, found: _Read) -> dict[str, Any]:
    d = deps(request)
    signed_in = me(request)
    conv = found.conv
    return {
        "conv": conv,
        "entries": [Shown(e, d.cipher.decrypt(e.body_enc)) for e in found.history.entries],
        "earlier": found.history.earlier,
        "before": found.before,
        "history_page": HISTORY_LIMIT,
        "others": [name for name in found.viewing if name != signed_in.username],
        # Taking it yourself is "claim"; handing it to whoever has it already, nothing.
        "staff_options": [s for s in found.staff
                          if s.id not in (conv.claimed_by_id, signed_in.staff_id)],
        "canned": found.canned,
        "mine": conv.claimed_by_id == signed_in.staff_id,
        "can_release": conv.claimed_by_id is not None and (
            conv.claimed_by_id == signed_in.staff_id or signed_in.has_role("admin")),
        "channel_on": conv.channel in d.escalation.channels,
        "max_chars": staff.max_chars(conv.channel),
        "note_max_chars": staff.NOTE_MAX_CHARS,
        "quiet_hours": d.settings.privacy.quiet_window_hours,
        "categories": [c.value for c in IntakeCategory],
        "outcomes": staff.OUTCOMES,
        "priorities": PRIORITY_LABELS,
        "delivery": DELIVERY,
    }


async def _page(request: web.Request, number: int, status: int = 200, error: str = "",
                draft: str = "", note_draft: str = "") -> web.Response:
    found = await _read(request, number)
    if found is None:
        return await _missing(request, number)
    notice = None
    if request.method == "GET":
        notice = DONE.get(request.query.get("done", ""))
        canned = request.query.get("canned", "")  # "use this canned reply", without JS
        draft = next((c.body for c in found.canned if str(c.id) == canned), draft)
    return await render(request, "conversation.html", status=status, error=error,
                        notice=notice, draft=draft, note_draft=note_draft,
                        **_context(request, found))


async def _missing(request: web.Request, number: int) -> web.Response:
    return await render(request, "conversation_missing.html", status=404, number=number)


@routes.get(PAGE)
async def conversation_page(request: web.Request) -> web.Response:
    d = deps(request)
    signed_in, number = me(request), _number(request)
    now = d.clock()
    if not await d.writer.run(lambda s: staff.view(s, number, signed_in, now), notify=False):
        return await _missing(request, number)
    d.notifier.conversation(number)  # the queue shows who has it open
    return await _page(request, number)


@routes.get(PAGE + "/history")
async def history_fragment(request: web.Request) -> web.Response:
    """The history alone, for the open page to refresh itself when the conversation
    changes. A fetch by someone not viewing the page just now counts as a new view."""
    d = deps(request)
    signed_in, number = me(request), _number(request)
    found = await _read(request, number)
    if found is None:
        return await _missing(request, number)
    if signed_in.username not in found.viewing:
        now = d.clock()
        await d.writer.run(lambda s: staff.view(s, number, signed_in, now), notify=False)
    return await render(request, "conversation_history.html", **_context(request, found))


@routes.post(PAGE + "/presence")
async def presence(request: web.Request) -> web.Response:
    """The open page's beat, every 30 seconds: who has it open now."""
    d = deps(request)
    signed_in, number = me(request), _number(request)
    now = d.clock()
    if not await d.writer.run(lambda s: staff.seen(s, number, signed_in, now), notify=False):
        raise web.HTTPNotFound(text="No such conversation.")
    return web.Response(status=204)


Action = Callable[[Session, int, SignedIn, datetime], Done | Refused]


async def _act(request: web.Request, action: Action, done: str,
               wakes_outbox: bool = False, note_draft: str = "") -> web.StreamResponse:
    """Run one staff action, then back to the page: with a 303 when it was done, or the
    page again with why not."""
    d = deps(request)
    signed_in, number = me(request), _number(request)
    now = d.clock()
    try:
        outcome = await d.writer.run(lambda s: action(s, number, signed_in, now),
                                     notify=wakes_outbox)
    except ConversationNotFound:
        return await _missing(request, number)
    if isinstance(outcome, Refused):
        return await _refused(request, number, outcome, note_draft=note_draft)
    if outcome.changed:
        d.notifier.conversation(number)
        d.notifier.escalation(outcome.escalation_id)
    raise web.HTTPSeeOther(f"{_url(number)}?done={done}")


async def _refused(request: web.Request, number: int, outcome: Refused,
                   draft: str = "", note_draft: str = "") -> web.Response:
    """The page again, with why not, and what the person wrote still in its box."""
    return await _page(request, number, status=REFUSED_STATUS.get(outcome.reason, 409),
                       error=outcome.message, draft=draft, note_draft=note_draft)


@routes.post(PAGE + "/claim")
async def claim(request: web.Request) -> web.StreamResponse:
    return await _act(request, staff.claim, "claimed")


@routes.post(PAGE + "/release")
async def release(request: web.Request) -> web.StreamResponse:
    return await _act(request, staff.release, "released")


@routes.post(PAGE + "/transfer")
async def transfer(request: web.Request) -> web.StreamResponse:
    raw = _field(await request.post(), "to")
    to = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else 0
    return await _act(request, lambda s, n, who, now: staff.transfer(s, n, who, to, now),
                      "transferred")


@routes.post(PAGE + "/close")
async def close(request: web.Request) -> web.StreamResponse:
    outcome = _field(await request.post(), "outcome")
    return await _act(request, lambda s, n, who, now: staff.close(s, n, who, outcome, now),
                      "closed")


@routes.post(PAGE + "/reopen")
async def reopen(request: web.Request) -> web.StreamResponse:
    return await _act(request, staff.reopen, "reopened")


@routes.post(PAGE + "/category")
async def category(request: web.Request) -> web.StreamResponse:
    chosen = _field(await request.post(), "category")
    return await _act(request,
                      lambda s, n, who, now: staff.set_category(s, n, who, chosen, now),
                      "category")


@routes.post(PAGE + "/priority")
async def priority(request: web.Request) -> web.StreamResponse:
    raw = _field(await request.post(), "priority")
    chosen = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 3 else -1
    return await _act(request,
                      lambda s, n, who, now: staff.set_priority(s, n, who, chosen, now),
                      "priority")


@routes.post(PAGE + "/emergency")
async def emergency(request: web.Request) -> web.StreamResponse:
    sd = _staff_deps(deps(request))
    return await _act(request,
                      lambda s, n, who, now: staff.mark_emergency(s, sd, n, who, now),
                      "emergency", wakes_outbox=True)


@routes.post(PAGE + "/note")
async def note(request: web.Request) -> web.StreamResponse:
    text = _field(await request.post(), "text")
    sd = _staff_deps(deps(request))
    return await _act(request, lambda s, n, who, now: staff.note(s, sd, n, who, text, now),
                      "noted", note_draft=text)


@routes.post(PAGE + "/reply")
async def reply(request: web.Request) -> web.StreamResponse:
    """A reply to the contact. A caution (NOT SAFE, quiet window) shows a warning page whose
    form carries `confirm`; a POST without it is answered with that page again, and sends
    nothing, however it was made."""
    d = deps(request)
    signed_in, number = me(request), _number(request)
    form = await request.post()
    text = _field(form, "text")
    confirmed = frozenset(_field(form, "confirm").split())
    sd = _staff_deps(d)
    now = d.clock()
    try:
        outcome = await d.writer.run(
            lambda s: staff.reply(s, sd, number, signed_in, text, confirmed, now))
    except ConversationNotFound:
        return await _missing(request, number)
    if isinstance(outcome, Sent):
        d.notifier.conversation(number)
        raise web.HTTPSeeOther(f"{_url(number)}?done=replied")
    if isinstance(outcome, NeedsConfirmation):
        found = await _read(request, number)
        if found is None:
            return await _missing(request, number)
        return await render(request, "conversation_confirm.html", conv=found.conv,
                            cautions=outcome.cautions, text=text,
                            max_chars=staff.max_chars(found.conv.channel),
                            quiet_hours=d.settings.privacy.quiet_window_hours)
    return await _refused(request, number, outcome, draft=text)

"""The queue at /console: tabs of conversations, live."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web
from sqlalchemy.orm import Session

from bot.console.deps import deps, me
from bot.console.pages import render
from bot.storage.models import Staff
from bot.storage.views import QueueCounts, QueueRow, Tab, queue, queue_counts
from handlers.handover import confirm, waiting_for, when_words

routes = web.RouteTableDef()
TAB_LABELS = {
    Tab.WAITING: "Waiting",
    Tab.MINE: "Mine",
    Tab.OPEN: "All open",
    Tab.EMERGENCIES: "Emergencies",
    Tab.CLOSED: "Closed",
}


def _tab(request: web.Request) -> Tab:
    try:
        return Tab(request.query.get("tab", Tab.WAITING))
    except ValueError:
        raise web.HTTPBadRequest(text="No such tab.") from None


def _number(request: web.Request) -> int | None:
    raw = request.query.get("number", "").strip().lstrip("#")
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(text="A conversation number is digits only.")
    return int(raw)


async def _rows(request: web.Request) -> dict[str, object]:
    d = deps(request)
    signed_in = me(request)
    tab, number = _tab(request), _number(request)
    now = d.clock()
    quiet = timedelta(hours=d.settings.privacy.quiet_window_hours)

    def read(session: Session) -> tuple[list[QueueRow], QueueCounts]:
        rows = queue(session, tab, signed_in.staff_id, now, quiet, number)
        return rows, queue_counts(session, signed_in.staff_id)

    rows, counts = await d.reader.run(read)
    return {"tab": tab, "rows": rows, "counts": counts, "number": number,
            "tabs": TAB_LABELS}


@routes.get("")
async def queue_page(request: web.Request) -> web.Response:
    d = deps(request)
    staff_id, now = me(request).staff_id, d.clock()
    # Whoever has just taken over on call can confirm it here as well as by ACK.
    waiting = await d.reader.run(lambda s: waiting_for(s, staff_id))
    on_call = None if waiting is None else when_words(waiting.until, now,
                                                      d.settings.oncall.zone)
    return await render(request, "queue.html", on_call_until=on_call, **await _rows(request))


@routes.post("/oncall/confirm")
async def confirm_on_call(request: web.Request) -> web.Response:
    """The console's ACK for a handover; nothing happens unless there is one to confirm."""
    d = deps(request)
    staff_id, now = me(request).staff_id, d.clock()

    def unit(session: Session) -> None:
        staff = session.get(Staff, staff_id)
        if staff is not None:
            confirm(session, d.escalation, staff, now)

    await d.writer.run(unit)
    raise web.HTTPSeeOther("/console")


@routes.get("/queue/rows")
async def queue_rows(request: web.Request) -> web.Response:
    """The rows alone, for the page to refresh itself when something changes."""
    return await render(request, "queue_rows.html", **await _rows(request))

"""The queue at /console: tabs of conversations, live."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup
from sqlalchemy.orm import Session

from bot.console.deps import deps, me
from bot.console.pages import render
from bot.console.shared import SharedReads
from bot.storage.models import Staff
from bot.storage.views import QUEUE_LIMIT, OpenCounts, QueuePage, Tab, open_counts, queue
from handlers.handover import confirm, waiting_for, when_words

routes = web.RouteTableDef()
# Every open queue page refetches its rows when anything changes: they share the reads.
QUEUE_READS = web.AppKey("console_queue_reads", SharedReads)
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


def _number(request: web.Request, name: str = "number") -> int | None:
    raw = request.query.get(name, "").strip().lstrip("#")
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(text="A conversation number is digits only.")
    return int(raw)


@dataclass(frozen=True)
class _Shared:
    table: Markup  # the rows, rendered: the same for everyone on this tab right now
    counts: OpenCounts


async def _rows(request: web.Request) -> dict[str, object]:
    d = deps(request)
    signed_in = me(request)
    tab, number, after = _tab(request), _number(request), _number(request, "after")
    # The tab's rows are the same for everyone but on "Mine".
    staff_id = signed_in.staff_id if tab is Tab.MINE else 0
    quiet = timedelta(hours=d.settings.privacy.quiet_window_hours)

    def read(session: Session) -> tuple[QueuePage, OpenCounts]:
        now = d.clock()
        return (queue(session, tab, staff_id, now, quiet, number, after),
                open_counts(session))

    async def shared() -> _Shared:
        page, counts = await d.reader.run(read)
        # Rendered once for everyone who asked: it shows nothing of who is looking.
        table = aiohttp_jinja2.render_string("queue_table.html", request, {
            "tab": tab, "rows": page.rows, "next_after": page.after, "after": after,
            "page_size": QUEUE_LIMIT, "number": number,
        })
        return _Shared(Markup(table), counts)  # noqa: S704 - our own autoescaped template

    found = await request.config_dict[QUEUE_READS].read((tab, staff_id, number, after), shared)
    return {"tab": tab, "table": found.table, "after": after,
            "counts": found.counts.of(signed_in.staff_id), "number": number,
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

"""Live updates: a server-sent event stream that says what changed, never what it says.

A page opens /console/events and, on each change, reads again the part it shows, through
the normal routes and with the viewer's own rights. A ping every 15 seconds keeps proxies
from closing the stream and tells the page the stream is alive; a page that hears nothing
for longer falls back to polling (static/console.js), which covers proxies that buffer.
The stream checks every minute that its session is still open, and ends when it is not.
"""

from __future__ import annotations

import contextlib
import json

from aiohttp import web

from bot.console.deps import deps, me
from bot.console.security import HEADERS, SESSION_COOKIE, Access, access
from handlers.staff_auth import SignedIn, load_signed_in

routes = web.RouteTableDef()
PING_SECONDS = 15.0
RECHECK_PINGS = 4  # the session is read again every fourth ping


@routes.get("/events")
@access(Access.STAFF, touches=False)
async def events(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(SESSION_COOKIE, "")
    response = web.StreamResponse(headers={
        **HEADERS,  # set before prepare: the middleware cannot add them to a stream
        "Content-Type": "text/event-stream",
        "X-Accel-Buffering": "no",  # nginx: do not buffer this response
    })
    await response.prepare(request)
    # A closed tab is noticed at the next write (aiohttp does not cancel the handler when
    # the browser goes): the stream then just ends, it is not an error.
    with contextlib.suppress(ConnectionResetError):
        await _stream(request, response, token)
    return response


async def _stream(request: web.Request, response: web.StreamResponse, token: str) -> None:
    d = deps(request)
    await response.write(b"retry: 5000\nevent: ready\ndata: {}\n\n")
    pings = 0
    with d.notifier.stream() as stream:
        while True:
            changes = await stream.next(PING_SECONDS)
            if not changes:
                pings += 1
                if pings % RECHECK_PINGS == 0 and not await _still_signed_in(request, token):
                    await response.write(b"event: signed-out\ndata: {}\n\n")
                    return
                await response.write(b"event: ping\ndata: {}\n\n")
                continue
            seen = set()
            for change in changes:
                if change in seen:
                    continue
                seen.add(change)
                data = json.dumps({"kind": change.kind, "id": change.id})
                await response.write(f"event: change\ndata: {data}\n\n".encode())


async def _still_signed_in(request: web.Request, token: str) -> bool:
    d = deps(request)
    now = d.clock()
    found = await d.reader.run(lambda s: load_signed_in(s, token, d.policy, now))
    return isinstance(found, SignedIn) and found.session_id == me(request).session_id

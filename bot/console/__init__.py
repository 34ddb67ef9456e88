"""The staff console: a sub-application at /console with its own middlewares (security
headers, sessions, CSRF, roles), so the webhooks never see any of it."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from bot.console import admin, auth, conversation, escalations, events, queue
from bot.console.deps import DEPS, ConsoleDeps
from bot.console.formatting import filters
from bot.console.pages import ROTA_GAP, RotaGap
from bot.console.security import MIDDLEWARES
from bot.console.shared import SharedReads

STATIC = Path(__file__).parent / "static"
SECTIONS = (auth.routes, queue.routes, conversation.routes, events.routes, escalations.routes,
            admin.routes)


def create_console(deps: ConsoleDeps) -> web.Application:
    app = web.Application(middlewares=MIDDLEWARES)
    app[DEPS] = deps
    app[ROTA_GAP] = RotaGap()
    app[queue.QUEUE_READS] = SharedReads()
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("bot.console", "templates"),
        autoescape=True,  # contact text is untrusted: escaped everywhere, always
        filters=filters(deps.settings.hours.timezone, deps.clock),
    )
    for section in SECTIONS:
        app.router.add_routes(section)
    app.router.add_static("/static", STATIC, name="static", append_version=False)
    return app

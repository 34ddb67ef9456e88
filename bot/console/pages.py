"""Rendering a console page: the template, plus what every page shows (who is signed in,
the CSRF token for its forms, and the banner while nobody is on call)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from bot.console.deps import ME, ConsoleDeps, deps
from bot.console.security import csrf_token
from handlers.escalation import who_is_on_call

GAP_CHECK_EVERY = timedelta(seconds=30)


class RotaGap:
    """Whether the rota has a gap right now, read at most every 30 seconds per process: it
    shows on every page, and it changes at handovers and overrides only."""

    def __init__(self) -> None:
        self._checked: datetime | None = None
        self._gap = False
        self._lock = asyncio.Lock()

    async def __call__(self, d: ConsoleDeps) -> bool:
        now = d.clock()
        async with self._lock:
            if self._checked is None or now - self._checked >= GAP_CHECK_EVERY \
                    or now < self._checked:
                rota = d.settings.oncall
                self._gap = await d.reader.run(lambda s: who_is_on_call(s, rota, now).gap)
                self._checked = now
            return self._gap

    def forget(self) -> None:
        """An override was set: check again on the next page."""
        self._checked = None


ROTA_GAP = web.AppKey("console_rota_gap", RotaGap)


async def render(request: web.Request, template: str, status: int = 200,
                 **context: Any) -> web.Response:
    d = deps(request)
    me = request.get(ME)
    response = web.Response(status=status)
    page = {
        "me": me,
        "csrf_token": csrf_token(request, response),
        "rota_gap": me is not None and me.verified and await request.config_dict[ROTA_GAP](d),
        "path": request.path,
        **context,
    }
    rendered = aiohttp_jinja2.render_string(template, request, page)
    response.text = rendered
    response.content_type = "text/html"
    return response

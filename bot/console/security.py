"""The console's middlewares: security headers on every answer, the session behind the
cookie, CSRF on every state-changing request, and who may reach which route.

Every route declares who may use it with `@access(...)`; a route that declares nothing is
open to signed-in staff only, so forgetting the decorator never opens a page to the world.
Roles are checked here, on the server, for every request: a hidden button is not a rule.
"""

from __future__ import annotations

import enum
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bot.console.deps import ME, deps
from bot.remote import remote_address
from handlers.staff_auth import Expired, SignedIn, end_session, load_signed_in, touch

SESSION_COOKIE = "triage_console"
CSRF_COOKIE = "triage_csrf"  # double-submit token for the forms before sign-in
CSRF_FIELD = "csrf_token"
PREFIX = "/console"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
HEADERS = {
    # No inline script or style anywhere; nothing from another origin; no framing.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access(enum.Enum):
    PUBLIC = "public"  # the sign-in page and static files
    PASSWORD = "password"  # noqa: S105 - signed in by password, no second step yet (OTP page)
    ENROL = "enrol"  # also open while two-factor must still be set up
    STAFF = "staff"  # a fully signed-in session


def access(level: Access = Access.STAFF, *, roles: tuple[str, ...] = (),
           touches: bool = True) -> Callable[[Handler], Handler]:
    """Who may use a route. `roles` narrows STAFF to those roles. `touches=False` for
    requests that are not activity (the live stream), so an open tab does not keep an idle
    session alive."""

    def mark(handler: Handler) -> Handler:
        handler.__console_access__ = (level, roles, touches)  # type: ignore[attr-defined]
        return handler

    return mark


def _declared(request: web.Request, handler: Handler) -> tuple[Access, tuple[str, ...], bool]:
    if request.match_info.route.resource is not None and \
            request.match_info.route.resource.name == "static":
        return Access.PUBLIC, (), False
    found: Any = getattr(handler, "__console_access__", None)
    return found if found is not None else (Access.STAFF, (), True)


@web.middleware
async def server_timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`Server-Timing: app;dur=ms`: the time this process spent on the request, from the
    session lookup to the rendered page, without the network. Browsers show it in their
    developer tools and bench/console.py reads it. Only on signed-in pages, so the sign-in
    form tells no one more about its timing than a stopwatch would."""
    started = time.perf_counter()
    response = await handler(request)
    if request.get(ME) is not None and not response.prepared:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(HEADERS)
        raise
    if not response.prepared:
        response.headers.update(HEADERS)
    return response


def login_url(request: web.Request) -> str:
    back = request.path_qs if request.method == "GET" and request.path != PREFIX + "/login" \
        else PREFIX
    return f"{PREFIX}/login?next={quote(back, safe='/')}"


def safe_next(value: str | None) -> str:
    """Only a console path: never another site (an open redirect)."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    d = deps(request)
    level, roles, touches = _declared(request, handler)
    token = request.cookies.get(SESSION_COOKIE)
    expired = None
    if token:
        now = d.clock()
        found = await d.reader.run(lambda s: load_signed_in(s, token, d.policy, now))
        if isinstance(found, Expired):
            await d.writer.run(lambda s: end_session(s, found.session_id, found.reason, now))
            expired = found.reason
        elif isinstance(found, SignedIn):
            request[ME] = found
            if found.stale and touches:
                await d.writer.run(lambda s: touch(s, found.session_id, now), notify=False)
    me: SignedIn | None = request.get(ME)
    if level is not Access.PUBLIC:
        if me is None:
            return _to_login(request, expired)
        if not me.verified and level is not Access.PASSWORD:
            raise web.HTTPSeeOther(f"{PREFIX}/login/code")
        if me.verified and me.must_enrol and level not in (Access.ENROL, Access.PASSWORD):
            raise web.HTTPSeeOther(f"{PREFIX}/account/two-factor")
        if roles and not me.has_role(*roles):
            raise web.HTTPForbidden(text="Your role does not allow this page.")
    return await handler(request)


def _to_login(request: web.Request, expired: str | None) -> web.StreamResponse:
    if request.method == "GET" and "text/html" in request.headers.get("Accept", "text/html"):
        target = login_url(request) + (f"&ended={expired}" if expired else "")
        raise web.HTTPSeeOther(target)
    raise web.HTTPUnauthorized(text="Signed out. Sign in again.")


@web.middleware
async def csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in UNSAFE:
        if request.content_type not in ("application/x-www-form-urlencoded",
                                        "multipart/form-data"):
            raise web.HTTPUnsupportedMediaType(text="Send the page's form.")
        try:
            form = await request.post()
        except (UnicodeDecodeError, ValueError):
            raise web.HTTPBadRequest(text="The form could not be read.") from None
        given = form.get(CSRF_FIELD)
        me: SignedIn | None = request.get(ME)
        expected = me.csrf_token if me is not None else request.cookies.get(CSRF_COOKIE)
        if not isinstance(given, str) or not expected or not hmac.compare_digest(
            given.encode(), expected.encode()
        ):
            raise web.HTTPForbidden(
                text="This form has expired. Go back, reload the page and try again."
            )
    return await handler(request)


def csrf_token(request: web.Request, response: web.StreamResponse | None = None) -> str:
    """The token a page's forms carry: the session's, or before sign-in a double-submit
    cookie set on `response`."""
    me: SignedIn | None = request.get(ME)
    if me is not None:
        return me.csrf_token
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    if response is not None:
        set_cookie(request, response, CSRF_COOKIE, token)
    return token


def set_cookie(request: web.Request, response: web.StreamResponse, name: str,
               value: str) -> None:
    response.set_cookie(name, value, path=PREFIX, httponly=True, samesite="Strict",
                        secure=deps(request).secure_cookies)


def clear_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path=PREFIX)


def client_address(request: web.Request) -> str:
    return remote_address(request, deps(request).settings.server.trusted_proxies)


def client_description(user_agent: str) -> str:
    """'Firefox on Windows': enough for a person to recognise a session of theirs."""
    ua = user_agent
    browser = next((name for key, name in (("Edg/", "Edge"), ("Firefox/", "Firefox"),
                                           ("Chrome/", "Chrome"), ("Safari/", "Safari"))
                    if key in ua), "A browser")
    system = next((name for key, name in (("Android", "Android"), ("iPhone", "iPhone"),
                                          ("iPad", "iPad"), ("Windows", "Windows"),
                                          ("Mac OS", "Mac"), ("Linux", "Linux"))
                   if key in ua), "")
    return f"{browser} on {system}" if system else browser


MIDDLEWARES = [server_timing, security_headers, sessions, csrf]

"""Signing in and out, the second step, two-factor enrolment, and a person's own account
page (their open sessions, the queue's sound)."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import segno
from aiohttp import web
from markupsafe import Markup
from sqlalchemy.orm import Session

from bot.console.deps import deps, me
from bot.console.pages import render
from bot.console.security import (
    SESSION_COOKIE,
    Access,
    access,
    clear_cookie,
    client_address,
    client_description,
    safe_next,
    set_cookie,
)
from handlers import staff_auth

routes = web.RouteTableDef()
ENDED = {
    "idle": "You were signed out after a while without activity. Sign in again.",
    "disabled": "This account has been disabled. Ask an admin.",
    "logout": "You are signed out.",
}


def _field(form: object, name: str, limit: int = 200) -> str:
    value = form.get(name, "") if hasattr(form, "get") else ""  # type: ignore[union-attr]
    return value[:limit] if isinstance(value, str) else ""


@routes.get("/login")
@access(Access.PUBLIC)
async def login_page(request: web.Request) -> web.Response:
    ended = ENDED.get(request.query.get("ended", ""))
    return await render(request, "login.html", notice=ended,
                        next=safe_next(request.query.get("next")))


@routes.post("/login")
@access(Access.PUBLIC)
async def login(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    form = await request.post()
    username = _field(form, "username", 64).strip()
    password = _field(form, "password", 1024)
    target = safe_next(_field(form, "next", 500))
    client = client_address(request)
    keys = staff_auth.throttle_keys(d.policy, username, client)
    now = d.clock()
    if await d.reader.run(lambda s: staff_auth.throttled(s, keys, now)):
        return await render(request, "login.html", status=429, next=target,
                            error="Too many attempts. Wait 15 minutes, then try again.")
    account = await d.reader.run(lambda s: staff_auth.find_account(s, username))
    hash_ = account.password_hash if account else None
    # argon2 is slow on purpose: off the event loop, and never inside the writer.
    good = await asyncio.get_running_loop().run_in_executor(
        None, staff_auth.check_password, hash_, password
    )
    if not good or account is None or account.disabled:
        reason = "disabled" if good and account is not None else "password"
        await d.writer.run(lambda s: staff_auth.record_failure(s, keys, account, now, reason),
                           notify=False)
        return await render(request, "login.html", status=401, next=target,
                            error="That username and password do not match an account.")
    opened = await d.writer.run(lambda s: staff_auth.open_session(
        s, account, client_description(request.headers.get("User-Agent", "")), d.policy, now
    ), notify=False)
    response = web.HTTPSeeOther(target if opened.verified else
                                f"/console/login/code?next={quote(target, safe='/')}")
    set_cookie(request, response, SESSION_COOKIE, opened.token)
    raise response


@routes.get("/login/code")
@access(Access.PASSWORD)
async def code_page(request: web.Request) -> web.Response:
    if me(request).verified:
        raise web.HTTPSeeOther("/console")
    return await render(request, "code.html", next=safe_next(request.query.get("next")))


@routes.post("/login/code")
@access(Access.PASSWORD)
async def code(request: web.Request) -> web.Response:
    d = deps(request)
    signed_in = me(request)
    form = await request.post()
    given = _field(form, "otp", 40)
    target = safe_next(_field(form, "next", 500))
    client = client_address(request)
    keys = staff_auth.throttle_keys(d.policy, signed_in.username, client)
    now = d.clock()
    if await d.reader.run(lambda s: staff_auth.throttled(s, keys, now)):
        return await render(request, "code.html", status=429, next=target,
                            error="Too many attempts. Wait 15 minutes, then try again.")

    def unit(session: Session) -> bool:
        ok = staff_auth.second_step(session, signed_in, given, d.cipher, d.policy, now)
        if not ok:
            account = staff_auth.find_account(session, signed_in.username)
            staff_auth.record_failure(session, keys, account, now, "second_factor")
        return ok

    if not await d.writer.run(unit, notify=False):
        return await render(request, "code.html", status=401, next=target,
                            error="That code did not work. Codes change every 30 seconds.")
    raise web.HTTPSeeOther(target)


@routes.post("/logout")
@access(Access.PASSWORD)
async def logout(request: web.Request) -> web.Response:
    d = deps(request)
    signed_in = me(request)
    now = d.clock()
    await d.writer.run(lambda s: staff_auth.end_session(s, signed_in.session_id, "logout", now,
                                                        signed_in), notify=False)
    response = web.HTTPSeeOther("/console/login?ended=logout")
    clear_cookie(response, SESSION_COOKIE)
    raise response


# --- the account page ----------------------------------------------------------------------


@routes.get("/account")
async def account_page(request: web.Request) -> web.Response:
    d = deps(request)
    signed_in = me(request)
    now = d.clock()
    open_sessions = await d.reader.run(
        lambda s: staff_auth.open_sessions(s, signed_in.staff_id, d.policy, now)
    )
    account = await d.reader.run(lambda s: staff_auth.find_account(s, signed_in.username))
    return await render(request, "account.html", sessions=open_sessions,
                        totp_on=bool(account and account.totp_on),
                        saved=request.query.get("saved"))


@routes.post("/account/sessions/{session_id:[0-9]{1,18}}/end")
async def end_one_session(request: web.Request) -> web.Response:
    d = deps(request)
    signed_in = me(request)
    session_id = int(request.match_info["session_id"])
    now = d.clock()
    await d.writer.run(lambda s: staff_auth.end_own_session(s, signed_in, session_id, now),
                       notify=False)
    if session_id == signed_in.session_id:
        response = web.HTTPSeeOther("/console/login?ended=logout")
        clear_cookie(response, SESSION_COOKIE)
        raise response
    raise web.HTTPSeeOther("/console/account?saved=session")


@routes.post("/account/sound")
async def sound(request: web.Request) -> web.Response:
    d = deps(request)
    signed_in = me(request)
    on = (await request.post()).get("sound") == "on"
    await d.writer.run(lambda s: staff_auth.set_sound(s, signed_in, on), notify=False)
    raise web.HTTPSeeOther("/console/account?saved=sound")


# --- two-factor enrolment ------------------------------------------------------------------


@routes.get("/account/two-factor")
@access(Access.ENROL)
async def two_factor_page(request: web.Request) -> web.Response:
    d = deps(request)
    signed_in = me(request)
    account = await d.reader.run(lambda s: staff_auth.find_account(s, signed_in.username))
    if account is not None and account.totp_on:
        return await render(request, "two_factor.html", enrolled=True)
    enrolment = await d.reader.run(
        lambda s: staff_auth.pending_enrolment(s, signed_in, d.cipher)
    )
    if enrolment is None:
        enrolment = await d.writer.run(
            lambda s: staff_auth.start_enrolment(s, signed_in, d.cipher), notify=False
        )
    return await render(request, "two_factor.html", enrolled=False,
                        required=signed_in.must_enrol, secret=enrolment.secret,
                        qr=qr_svg(enrolment.uri))


@routes.post("/account/two-factor")
@access(Access.ENROL)
async def confirm_two_factor(request: web.Request) -> web.Response:
    d = deps(request)
    signed_in = me(request)
    given = _field(await request.post(), "otp", 40)
    now = d.clock()
    codes = await d.writer.run(lambda s: staff_auth.confirm_enrolment(
        s, signed_in, given, d.cipher, d.policy, now), notify=False)
    if codes is None:
        enrolment = await d.reader.run(
            lambda s: staff_auth.pending_enrolment(s, signed_in, d.cipher)
        )
        if enrolment is None:
            raise web.HTTPSeeOther("/console/account/two-factor")
        return await render(request, "two_factor.html", status=400, enrolled=False,
                            required=signed_in.must_enrol, secret=enrolment.secret,
                            qr=qr_svg(enrolment.uri),
                            error="That code did not match. Try the newest code in the app.")
    return await render(request, "recovery_codes.html", codes=codes)


def qr_svg(uri: str) -> Markup:
    """The enrolment QR code as inline SVG, made here: no image service sees the secret."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, title="Two-factor QR code")
    return Markup(svg)  # noqa: S704 - segno's own SVG of our own URI, no outside text

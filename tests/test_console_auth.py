"""Signing in to the staff console: passwords, the second step, enrolment, throttling,
sessions, and the web-security rules every console answer follows."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from bot.storage.models import AuditEntry, ConsoleSession, Staff
from tests.conftest import Service
from tests.console_helpers import PASSWORD, Browser, add_staff, totp_code


@pytest.fixture
async def svc(start_service, fake_twilio) -> Service:
    return await start_service(fake_twilio)


async def actions(svc: Service) -> list[str]:
    return [row.action for row in await svc.all(AuditEntry)]


async def test_staff_signs_in_and_sees_the_queue(svc):
    await add_staff(svc, "erin")
    page = await Browser(svc).sign_in("erin")
    assert page.status == 200
    assert "Nobody is waiting here." in page.text
    assert "login" in await actions(svc)


async def test_wrong_password_is_refused_and_audited_without_the_name_typed(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.get("/console/login")
    page = await browser.post("/console/login", {"username": "erin", "password": "nope"})
    assert page.status == 401 and "do not match" in page.text
    await browser.get("/console/login")
    page = await browser.post("/console/login", {"username": "my secret pw",
                                                 "password": "x"})
    assert page.status == 401
    rows = [r for r in await svc.all(AuditEntry) if r.action == "login_failed"]
    assert [(r.actor, r.target_id is None) for r in rows] == [("erin", False),
                                                              ("unknown", True)]
    assert "erin" not in browser.cookies.get("triage_console", "")


async def test_sign_in_is_throttled_per_account(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    for _ in range(5):
        await browser.get("/console/login")
        await browser.post("/console/login", {"username": "erin", "password": "wrong"})
    await browser.get("/console/login")
    page = await browser.post("/console/login", {"username": "erin", "password": PASSWORD})
    assert page.status == 429 and "Too many attempts" in page.text
    svc.clock.advance(minutes=16)
    assert (await Browser(svc).sign_in("erin")).status == 200


async def test_sign_in_is_throttled_per_client(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    for n in range(20):
        await browser.get("/console/login")
        await browser.post("/console/login", {"username": f"guess{n}", "password": "x"})
    await browser.get("/console/login")
    page = await browser.post("/console/login", {"username": "erin", "password": PASSWORD})
    assert page.status == 429


async def test_admin_signs_in_with_a_totp_code_and_a_code_works_once(svc):
    _, secret = await add_staff(svc, "dave", role="admin", two_factor=True)
    browser = Browser(svc)
    await browser.get("/console/login")
    page = await browser.post("/console/login", {"username": "dave", "password": PASSWORD,
                                                 "next": "/console"})
    assert page.location.startswith("/console/login/code")
    # The second step is not done: nothing else opens.
    assert (await browser.get("/console")).location == "/console/login/code"
    await browser.get("/console/login/code")
    code = totp_code(svc, secret)
    page = await browser.post("/console/login/code", {"otp": code})
    assert page.status == 303
    assert (await browser.get("/console")).status == 200
    # The same code again, from another browser: refused.
    other = Browser(svc)
    await other.get("/console/login")
    await other.post("/console/login", {"username": "dave", "password": PASSWORD})
    await other.get("/console/login/code")
    page = await other.post("/console/login/code", {"otp": code})
    assert page.status == 401


async def test_admin_without_two_factor_must_enrol_before_anything_else(svc):
    await add_staff(svc, "dave", role="admin")
    browser = Browser(svc)
    await browser.get("/console/login")
    page = await browser.post("/console/login", {"username": "dave", "password": PASSWORD})
    page = await browser.follow(page)
    assert page.location == "/console/account/two-factor"
    page = await browser.follow(page)
    assert page.status == 200 and "<svg" in page.text
    secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page.text).group(1)
    page = await browser.post("/console/account/two-factor", {"otp": "000000"})
    assert page.status == 400 and "did not match" in page.text
    page = await browser.post("/console/account/two-factor", {"otp": totp_code(svc, secret)})
    codes = re.findall(r"<code>([0-9a-f]{5}-[0-9a-f]{5})</code>", page.text)
    assert len(codes) == 10
    assert (await browser.get("/console")).status == 200
    # A recovery code signs in, once.
    svc.clock.advance(minutes=1)
    for expected in (303, 401):
        other = Browser(svc)
        await other.get("/console/login")
        await other.post("/console/login", {"username": "dave", "password": PASSWORD})
        await other.get("/console/login/code")
        assert (await other.post("/console/login/code", {"otp": codes[0]})).status == expected


async def test_require_2fa_all_makes_staff_enrol_too(start_service, fake_twilio):
    svc = await start_service(fake_twilio, console={"require_2fa": "all"})
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.get("/console/login")
    page = await browser.follow(await browser.post(
        "/console/login", {"username": "erin", "password": PASSWORD}))
    assert page.location == "/console/account/two-factor"


async def test_idle_session_ends_and_says_why(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.sign_in("erin")
    svc.clock.advance(minutes=29)
    assert (await browser.get("/console")).status == 200  # activity keeps it open
    svc.clock.advance(minutes=31)
    page = await browser.get("/console")
    assert page.location.startswith("/console/login") and "ended=idle" in page.location
    assert "without activity" in (await browser.follow(page)).text
    [row] = await svc.all(ConsoleSession)
    assert row.end_reason == "idle"


async def test_disabling_an_account_ends_its_sessions_at_once(svc):
    staff_id, _ = await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.sign_in("erin")

    def disable(session: Session) -> None:
        session.execute(update(Staff).where(Staff.id == staff_id).values(disabled=True))

    await svc.services.writer.run(disable)
    page = await browser.get("/console")
    assert "ended=disabled" in page.location


async def test_logout_ends_the_session(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    page = await browser.sign_in("erin")
    old_cookie = browser.cookies["triage_console"]
    page = await browser.post("/console/logout")
    assert page.location == "/console/login?ended=logout"
    assert "triage_console" not in browser.cookies
    browser.cookies["triage_console"] = old_cookie  # a copied cookie opens nothing
    assert (await browser.get("/console")).location.startswith("/console/login")
    assert "logout" in await actions(svc)


async def test_a_person_sees_and_ends_their_other_sessions(svc):
    await add_staff(svc, "erin")
    office, phone = Browser(svc), Browser(svc)
    await office.sign_in("erin")
    await phone.sign_in("erin")
    page = await office.get("/console/account")
    ids = re.findall(r'/console/account/sessions/(\d+)/end', page.text)
    assert len(ids) == 2 and "(this one)" in page.text
    [phone_row] = [r for r in await svc.all(ConsoleSession)
                   if r.id != min(int(i) for i in ids)]
    await office.post(f"/console/account/sessions/{phone_row.id}/end")
    assert (await phone.get("/console")).location.startswith("/console/login")
    assert (await office.get("/console")).status == 200


async def test_a_post_without_the_right_csrf_token_is_refused(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.sign_in("erin")
    assert (await browser.post("/console/logout", csrf="forged")).status == 403
    assert (await browser.post("/console/logout", csrf="")).status == 403
    await browser.get("/console/login")
    fresh = Browser(svc)
    page = await fresh.post("/console/login", {"username": "erin", "password": PASSWORD},
                            csrf="made-up")
    assert page.status == 403


@pytest.mark.parametrize("path", ["/console/login", "/console", "/console/account",
                                  "/console/static/console.css", "/console/nowhere"])
async def test_every_console_answer_carries_the_security_headers(svc, path):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.sign_in("erin")
    page = await browser.get(path)
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Content-Type-Options"] == "nosniff"


async def test_signed_in_pages_say_how_long_the_server_took_and_sign_in_does_not(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    login = await browser.get("/console/login")
    assert "Server-Timing" not in login.headers
    await browser.sign_in("erin")
    for path in ("/console", "/console/queue/rows?tab=open"):
        timing = (await browser.get(path)).headers["Server-Timing"]
        name, _, duration = timing.partition(";dur=")
        assert name == "app" and float(duration) > 0


async def test_session_cookie_is_httponly_strict_and_secure_behind_https(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.get("/console/login")
    async with svc.client.post(
        "/console/login",
        data={"username": "erin", "password": PASSWORD, "csrf_token": browser.last.csrf()},
        headers=browser._headers(), allow_redirects=False,
    ) as response:
        [cookie] = [h for h in response.headers.getall("Set-Cookie") if "triage_console" in h]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    assert "Path=/console" in cookie


async def test_no_console_page_opens_without_signing_in(svc):
    for path in ("/console", "/console/account", "/console/queue/rows"):
        page = await Browser(svc).get(path)
        assert page.status == 303 and page.location.startswith("/console/login")
    page = await Browser(svc).post("/console/account/sound", {"sound": "off"})
    assert page.status in (401, 403)


async def test_login_next_never_leaves_the_console(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.get("/console/login")
    page = await browser.post("/console/login", {"username": "erin", "password": PASSWORD,
                                                 "next": "https://evil.example/x"})
    assert page.location == "/console"


async def test_behind_a_trusted_proxy_each_browser_is_throttled_on_its_own_address(
    start_service, fake_twilio
):
    svc = await start_service(fake_twilio, server={"trusted_proxies": ["127.0.0.1"]})
    await add_staff(svc, "erin")
    attacker = Browser(svc, extra_headers={"X-Forwarded-For": "203.0.113.7"})
    for n in range(20):
        await attacker.get("/console/login")
        await attacker.post("/console/login", {"username": f"guess{n}", "password": "x"})
    await attacker.get("/console/login")
    page = await attacker.post("/console/login", {"username": "erin", "password": PASSWORD})
    assert page.status == 429
    # Behind the same proxy, another browser is not locked out by the attacker's failures.
    staff = Browser(svc, extra_headers={"X-Forwarded-For": "198.51.100.20"})
    assert (await staff.sign_in("erin")).status == 200


async def test_without_a_trusted_proxy_a_forged_forwarded_header_changes_nothing(svc):
    await add_staff(svc, "erin")
    for n in range(20):
        liar = Browser(svc, extra_headers={"X-Forwarded-For": f"198.51.100.{n}"})
        await liar.get("/console/login")
        await liar.post("/console/login", {"username": f"guess{n}", "password": "x"})
    liar = Browser(svc, extra_headers={"X-Forwarded-For": "198.51.100.99"})
    await liar.get("/console/login")
    page = await liar.post("/console/login", {"username": "erin", "password": PASSWORD})
    assert page.status == 429

"""The admin pages, driven over real HTTP as an admin's browser would: staff accounts, the
on-call rota and its overrides, canned replies and the audit log; and nobody but a signed-in
admin with two-factor reaches any of them.

The team follows tests/test_escalation.py: rotation [alice, bob] from Monday 2026-11-30 09:00
Chicago, the clock at 10:00 that day, so alice is on call and carol is the backup. dave is
the admin signed in (with two-factor) unless a test says otherwise.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.orm import Session

from bot.console import admin
from bot.domain import StaffRole
from bot.storage.models import (
    AuditEntry,
    CannedReply,
    ConsoleSession,
    Handover,
    OncallOverride,
    RecoveryCode,
    Staff,
)
from bot.storage.queries import audit
from tests.conftest import Service
from tests.console_helpers import PASSWORD, Browser, add_staff
from tests.test_escalation import (
    ALICE,
    BOB,
    ONCALL,
    POLICY,
    Phones,
    open_emergency,
    register_team,
)

NEW_PASSWORD = "another long test password 02"
ERIN_PHONE = "+13145550150"


@pytest.fixture
async def svc(start_service, fake_twilio) -> Service:
    return await start_service(fake_twilio, oncall=ONCALL, escalation=POLICY)


@pytest.fixture
def phones(fake_twilio, started) -> Phones:
    return Phones(fake_twilio, started)


async def signed_in_admin(svc: Service, username: str = "dave") -> Browser:
    _, secret = await add_staff(svc, username, role="admin", two_factor=True)
    browser = Browser(svc)
    page = await browser.sign_in(username, totp_secret=secret)
    assert page.status == 200
    return browser


async def staff_named(svc: Service, username: str) -> Staff:
    [row] = [s for s in await svc.all(Staff) if s.username == username]
    return row


async def audit_rows(svc: Service, action: str | None = None) -> list[AuditEntry]:
    return [r for r in await svc.all(AuditEntry) if action is None or r.action == action]


async def signed_out(browser: Browser) -> bool:
    page = await browser.get("/console")
    return page.status == 303 and page.location.startswith("/console/login")


def admin_paths(ids: dict[str, int]) -> list[tuple[str, str]]:
    """Every route of the admin section, as (method, path), read from its route table so a
    new route is checked too."""
    found = []
    for route in admin.routes:
        assert isinstance(route, web.RouteDef)
        path = "/console" + re.sub(r"\{(\w+):.*?\}(?=/|$)", lambda m: str(ids[m.group(1)]),
                                   route.path)
        found.append((route.method, path))
    return found


# --- who may use the admin pages ---------------------------------------------------------------


@pytest.mark.parametrize("role", [StaffRole.STAFF, StaffRole.ONCALL])
async def test_every_admin_route_refuses_staff_and_oncall_roles(svc, role):
    await register_team(svc)
    await add_staff(svc, "frank", role=role)
    browser = Browser(svc)
    await browser.sign_in("frank")
    token = (await browser.get("/console")).csrf()
    ids = {"staff_id": (await staff_named(svc, "erin")).id, "override_id": 1, "canned_id": 1}
    before = len(await audit_rows(svc))
    paths = admin_paths(ids)
    assert {method for method, _ in paths} == {"GET", "POST"} and len(paths) > 15

    for method, path in paths:
        if method == "GET":
            page = await browser.get(path)
        else:
            page = await browser.post(path, {"confirm": "yes", "role": "admin",
                                             "password": NEW_PASSWORD, "username": "frank",
                                             "title": "x", "language": "en", "body": "x"},
                                      csrf=token)
        assert page.status == 403, (method, path, page.status)
        assert "role does not allow" in page.text

    erin = await staff_named(svc, "erin")
    assert (erin.role, erin.disabled) == ("staff", False)
    assert await svc.all(OncallOverride) == [] and await svc.all(CannedReply) == []
    assert len(await audit_rows(svc)) == before  # the sign-in only; nothing was changed


async def test_every_form_on_the_admin_pages_posts_to_an_admin_route_with_its_token(svc):
    await register_team(svc)
    browser = await signed_in_admin(svc)
    await browser.get("/console/admin/canned")
    await browser.post("/console/admin/canned", {"title": "Hi", "language": "en",
                                                 "body": "Hello."})
    await browser.get("/console/admin/oncall")
    await browser.post("/console/admin/oncall", {"username": "bob", "until": ""})
    alice = (await staff_named(svc, "alice")).id
    [canned] = await svc.all(CannedReply)
    [override] = await svc.all(OncallOverride)
    ids = {"staff_id": alice, "canned_id": canned.id, "override_id": override.id}
    posts = {path for method, path in admin_paths(ids) if method == "POST"}
    seen = set()
    for method, path in admin_paths(ids):
        if method != "GET":
            continue
        page = await browser.get(path)
        if page.status != 200:
            assert path == "/console/admin" and page.location == "/console/admin/"
            continue
        token = page.csrf()
        for action, body in re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>',
                                       page.text, re.S):
            assert f'name="csrf_token" value="{token}"' in body, (path, action)
            assert action in posts or action == "/console/logout", (path, action)
            seen.add(action)
    # Every action can be reached from a page (Enable shows once an account is disabled).
    assert posts - seen == {f"/console/admin/staff/{alice}/enable"}


async def test_admin_without_two_factor_is_sent_to_enrol_first(svc):
    await add_staff(svc, "dave", role="admin")
    browser = Browser(svc)
    await browser.get("/console/login")
    await browser.follow(await browser.post("/console/login",
                                            {"username": "dave", "password": PASSWORD}))
    token = (await browser.get("/console/account/two-factor")).csrf()
    for path in ("/console/admin/", "/console/admin/staff", "/console/admin/audit"):
        page = await browser.get(path)
        assert (page.status, page.location) == (303, "/console/account/two-factor")
    page = await browser.post("/console/admin/staff",
                              {"username": "mallory", "role": "admin", "password": PASSWORD},
                              csrf=token)
    assert (page.status, page.location) == (303, "/console/account/two-factor")
    assert [s.username for s in await svc.all(Staff)] == ["dave"]


# --- staff accounts ----------------------------------------------------------------------------


async def test_admin_adds_an_account_from_the_page_and_it_signs_in(svc):
    browser = await signed_in_admin(svc)
    await browser.get("/console/admin/staff")
    page = await browser.post("/console/admin/staff", {
        "username": "erin", "role": "oncall", "password": PASSWORD,
        "phone": "+1 314 555 0150", "telegram_chat_id": "",
    })
    erin = await staff_named(svc, "erin")
    assert (page.status, page.location) == (303, f"/console/admin/staff/{erin.id}?saved=added")
    assert erin.role == "oncall" and erin.password_hash.startswith("$argon2id$")
    assert svc.decrypt(erin.phone_enc) == ERIN_PHONE
    assert erin.phone_hash == svc.services.cipher.address_hash("sms", ERIN_PHONE)
    assert erin.telegram_enc is None

    listing = await browser.get("/console/admin/staff")
    assert "erin" in listing.text and "Phone: yes · Telegram: no" in listing.text
    assert ERIN_PHONE[2:] not in listing.text
    assert (await Browser(svc).sign_in("erin")).status == 200


@pytest.mark.parametrize(
    ("form", "said"),
    [
        pytest.param({"username": "Erin Smith"}, "Username must be 2-64 characters",
                     id="bad-username"),
        pytest.param({"username": "cli"}, "cli is a name the audit log uses",
                     id="reserved-name"),
        pytest.param({"password": "short"}, "Password must be at least 12 characters",
                     id="short-password"),
        pytest.param({"phone": "555-0150"}, "Phone must be E.164", id="bad-phone"),
        pytest.param({"telegram_chat_id": "@erin"}, "Telegram chat id must be a number",
                     id="bad-telegram"),
        pytest.param({"username": "dave"}, "that username is already registered",
                     id="taken-username"),
        pytest.param({"role": "boss"}, "Role must be staff, oncall or admin", id="bad-role"),
    ],
)
async def test_adding_an_account_refuses_bad_input_and_says_why(svc, form, said):
    browser = await signed_in_admin(svc)
    await browser.get("/console/admin/staff")
    page = await browser.post("/console/admin/staff", {
        "username": "erin", "role": "staff", "password": PASSWORD, **form})
    assert page.status == 400
    assert f"Not saved: {said}" in page.text
    assert [s.username for s in await svc.all(Staff)] == ["dave"]


async def test_disabling_signs_that_person_out_at_their_next_request(svc):
    admin_browser = await signed_in_admin(svc)
    erin_id, _ = await add_staff(svc, "erin")
    office, phone = Browser(svc), Browser(svc)
    await office.sign_in("erin")
    await phone.sign_in("erin")

    await admin_browser.get(f"/console/admin/staff/{erin_id}")
    page = await admin_browser.post(f"/console/admin/staff/{erin_id}/disable")
    assert page.status == 400 and "Tick the box to confirm" in page.text  # a crafted POST
    assert not await signed_out(office)

    page = await admin_browser.post(f"/console/admin/staff/{erin_id}/disable",
                                    {"confirm": "yes"})
    assert page.location == f"/console/admin/staff/{erin_id}?saved=disabled"
    assert await signed_out(office) and await signed_out(phone)
    assert {r.end_reason for r in await svc.all(ConsoleSession) if r.staff_id == erin_id} == {
        "disabled"}
    browser = Browser(svc)
    await browser.get("/console/login")
    page = await browser.post("/console/login", {"username": "erin", "password": PASSWORD})
    assert page.status == 401
    assert "Disabled" in (await admin_browser.get("/console/admin/staff")).text

    await admin_browser.get(f"/console/admin/staff/{erin_id}")
    await admin_browser.post(f"/console/admin/staff/{erin_id}/enable")
    assert (await Browser(svc).sign_in("erin")).status == 200


async def test_an_admin_cannot_disable_or_demote_themselves(svc):
    browser = await signed_in_admin(svc)
    dave = await staff_named(svc, "dave")
    await browser.get(f"/console/admin/staff/{dave.id}")
    page = await browser.post(f"/console/admin/staff/{dave.id}/disable", {"confirm": "yes"})
    assert page.status == 400 and "cannot disable your own account" in page.text
    page = await browser.post(f"/console/admin/staff/{dave.id}/role", {"role": "staff"})
    assert page.status == 400 and "cannot change your own role" in page.text
    dave = await staff_named(svc, "dave")
    assert (dave.role, dave.disabled) == ("admin", False)


async def test_a_role_change_takes_effect_at_the_next_request(svc):
    admin_browser = await signed_in_admin(svc)
    erin_id, _ = await add_staff(svc, "erin")
    frank_id, frank_secret = await add_staff(svc, "frank", role="admin", two_factor=True)
    erin, frank = Browser(svc), Browser(svc)
    await erin.sign_in("erin")
    await frank.sign_in("frank", totp_secret=frank_secret)
    assert (await erin.get("/console/admin/")).status == 403
    assert (await frank.get("/console/admin/")).status == 200

    for staff_id, role in ((erin_id, "admin"), (frank_id, "staff")):
        await admin_browser.get(f"/console/admin/staff/{staff_id}")
        page = await admin_browser.post(f"/console/admin/staff/{staff_id}/role",
                                        {"role": role})
        assert page.location == f"/console/admin/staff/{staff_id}?saved=role"

    # erin is an admin now, so she must set up two-factor before any page; frank is not.
    page = await erin.get("/console/admin/")
    assert (page.status, page.location) == (303, "/console/account/two-factor")
    assert (await frank.get("/console/admin/")).status == 403
    assert (await frank.get("/console")).status == 200


async def test_reset_password_ends_sessions_and_only_the_new_one_works(svc):
    admin_browser = await signed_in_admin(svc)
    erin_id, _ = await add_staff(svc, "erin")
    erin = Browser(svc)
    await erin.sign_in("erin")

    await admin_browser.get(f"/console/admin/staff/{erin_id}")
    page = await admin_browser.post(f"/console/admin/staff/{erin_id}/password",
                                    {"password": "short"})
    assert page.status == 400 and "Password must be at least 12" in page.text
    assert not await signed_out(erin)
    page = await admin_browser.post(f"/console/admin/staff/{erin_id}/password",
                                    {"password": NEW_PASSWORD})
    assert page.location.endswith("?saved=password")

    assert await signed_out(erin)
    other = Browser(svc)
    await other.get("/console/login")
    page = await other.post("/console/login", {"username": "erin", "password": PASSWORD})
    assert page.status == 401
    assert (await Browser(svc).sign_in("erin", NEW_PASSWORD)).status == 200


async def test_reset_two_factor_ends_sessions_and_the_person_enrols_again(svc):
    admin_browser = await signed_in_admin(svc)
    frank_id, secret = await add_staff(svc, "frank", role="admin", two_factor=True)
    frank = Browser(svc)
    await frank.sign_in("frank", totp_secret=secret)

    def codes(session: Session) -> None:
        session.add(RecoveryCode(staff_id=frank_id, code_hash="x" * 64,
                                 created_at=svc.clock()))

    await svc.services.writer.run(codes)

    await admin_browser.get(f"/console/admin/staff/{frank_id}")
    page = await admin_browser.post(f"/console/admin/staff/{frank_id}/two-factor",
                                    {"confirm": "yes"})
    assert page.location.endswith("?saved=two-factor")

    assert await signed_out(frank)
    row = await staff_named(svc, "frank")
    assert (row.totp_secret_enc, row.totp_confirmed_at, row.totp_last_step) == (None, None,
                                                                               None)
    assert [c for c in await svc.all(RecoveryCode) if c.staff_id == frank_id] == []
    # The password alone signs in now, straight to enrolment: no code is asked for.
    again = Browser(svc)
    await again.get("/console/login")
    page = await again.post("/console/login", {"username": "frank", "password": PASSWORD})
    assert page.location == "/console"
    assert (await again.get("/console")).location == "/console/account/two-factor"


async def test_phone_and_telegram_chat_are_set_and_removed_and_never_shown(svc):
    browser = await signed_in_admin(svc)
    erin_id, _ = await add_staff(svc, "erin", role="oncall")
    await browser.get(f"/console/admin/staff/{erin_id}")
    await browser.post(f"/console/admin/staff/{erin_id}/phone", {"phone": ERIN_PHONE})
    await browser.get(f"/console/admin/staff/{erin_id}")
    page = await browser.follow(await browser.post(
        f"/console/admin/staff/{erin_id}/telegram", {"telegram_chat_id": "700000150"}))
    assert "Phone: registered." in page.text and "Telegram chat: registered." in page.text
    assert ERIN_PHONE not in page.text and "700000150" not in page.text
    erin = await staff_named(svc, "erin")
    assert svc.decrypt(erin.phone_enc) == ERIN_PHONE
    assert svc.decrypt(erin.telegram_enc) == "700000150"

    # Another account cannot take the same number: a page or an ACK must know who it is.
    frank_id, _ = await add_staff(svc, "frank", role="oncall")
    await browser.get(f"/console/admin/staff/{frank_id}")
    page = await browser.post(f"/console/admin/staff/{frank_id}/phone", {"phone": ERIN_PHONE})
    assert page.status == 400 and "that phone is already registered" in page.text

    # An empty box is not a removal: only the Remove button takes a number away.
    await browser.get(f"/console/admin/staff/{erin_id}")
    page = await browser.post(f"/console/admin/staff/{erin_id}/phone", {"phone": ""})
    assert page.status == 400 and "Phone is empty; to take it away" in page.text
    assert (await staff_named(svc, "erin")).phone_enc is not None
    page = await browser.post(f"/console/admin/staff/{erin_id}/phone",
                              {"phone": "", "remove": "yes"})
    assert page.location.endswith("?saved=phone")
    erin = await staff_named(svc, "erin")
    assert (erin.phone_enc, erin.phone_hash) == (None, None)
    assert "Remove phone" not in (await browser.get(f"/console/admin/staff/{erin_id}")).text


# --- the on-call rota --------------------------------------------------------------------------


async def test_an_override_from_the_page_pages_that_person_and_shows_on_the_rota(svc, phones):
    await register_team(svc)
    browser = await signed_in_admin(svc)
    page = await browser.get("/console/admin/oncall")
    assert "On call now: <strong>alice</strong>, until Mon 07 Dec 09:00 (the rotation)" in (
        page.text)

    page = await browser.post("/console/admin/oncall",
                              {"username": "bob", "until": "2026-12-01T09:00"})
    assert page.location == "/console/admin/oncall?saved=override"
    page = await browser.follow(page)
    assert "On call now: <strong>bob</strong>, until Tue 01 Dec 09:00 (an override)" in (
        page.text)
    [override] = await svc.all(OncallOverride)
    assert override.until.isoformat() == "2026-12-01T15:00:00+00:00"  # 09:00 Chicago
    assert f'action="/console/admin/oncall/{override.id}/end"' in page.text

    # The person put on call is told until when, and asked to confirm.
    [told] = await phones.expect(1)
    assert (told.to, told.body) == (BOB, "You are now on call for emergencies, until "
                                         "tomorrow at 9:00 AM Chicago time. Reply ACK to "
                                         "confirm you got this.")
    await open_emergency(svc, phones, paged=(BOB,))

    page = await browser.post(f"/console/admin/oncall/{override.id}/end")
    assert page.location == "/console/admin/oncall?saved=ended"
    page = await browser.follow(page)
    assert "On call now: <strong>alice</strong>" in page.text
    assert f'action="/console/admin/oncall/{override.id}/end"' not in page.text
    [told] = await phones.expect(1)
    assert (told.to, told.body) == (ALICE, "You are now on call for emergencies, until "
                                           "Monday, December 7 at 9:00 AM Chicago time. "
                                           "Reply ACK to confirm you got this.")
    await open_emergency(svc, phones, contact="+13145550160", paged=(ALICE,))


async def test_the_gap_banner_goes_as_soon_as_someone_is_put_on_call(start_service,
                                                                      fake_twilio):
    svc = await start_service(fake_twilio, oncall={**ONCALL, "rotation": []},
                              escalation=POLICY)
    await register_team(svc)
    browser = await signed_in_admin(svc)
    page = await browser.get("/console/admin/oncall")
    assert "Nobody is on call right now" in page.text and 'class="banner danger"' in page.text
    await browser.post("/console/admin/oncall", {"username": "carol", "until": ""})
    page = await browser.get("/console")
    assert 'class="banner danger"' not in page.text
    page = await browser.get("/console/admin/oncall")
    assert "On call now: <strong>carol</strong>, until further notice (an override)" in (
        page.text)


async def test_the_rota_page_shows_backup_next_handovers_and_gaps(start_service, fake_twilio):
    svc = await start_service(fake_twilio, oncall={**ONCALL, "rotation": ["alice", "bob",
                                                                          "ghost"]},
                              escalation=POLICY)
    await register_team(svc)
    await add_staff(svc, "frank", role="oncall")  # no phone, no Telegram chat
    browser = await signed_in_admin(svc)
    page = await browser.get("/console/admin/oncall")
    assert "Backup: <strong>carol</strong>" in page.text
    assert "ghost is not a staff member (a gap in the rota)" in page.text
    handovers = re.findall(r'<td data-label="From">([^<]+)</td>\s*<td data-label="On call">'
                           r'(\w+)( <span class="badge warn">Cannot be paged)?', page.text)
    assert handovers[:4] == [("Mon 07 Dec 09:00", "bob", ""),
                             ("Mon 14 Dec 09:00", "ghost",
                              ' <span class="badge warn">Cannot be paged'),
                             ("Mon 21 Dec 09:00", "alice", ""),
                             ("Mon 28 Dec 09:00", "bob", "")]
    assert len(handovers) == 8

    # frank can be put on call, but the page says nobody can reach him.
    await browser.post("/console/admin/oncall", {"username": "frank", "until": ""})
    page = await browser.get("/console/admin/oncall")
    assert "frank is on call but has no phone or Telegram chat for pages." in page.text


@pytest.mark.parametrize(
    ("form", "said"),
    [
        pytest.param({"username": "erin"}, "erin has role staff; on-call needs oncall or admin",
                     id="staff-role"),
        pytest.param({"username": "nobody"}, "no active staff member named nobody",
                     id="unknown"),
        pytest.param({"username": "bob", "until": "2026-11-30T09:59"}, "Until is in the past",
                     id="past"),
        pytest.param({"username": "bob", "until": "soon"}, "Until must be an ISO date-time",
                     id="not-a-time"),
    ],
)
async def test_an_override_refuses_bad_input_and_says_why(svc, form, said):
    await register_team(svc)
    browser = await signed_in_admin(svc)
    await browser.get("/console/admin/oncall")
    page = await browser.post("/console/admin/oncall", form)
    assert page.status == 400 and f"Not saved: {said}" in page.text
    assert await svc.all(OncallOverride) == []


# --- canned replies ----------------------------------------------------------------------------


async def test_canned_replies_are_added_edited_and_deleted(svc):
    browser = await signed_in_admin(svc)
    await browser.get("/console/admin/canned")
    page = await browser.post("/console/admin/canned", {
        "title": "Hours", "language": "en",
        "body": "We are open 9-5 Monday to Friday.\r\nCall 1-888-373-7888 any time. <b>",
    })
    [row] = await svc.all(CannedReply)
    assert page.location == f"/console/admin/canned/{row.id}?saved=canned"
    assert row.body == "We are open 9-5 Monday to Friday.\nCall 1-888-373-7888 any time. <b>"
    listing = await browser.get("/console/admin/canned")
    assert "Hours" in listing.text and "1 part" in listing.text
    assert "any time. &lt;b&gt;" in listing.text and "<b>" not in listing.text

    await browser.get(f"/console/admin/canned/{row.id}")
    await browser.post(f"/console/admin/canned/{row.id}", {
        "title": "Horario", "language": "es", "body": "Abrimos de 9 a 5."})
    [row] = await svc.all(CannedReply)
    assert (row.title, row.language, row.body) == ("Horario", "es", "Abrimos de 9 a 5.")

    page = await browser.get(f"/console/admin/canned/{row.id}")
    page = await browser.post(f"/console/admin/canned/{row.id}/delete")
    assert page.status == 400 and "Tick the box" in page.text
    assert len(await svc.all(CannedReply)) == 1
    page = await browser.post(f"/console/admin/canned/{row.id}/delete", {"confirm": "yes"})
    assert page.location == "/console/admin/canned?saved=deleted"
    assert await svc.all(CannedReply) == []


async def test_a_canned_reply_must_fit_two_sms_and_one_not_plain_text_is_flagged(svc):
    browser = await signed_in_admin(svc)
    await browser.get("/console/admin/canned")
    page = await browser.post("/console/admin/canned", {
        "title": "Long", "language": "en", "body": "x" * 307})
    assert page.status == 400
    assert "Not saved: Text is 3 SMS parts long; a canned reply may be at most 2" in page.text
    assert "x" * 307 in page.text  # what was typed is kept for fixing
    assert await svc.all(CannedReply) == []

    await browser.post("/console/admin/canned", {
        "title": "Plain", "language": "en", "body": "x" * 306})
    await browser.get("/console/admin/canned")
    page = await browser.post("/console/admin/canned", {
        "title": "Ayuda", "language": "es", "body": "Estamos aquí para ayudarte “hoy”."})
    assert page.status == 303
    page = await browser.follow(page)
    assert "Not plain SMS text, because of" in page.text
    assert "<code>í</code>, <code>“</code>, <code>”</code>" in page.text
    assert 'it would read: <q class="canned-body">Estamos aqui para ayudarte &#34;hoy&#34;.' in (
        page.text)
    listing = await browser.get("/console/admin/canned")
    assert listing.text.count("Not plain text") == 1
    assert "2 parts" in listing.text


# --- the audit log -----------------------------------------------------------------------------


async def write_audit(svc: Service, *rows: dict[str, Any]) -> None:
    def unit(session: Session) -> None:
        for row in rows:
            audit(session, svc.clock(), **row)

    await svc.services.writer.run(unit)


async def test_the_audit_log_filters_by_user_and_by_conversation(svc, phones):
    await register_team(svc)
    browser = await signed_in_admin(svc)
    n, _ = await open_emergency(svc, phones)  # conversation 1, escalation n
    erin = await staff_named(svc, "erin")
    await write_audit(
        svc,
        {"action": "conversation_viewed", "target_type": "conversation", "target_id": 1,
         "actor": "erin", "actor_staff_id": erin.id},
        {"action": "conversation_viewed", "target_type": "conversation", "target_id": 2,
         "actor": "erin", "actor_staff_id": erin.id},
    )

    page = await browser.get("/console/admin/audit?user=erin")
    assert page.status == 200
    assert re.findall(r'data-label="Who">(\w+)<', page.text) == ["erin", "erin"]
    assert "conversation #2" in page.text and "conversation #1" in page.text

    page = await browser.get("/console/admin/audit?conversation=1")
    what = re.findall(r'data-label="What">([^<]+)<', page.text)
    # The outbox's own row for the page may or may not be written yet.
    assert [w for w in what if w != "page sent"] == ["conversation viewed", "page queued",
                                                     "escalation opened"]
    assert f'href="/console/escalations/{n}"' in page.text
    assert "conversation #2" not in page.text

    page = await browser.get("/console/admin/audit?user=erin&conversation=2")
    assert re.findall(r'data-label="What">([^<]+)<', page.text) == ["conversation viewed"]

    page = await browser.get("/console/admin/audit?user=cli")
    assert "Nothing found." in page.text
    assert (await browser.get("/console/admin/audit?conversation=1%27")).status == 400


async def test_the_audit_log_shows_the_newest_hundred_then_older(svc):
    browser = await signed_in_admin(svc)
    await write_audit(svc, *({"action": f"test_{i:03}", "target_type": "conversation",
                              "target_id": 7} for i in range(150)))
    page = await browser.get("/console/admin/audit?conversation=7")
    what = re.findall(r'data-label="What">test (\d+)<', page.text)
    assert what == [f"{i:03}" for i in range(149, 49, -1)]
    older = re.search(r'href="(/console/admin/audit\?[^"]+)">Older', page.text).group(1)
    assert "conversation=7" in older
    page = await browser.get(older.replace("&amp;", "&"))
    what = re.findall(r'data-label="What">test (\d+)<', page.text)
    assert what == [f"{i:03}" for i in range(49, -1, -1)]
    assert "Older" not in page.text


async def test_each_admin_action_writes_its_audit_row(svc):
    await register_team(svc)
    browser = await signed_in_admin(svc)
    dave = await staff_named(svc, "dave")
    before = len(await audit_rows(svc))

    async def act(path: str, form: dict[str, str], page: str) -> None:
        await browser.get(page)
        answer = await browser.post(path, form)
        assert answer.status == 303, (path, answer.text[:300])

    staff = "/console/admin/staff"
    await act(staff, {"username": "gina", "role": "staff", "password": PASSWORD,
                      "phone": "+13145550161", "telegram_chat_id": "700000161"}, staff)
    gina = (await staff_named(svc, "gina")).id
    page = f"{staff}/{gina}"
    await act(f"{page}/role", {"role": "oncall"}, page)
    await act(f"{page}/phone", {"phone": "+13145550162"}, page)
    await act(f"{page}/telegram", {"telegram_chat_id": "", "remove": "yes"}, page)
    await act(f"{page}/password", {"password": NEW_PASSWORD}, page)
    await act(f"{page}/two-factor", {"confirm": "yes"}, page)
    await act(f"{page}/disable", {"confirm": "yes"}, page)
    await act(f"{page}/enable", {}, page)
    await act("/console/admin/oncall", {"username": "bob", "until": ""}, "/console/admin/oncall")
    [override] = await svc.all(OncallOverride)
    await act(f"/console/admin/oncall/{override.id}/end", {}, "/console/admin/oncall")
    await act("/console/admin/canned", {"title": "Hi", "language": "en", "body": "Hello."},
              "/console/admin/canned")
    [canned] = await svc.all(CannedReply)
    canned_page = f"/console/admin/canned/{canned.id}"
    await act(canned_page, {"title": "Hi", "language": "en", "body": "Hello there."},
              canned_page)
    await act(f"{canned_page}/delete", {"confirm": "yes"}, canned_page)

    rows = (await audit_rows(svc))[before:]
    bob = (await staff_named(svc, "bob")).id
    alice = (await staff_named(svc, "alice")).id
    to_bob, back_to_alice = await svc.all(Handover)
    assert [(r.action, r.target_type, r.target_id, r.detail) for r in rows] == [
        ("staff_added", "staff", gina, "role=staff phone=yes telegram=yes"),
        ("staff_role_changed", "staff", gina, "role staff -> oncall"),
        ("staff_phone_set", "staff", gina, ""),
        ("staff_telegram_removed", "staff", gina, ""),
        ("password_reset", "staff", gina, "sessions_ended=0"),
        ("two_factor_reset", "staff", gina, "sessions_ended=0"),
        ("staff_disabled", "staff", gina, "sessions_ended=0"),
        ("staff_enabled", "staff", gina, ""),
        ("oncall_override_set", "staff", bob, "until=further notice"),
        # Who is on call changed: the person taking over is texted to confirm.
        ("handover", "handover", to_bob.id, f"staff={bob} announced=yes channels=1"),
        ("oncall_override_ended", "staff", bob, f"override={override.id}"),
        ("handover", "handover", back_to_alice.id, f"staff={alice} announced=yes channels=1"),
        ("canned_reply_added", "canned_reply", canned.id, "language=en"),
        ("canned_reply_changed", "canned_reply", canned.id, "changed=body"),
        ("canned_reply_deleted", "canned_reply", canned.id, "language=en"),
    ]
    assert {(r.actor, r.actor_staff_id) for r in rows} == {("dave", dave.id)}
    page = await browser.get("/console/admin/audit?user=dave")
    assert page.text.count('data-label="Who">dave<') == len(rows) + 2  # and the sign-in
    assert f'href="/console/admin/staff/{gina}">gina</a>' in page.text

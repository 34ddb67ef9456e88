"""Emergencies in the console: the list, one escalation's page (where the link in a page
SMS leads), acknowledge and resolve from a browser, over real HTTP.

The team is the one tests/test_escalation.py pages, now with console passwords: alice is on
call (rotation [alice, bob] from Monday 2026-11-30 09:00 Chicago, the clock at 10:00), carol
is the backup, bob the other on-call member, and erin has role "staff". A contact's
emergency comes in by a signed Twilio webhook; pages go out through the outbox to the fake
Twilio. Each test sweeps the ladder by hand.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy.orm import Session

from bot.storage.models import AuditEntry, Staff
from tests.conftest import PUBLIC_URL, Service
from tests.console_helpers import Browser, add_staff
from tests.fakes.twilio_api import FakeTwilio
from tests.fixtures import CONTACT_NUMBER, load_twilio_form
from tests.test_escalation import (
    ALICE,
    BOB,
    CAROL,
    ERIN,
    ONCALL,
    POLICY,
    STRANGER,
    Phones,
    acknowledged,
    audit_of,
    escalation,
    open_emergency,
    settled,
    staff_says,
    sweep_after,
)

PHONES = {"alice": ALICE, "bob": BOB, "carol": CAROL, "erin": ERIN}


async def add_member(svc: Service, username: str, role: str = "oncall") -> int:
    """A staff account that can sign in to the console and is paged at its phone."""
    staff_id, _ = await add_staff(svc, username, role=role)
    cipher = svc.services.cipher
    phone = PHONES[username]

    def unit(session: Session) -> None:
        staff = session.get(Staff, staff_id)
        assert staff is not None
        staff.phone_enc = cipher.encrypt(phone)
        staff.phone_hash = cipher.address_hash("sms", phone)

    await svc.services.writer.run(unit)
    return staff_id


async def start_team(start_service: Any, fake_twilio: FakeTwilio, **overrides: Any) -> Service:
    oncall = {**ONCALL, **overrides.pop("oncall", {})}
    policy = {**POLICY, **overrides.pop("escalation", {})}
    svc = await start_service(fake_twilio, oncall=oncall, escalation=policy, **overrides)
    for name in ("alice", "bob", "carol"):
        await add_member(svc, name)
    await add_member(svc, "erin", role="staff")
    return svc


@pytest.fixture
async def svc(start_service, fake_twilio) -> Service:
    return await start_team(start_service, fake_twilio)


@pytest.fixture
def phones(fake_twilio, started) -> Phones:
    return Phones(fake_twilio, started)


def page_path(n: int) -> str:
    return f"/console/escalations/{n}"


async def signed_in(svc: Service, username: str, n: int | None = None) -> Browser:
    browser = Browser(svc)
    await browser.sign_in(username, next_path=page_path(n) if n else "/console/escalations")
    return browser


async def ack(browser: Browser, n: int) -> Any:
    await browser.get(page_path(n))
    return await browser.post(f"{page_path(n)}/ack")


async def resolve(browser: Browser, n: int, note: str = "") -> Any:
    await browser.get(page_path(n))
    return await browser.post(f"{page_path(n)}/resolve", {"note": note})


# --- the link in the page, and two taps ------------------------------------------------------


async def test_page_link_signs_in_to_the_escalation_and_acknowledges_in_one_tap(svc, phones):
    n, page = await open_emergency(svc, phones)
    path = page.split(PUBLIC_URL, 1)[1]
    assert path == page_path(n)
    browser = Browser(svc)
    first = await browser.get(path)
    assert first.status == 303
    assert first.location == f"/console/login?next={path}"

    landed = await browser.sign_in("alice", next_path=path)
    assert landed.status == 200
    assert f"EMERGENCY #{n}" in landed.text
    # The one thing to do comes first: the button, then the conversation, then the timeline.
    button = landed.text.index(f'action="{path}/ack"')
    assert button < landed.text.index("Open the conversation") < landed.text.index("Timeline")
    assert "started 10:00" in landed.text and "Paged: alice" in landed.text

    done = await browser.post(f"{path}/ack")  # the second tap, after the link
    assert done.status == 303 and done.location == f"{path}?done=acked"
    after = await browser.follow(done)
    assert "Acknowledged by alice at 10:00. Paging has stopped." in after.text
    assert f'action="{path}/ack"' not in after.text
    assert (await escalation(svc, n)).status == "acked"


# --- the list --------------------------------------------------------------------------------


async def test_list_shows_open_ones_first_then_those_resolved_this_week(svc, phones):
    first, _ = await open_emergency(svc, phones)
    second, _ = await open_emergency(svc, phones, contact=STRANGER)
    assert await staff_says(svc, phones, f"RESOLVE {first}", from_=CAROL) == f"Resolved #{first}."
    browser = await signed_in(svc, "erin")
    page = await browser.get("/console/escalations")
    assert page.status == 200
    text = page.text
    assert text.index(f"EMERGENCY #{second}") < text.index("Resolved in the last 7 days") \
        < text.index(f"EMERGENCY #{first}")
    assert "carol, 10:00" in text  # resolved by whom, and when
    [conv_first, conv_second] = [(await escalation(svc, k)).conversation_id
                                 for k in (first, second)]
    assert f'href="/console/conversations/{conv_second}"' in text
    assert f'href="/console/conversations/{conv_first}"' in text

    svc.clock.advance(days=8)
    later = await Browser(svc).sign_in("erin", next_path="/console/escalations")
    assert f"EMERGENCY #{second}" in later.text
    assert f"EMERGENCY #{first}" not in later.text
    assert "None resolved in the last 7 days." in later.text


# --- the timeline ----------------------------------------------------------------------------


async def test_timeline_shows_each_page_and_its_delivery_status(svc, phones, fake_twilio):
    n, _ = await open_emergency(svc, phones)
    await settled(svc)
    browser = await signed_in(svc, "carol", n)
    page = await browser.get(page_path(n))
    assert "Opened: Emergency words in a message." in page.text
    assert "Step 1: paging the person on call." in page.text
    assert "Page to alice by SMS." in page.text
    assert '<span class="badge ">Sent</span>' in page.text
    assert "Next page at 10:05 to alice, carol." in page.text

    [sent] = [m for m in fake_twilio.sent if m.to == ALICE]
    form = load_twilio_form("status_delivered", MessageSid=sent.sid, SmsSid=sent.sid)
    status, _ = await svc.post_form("/webhooks/twilio/status", form)
    assert status == 200
    page = await browser.get(page_path(n))
    assert '<span class="badge ok">Delivered</span>' in page.text
    assert "Sent" not in page.text.split("Timeline", 1)[1]

    assert await sweep_after(svc, 300) == [n]
    await phones.expect(2)
    await settled(svc)
    page = await browser.get(page_path(n))
    assert "Step 2: paging the person on call and the backup." in page.text
    assert "Page to carol by SMS." in page.text
    assert page.text.count("Page to alice by SMS.") == 2
    assert "Paged: alice, carol" in page.text

    # An ack at the very moment of a step comes after that step's pages.
    await ack(browser, n)
    page = await browser.get(page_path(n))
    timeline = page.text.split("Timeline", 1)[1]
    assert timeline.index("Page to carol by SMS.") < timeline.index(
        "Acknowledged by carol. Paging stopped.")


# --- acknowledge -----------------------------------------------------------------------------


async def test_console_acknowledge_stops_the_ladder_like_ack_by_text(svc, phones, fake_twilio,
                                                                      clock):
    n, _ = await open_emergency(svc, phones)
    browser = await signed_in(svc, "alice", n)
    done = await ack(browser, n)
    assert done.status == 303
    row = await escalation(svc, n)
    assert row.status == "acked" and row.acked_at == clock.now
    assert row.acked_by == await staff_of(svc, "alice")
    [acked] = [a for a in await audit_of(svc, n) if a.action == "escalation_acked"]
    assert (acked.actor, acked.actor_staff_id) == ("alice", await staff_of(svc, "alice"))

    sent = len(fake_twilio.sent)
    for seconds in (301, 600, 300, 598):  # past every step, short of the ack timeout
        assert await sweep_after(svc, seconds) == []
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == sent
    assert (await escalation(svc, n)).status == "acked"


async def test_ack_by_text_after_a_console_ack_answers_clearly(svc, phones):
    n, _ = await open_emergency(svc, phones)
    await ack(await signed_in(svc, "bob", n), n)
    assert (await escalation(svc, n)).acked_by == await staff_of(svc, "bob")
    # The text path is the same handler: it acknowledges again and says so.
    assert await staff_says(svc, phones, f"ACK {n}") == acknowledged(n)
    assert (await escalation(svc, n)).status == "acked"
    await resolve(await signed_in(svc, "bob", n), n)
    assert (await escalation(svc, n)).status == "resolved"
    assert await staff_says(svc, phones, f"ACK {n}") == f"No open emergency #{n}. None are open."
    await svc.outbox_idle()
    await phones.nothing_more()


async def test_acknowledging_an_acknowledged_one_says_who_has_it(svc, phones):
    n, _ = await open_emergency(svc, phones)
    await ack(await signed_in(svc, "alice", n), n)
    bob = await signed_in(svc, "bob", n)
    again = await ack(bob, n)
    assert again.status == 303 and again.location == f"{page_path(n)}?done=already-acked"
    page = await bob.follow(again)
    assert "It was already acknowledged, so nothing changed." in page.text
    assert "Acknowledged by alice at 10:00." in page.text
    assert (await escalation(svc, n)).acked_by == await staff_of(svc, "alice")
    assert [a.actor for a in await audit_of(svc, n) if a.action == "escalation_acked"] == \
        ["alice"]


# --- resolve ---------------------------------------------------------------------------------


async def test_resolve_with_a_note_keeps_it_encrypted_and_shows_it_to_staff(svc, phones,
                                                                           fake_twilio, clock):
    n, _ = await open_emergency(svc, phones)
    carol = await signed_in(svc, "carol", n)
    note = "Called the hotline with her; police on the way <b>now</b>."
    done = await resolve(carol, n, note)
    assert done.status == 303 and done.location == f"{page_path(n)}?done=resolved"
    page = await carol.follow(done)
    assert "Resolved by carol at 10:00." in page.text
    assert "Called the hotline with her; police on the way &lt;b&gt;now&lt;/b&gt;." in page.text
    assert "Resolve</button>" not in page.text

    row = await escalation(svc, n)
    assert row.status == "resolved" and row.resolved_at == clock.now
    assert row.resolved_by == await staff_of(svc, "carol")
    assert row.resolution_note_enc and "hotline" not in row.resolution_note_enc
    assert svc.decrypt(row.resolution_note_enc) == note
    [resolved] = [a for a in await audit_of(svc, n) if a.action == "escalation_resolved"]
    assert (resolved.actor, resolved.actor_staff_id) == ("carol", await staff_of(svc, "carol"))
    assert "hotline" not in resolved.detail

    erin = await signed_in(svc, "erin", n)
    assert "Called the hotline with her" in (await erin.get(page_path(n))).text

    sent = len(fake_twilio.sent)
    for seconds in (301, 600, 1800):
        assert await sweep_after(svc, seconds) == []
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == sent


async def test_resolving_a_resolved_one_is_a_clear_message(svc, phones):
    n, _ = await open_emergency(svc, phones)
    alice = await signed_in(svc, "alice", n)
    bob = await signed_in(svc, "bob", n)
    await bob.get(page_path(n))  # bob's page still has the form
    await resolve(alice, n, "first")
    late = await bob.post(f"{page_path(n)}/resolve", {"note": "second"})
    assert late.status == 303 and late.location == f"{page_path(n)}?done=already-resolved"
    page = await bob.follow(late)
    assert "It had already been resolved, so nothing changed." in page.text
    assert "Resolved by alice at 10:00." in page.text
    assert svc.decrypt((await escalation(svc, n)).resolution_note_enc) == "first"
    acked_late = await ack(bob, n)
    assert acked_late.location == f"{page_path(n)}?done=already-resolved"
    assert [a.action for a in await audit_of(svc, n)].count("escalation_resolved") == 1


async def test_a_note_too_long_is_refused_and_kept_in_the_box(svc, phones):
    n, _ = await open_emergency(svc, phones)
    alice = await signed_in(svc, "alice", n)
    page = await resolve(alice, n, "x" * 2001)
    assert page.status == 400 and "The note is too long" in page.text
    assert "x" * 2001 in page.text
    assert (await escalation(svc, n)).status == "open"


# --- who may ---------------------------------------------------------------------------------


async def test_staff_role_sees_and_opens_the_conversation_but_cannot_acknowledge(svc, phones):
    n, _ = await open_emergency(svc, phones)
    erin = await signed_in(svc, "erin", n)
    page = await erin.get(page_path(n))
    assert page.status == 200 and f"EMERGENCY #{n}" in page.text
    conversation = (await escalation(svc, n)).conversation_id
    assert f'href="/console/conversations/{conversation}"' in page.text
    assert "/ack" not in page.text and "/resolve" not in page.text
    assert "Only on-call staff and admins can acknowledge." in page.text
    # The rule is the server's: a crafted POST with a good token is refused all the same.
    for action in ("ack", "resolve"):
        refused = await erin.post(f"{page_path(n)}/{action}", csrf=page.csrf())
        assert refused.status == 403
    row = await escalation(svc, n)
    assert row.status == "open" and row.acked_by is None
    done = {"escalation_acked", "escalation_resolved"}
    assert not done & set(actions(await audit_of(svc, n)))


async def test_posts_without_the_form_token_change_nothing(svc, phones):
    n, _ = await open_emergency(svc, phones)
    alice = await signed_in(svc, "alice", n)
    for action in ("ack", "resolve"):
        refused = await alice.post(f"{page_path(n)}/{action}", csrf="not-the-token")
        assert refused.status == 403
    assert (await escalation(svc, n)).status == "open"


async def test_unknown_number_is_a_404_page(svc, phones):
    n, _ = await open_emergency(svc, phones)
    alice = await signed_in(svc, "alice", n)
    for number in (n + 1, 99999999999999999999):
        page = await alice.get(page_path(number))
        assert page.status == 404 and "No emergency #" in page.text
        assert "Content-Security-Policy" in page.headers
        await alice.get(page_path(n))
        missing = await alice.post(f"{page_path(number)}/ack")
        assert missing.status == 404
    assert (await alice.get("/console/escalations/abc")).status == 404
    assert (await escalation(svc, n)).status == "open"


# --- no content, the gap banner, live -------------------------------------------------------


async def test_escalation_pages_hold_no_contact_text(start_service, fake_twilio):
    # With previews on, the page SMS quotes the contact: the console must still not.
    svc = await start_team(start_service, fake_twilio, escalation={"include_preview": True})
    phones = Phones(fake_twilio, [svc])
    n, page = await open_emergency(svc, phones, text="he has a gun at the Zanzibar motel")
    assert "Zanzibar" in page
    alice = await signed_in(svc, "alice", n)
    pages = [await alice.get(page_path(n)), await alice.get("/console/escalations")]
    await ack(alice, n)
    pages.append(await alice.get(page_path(n)))
    await resolve(alice, n, "done")
    pages += [await alice.get(page_path(n)), await alice.get("/console/escalations")]
    for seen in pages:
        assert seen.status == 200
        assert "zanzibar" not in seen.text.lower()
        assert "gun" not in seen.text.lower()
        assert CONTACT_NUMBER not in seen.text and CONTACT_NUMBER[2:] not in seen.text
        assert ALICE not in seen.text and ALICE[2:] not in seen.text


async def test_rota_gap_shows_the_banner_and_nobody_on_call(start_service, fake_twilio):
    svc = await start_team(start_service, fake_twilio, oncall={"rotation": []})
    n, _ = await open_emergency(svc, Phones(fake_twilio, [svc]), paged=(ALICE, BOB, CAROL))
    page = await (await signed_in(svc, "alice", n)).get(page_path(n))
    assert "Nobody is on call right now." in page.text
    assert "On call now: <strong>nobody</strong>" in page.text
    assert "Nobody was on call, so every on-call member and admin was paged." in page.text


async def test_acknowledging_tells_open_pages_over_the_live_stream(svc, phones):
    n, _ = await open_emergency(svc, phones)
    watcher = await signed_in(svc, "erin", n)
    alice = await signed_in(svc, "alice", n)
    async with svc.client.get("/console/events", headers=watcher._headers()) as stream:
        assert stream.status == 200
        async with asyncio.timeout(5):
            assert (await stream.content.readline()).startswith(b"retry:")
            await ack(alice, n)
            while True:
                line = (await stream.content.readline()).decode().strip()
                if line.startswith("data: {") and json.loads(line[6:]) == \
                        {"kind": "escalation", "id": n}:
                    break


# --- helpers ---------------------------------------------------------------------------------


async def staff_of(svc: Service, username: str) -> int:
    [member] = [s for s in await svc.all(Staff) if s.username == username]
    return member.id


def actions(rows: list[AuditEntry]) -> list[str]:
    return [row.action for row in rows]

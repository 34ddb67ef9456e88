"""The on-call loop checks itself at each handover (issue 11): the person taking over is
texted that they are on call, until when, and replies ACK; if they do not within
`[oncall] confirm_minutes`, the backup and the admins are told. Across daylight-saving
changes the handover stays at 09:00 local, and the text says so.

The team follows tests/test_escalation.py (alice, bob on call in turn; carol the backup),
with dave an admin. The scheduler's jobs are moved out of the way (sweep every hour); each
test runs the handover check by hand at the moment it sets on the clock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.config import ConfigError
from bot.domain import OutboxKind
from bot.storage.models import AuditEntry, Escalation, Handover, Outbox, Staff
from schedules.handovers import handover_job
from tests.conftest import PUBLIC_URL, Service, sent_in_all
from tests.console_helpers import Browser, add_staff
from tests.fakes.telegram_api import FakeTelegram
from tests.test_escalation import (
    ALICE,
    ALICE_CHAT,
    BOB,
    CAROL,
    DAVE,
    POLICY,
    Phones,
    acknowledged,
    open_emergency,
    register_staff,
    staff_says,
)

CHICAGO = ZoneInfo("America/Chicago")
BOB_CHAT = 700000144
CONFIRM_MINUTES = 15


def chicago(*wall: int) -> datetime:
    return datetime(*wall, tzinfo=CHICAGO).astimezone(UTC)  # type: ignore[misc]


def rota(start: str) -> dict[str, Any]:
    return {"rotation": ["alice", "bob"], "backup": "carol", "handover": "monday 09:00",
            "start": start, "confirm_minutes": CONFIRM_MINUTES}


# Clocks go forward on Sunday 2027-03-14 and back on Sunday 2026-11-01 in Chicago. With
# these starts bob takes over on the Monday before each change, alice on the Monday after.
SPRING = rota("2027-03-01")
FALL = rota("2026-10-19")


def on_call(until: str) -> str:
    return (f"You are now on call for emergencies, until {until} Chicago time. "
            f"Reply ACK to confirm you got this.")


def not_confirmed(name: str, since: str) -> str:
    return (f"{name} has not confirmed being on call (since {since}). Please reach them, or "
            f"put someone else on call: {PUBLIC_URL}/console/admin/oncall")


async def check_at(svc: Service, at: datetime | None = None) -> None:
    """Run the handover check, at `at` if given. The outbox is idle first, so no send is in
    flight while the clock jumps."""
    await svc.outbox_idle()
    if at is not None:
        svc.clock.now = at
    await handover_job(svc.services)


async def register_team(svc: Service, telegram: bool = False) -> None:
    await register_staff(svc, "alice", phone=ALICE, telegram=ALICE_CHAT if telegram else None)
    await register_staff(svc, "bob", phone=BOB, telegram=BOB_CHAT if telegram else None)
    await register_staff(svc, "carol", phone=CAROL)
    await register_staff(svc, "dave", role="admin", phone=DAVE)


async def handovers(svc: Service) -> list[tuple[str | None, bool, bool, bool]]:
    """(who, announced, confirmed, backup and admins told) for each handover, in order."""
    names = {s.id: s.username for s in await svc.all(Staff)}
    return [(names.get(h.staff_id), h.announced, h.confirmed_at is not None,
             h.unconfirmed_told_at is not None) for h in await svc.all(Handover)]


async def test_unconfirmed_handover_across_spring_forward_tells_backup_and_admins(
    start_service, fake_twilio, clock, started
):
    clock.now = chicago(2027, 3, 8, 8, 59)
    svc = await start_service(fake_twilio, oncall=SPRING, escalation=POLICY)
    await register_team(svc)
    phones = Phones(fake_twilio, started)
    # The first check only notes that alice is on call: nothing changed hands.
    await check_at(svc)
    await phones.nothing_more()

    await check_at(svc, chicago(2027, 3, 8, 9, 0))
    [told] = await phones.expect(1)
    # The week runs across the change, 167 hours, to 9:00 AM on the wall clock.
    assert (told.to, told.body) == (BOB, on_call("Monday, March 15 at 9:00 AM"))
    await check_at(svc)  # the same handover, seen again: announced once
    await check_at(svc, svc.clock.now + timedelta(minutes=CONFIRM_MINUTES, seconds=-1))
    await phones.nothing_more()

    await check_at(svc, svc.clock.now + timedelta(seconds=1))
    warning = not_confirmed("bob", "today at 9:00 AM")
    assert sorted((m.to, m.body) for m in await phones.expect(2)) == [
        (CAROL, warning), (DAVE, warning)]
    await check_at(svc, svc.clock.now + timedelta(hours=1))
    await phones.nothing_more()

    # bob answers late: he is thanked, and those who were told hear it is fine after all.
    await svc.sms("ACK", from_=BOB)
    sent = {(m.to, m.body) for m in await phones.expect(3)}
    assert sent == {(BOB, "Thank you: you are on call until Monday, March 15 at 9:00 AM "
                          "Chicago time."),
                    (CAROL, "bob has now confirmed being on call."),
                    (DAVE, "bob has now confirmed being on call.")}

    # 09:00 CDT is 14:00 UTC, an hour earlier in UTC than the handover a week before.
    assert chicago(2027, 3, 15, 9, 0) == datetime(2027, 3, 15, 14, 0, tzinfo=UTC)
    await check_at(svc, chicago(2027, 3, 15, 8, 59))
    await phones.nothing_more()
    await check_at(svc, chicago(2027, 3, 15, 9, 0))
    [told] = await phones.expect(1)
    assert (told.to, told.body) == (ALICE, on_call("Monday, March 22 at 9:00 AM"))

    assert await handovers(svc) == [("alice", False, False, False), ("bob", True, True, True),
                                    ("alice", True, False, False)]
    actions = [(a.action, a.target_type) for a in await svc.all(AuditEntry)]
    assert actions == [("handover", "handover")] * 2 + [
        ("handover_unconfirmed", "handover"), ("handover_confirmed", "handover"),
        ("handover", "handover")]
    # None of it is an emergency.
    assert await svc.all(Escalation) == []
    assert {r.kind for r in await svc.all(Outbox)} == {OutboxKind.HANDOVER,
                                                       OutboxKind.STAFF_NOTICE}


async def test_handover_confirmed_by_telegram_across_fall_back_tells_nobody(
    start_service, fake_twilio, fake_telegram: FakeTelegram, clock, started
):
    clock.now = chicago(2026, 10, 26, 8, 59)
    svc = await start_service(fake_twilio, fake_telegram, oncall=FALL, escalation=POLICY)
    await register_team(svc, telegram=True)
    phones = Phones(fake_twilio, started)
    await check_at(svc)

    await check_at(svc, chicago(2026, 10, 26, 9, 0))
    text = on_call("Monday, November 2 at 9:00 AM")
    [sms] = await phones.expect(1)
    [chat] = await fake_telegram.wait_for_messages(1)
    # Every channel a page can take is tried.
    assert (sms.to, sms.body) == (BOB, text)
    assert (chat.chat_id, chat.text) == (BOB_CHAT, text)

    await svc.telegram("ack", chat_id=BOB_CHAT)
    answer = (await fake_telegram.wait_for_messages(2))[1]
    assert (answer.chat_id, answer.text) == (
        BOB_CHAT, "Thank you: you are on call until Monday, November 2 at 9:00 AM Chicago time.")
    await check_at(svc, svc.clock.now + timedelta(minutes=CONFIRM_MINUTES + 1))
    await phones.nothing_more()
    sent_in_all(fake_telegram, 2)  # the outbox is quiet: phones.nothing_more waited

    # 09:00 CST is 15:00 UTC, an hour later in UTC than a week before.
    await check_at(svc, datetime(2026, 11, 2, 14, 59, tzinfo=UTC))
    await phones.nothing_more()
    await check_at(svc, datetime(2026, 11, 2, 15, 0, tzinfo=UTC))
    [sms] = await phones.expect(1)
    assert (sms.to, sms.body) == (ALICE, on_call("Monday, November 9 at 9:00 AM"))
    assert await handovers(svc) == [("alice", False, False, False), ("bob", True, True, False),
                                    ("alice", True, False, False)]
    [confirmed] = [a for a in await svc.all(AuditEntry) if a.action == "handover_confirmed"]
    assert confirmed.actor == "bob"


async def test_an_ack_with_one_emergency_open_acknowledges_it_and_confirms_the_handover(
    start_service, fake_twilio, clock, started
):
    """An open emergency wins: the bare ACK acknowledges it, as it always has, and it also
    confirms the handover."""
    clock.now = chicago(2027, 3, 8, 8, 59)
    svc = await start_service(fake_twilio, oncall=SPRING, escalation=POLICY)
    await register_team(svc)
    phones = Phones(fake_twilio, started)
    await check_at(svc)
    await check_at(svc, chicago(2027, 3, 8, 9, 0))
    await phones.expect(1)

    n, _ = await open_emergency(svc, phones, paged=(BOB,))
    answer = await staff_says(svc, phones, "ACK", from_=BOB)
    assert answer == (f"{acknowledged(n)} Thank you: you are on call until Monday, March 15 "
                      f"at 9:00 AM Chicago time.")
    [row] = await svc.all(Escalation)
    assert row.status == "acked"
    await check_at(svc, svc.clock.now + timedelta(minutes=CONFIRM_MINUTES + 1))
    await phones.nothing_more()


async def test_a_bare_ack_with_two_emergencies_open_still_asks_which(
    start_service, fake_twilio, clock, started
):
    clock.now = chicago(2027, 3, 8, 8, 59)
    svc = await start_service(fake_twilio, oncall=SPRING, escalation=POLICY)
    await register_team(svc)
    phones = Phones(fake_twilio, started)
    await check_at(svc)
    await check_at(svc, chicago(2027, 3, 8, 9, 0))
    await phones.expect(1)
    first, _ = await open_emergency(svc, phones, paged=(BOB,))
    second, _ = await open_emergency(svc, phones, contact="+13145550171", paged=(BOB,))

    answer = await staff_says(svc, phones, "ACK", from_=BOB)
    assert answer == (f"Reply ACK and the number. Open: #{first}, #{second}. Thank you: you "
                      f"are on call until Monday, March 15 at 9:00 AM Chicago time.")
    assert [e.status for e in await svc.all(Escalation)] == ["open", "open"]
    # An ACK from someone else confirms nobody's handover.
    assert await staff_says(svc, phones, f"ACK {first}", from_=CAROL) == acknowledged(first)
    assert await handovers(svc) == [("alice", False, False, False), ("bob", True, True, False)]


async def test_the_console_confirms_a_handover_as_an_ack_does(start_service, fake_twilio, clock,
                                                          started):
    clock.now = chicago(2027, 3, 8, 8, 59)
    svc = await start_service(fake_twilio, oncall=SPRING, escalation=POLICY)
    await register_staff(svc, "alice", phone=ALICE)
    bob, _ = await add_staff(svc, "bob", role="oncall")  # with a password, to sign in
    await register_staff(svc, "carol", phone=CAROL)

    async def give_bob_a_phone(session: Any) -> None:
        staff = await session.get(Staff, bob)
        staff.phone_enc = svc.services.cipher.encrypt(BOB)
        staff.phone_hash = svc.services.cipher.address_hash("sms", BOB)
        await session.commit()

    await svc.query(give_bob_a_phone)
    phones = Phones(fake_twilio, started)
    await check_at(svc)
    await check_at(svc, chicago(2027, 3, 8, 9, 0))
    await phones.expect(1)

    browser = Browser(svc)
    page = await browser.sign_in("bob")
    banner = ("You are now on call for emergencies, until Monday, March 15 at 9:00 AM "
              "Chicago time.")
    assert banner in page.text and 'action="/console/oncall/confirm"' in page.text
    answer = await browser.post("/console/oncall/confirm")
    assert answer.location == "/console"
    assert banner not in (await browser.follow(answer)).text
    assert await handovers(svc) == [("alice", False, False, False), ("bob", True, True, False)]
    [confirmed] = [a for a in await svc.all(AuditEntry) if a.action == "handover_confirmed"]
    assert (confirmed.actor, confirmed.actor_staff_id) == ("bob", bob)
    await check_at(svc, svc.clock.now + timedelta(minutes=CONFIRM_MINUTES + 1))
    await phones.nothing_more()

    # Anyone else signed in sees no such banner, and their confirming changes nothing.
    await add_staff(svc, "erin")
    other = Browser(svc)
    page = await other.sign_in("erin")
    assert "You are now on call" not in page.text
    assert (await other.post("/console/oncall/confirm")).location == "/console"
    assert len([a for a in await svc.all(AuditEntry) if a.action == "handover_confirmed"]) == 1


async def test_two_processes_announce_each_handover_once(start_service, fake_twilio, clock,
                                                  started):
    """Two app instances on one database (and one clock) run the check at the same moments,
    several times over: the handover is announced once, and its warning sent once."""
    clock.now = chicago(2027, 3, 8, 8, 59)
    a = await start_service(fake_twilio, oncall=SPRING, escalation=POLICY)
    b = await start_service(fake_twilio, oncall=SPRING, escalation=POLICY)
    await register_team(a)
    phones = Phones(fake_twilio, started)

    async def both_at(at: datetime) -> None:
        await a.outbox_idle()
        clock.now = at
        for _ in range(3):
            await asyncio.gather(handover_job(a.services), handover_job(b.services))

    await both_at(chicago(2027, 3, 8, 8, 59))
    await both_at(chicago(2027, 3, 8, 9, 0))
    [told] = await phones.expect(1)
    assert told.to == BOB
    await both_at(chicago(2027, 3, 8, 9, CONFIRM_MINUTES))
    assert sorted(m.to for m in await phones.expect(2)) == sorted([CAROL, DAVE])
    await both_at(chicago(2027, 3, 8, 10, 0))
    await phones.nothing_more()
    assert len(await a.all(Handover)) == 2


async def test_a_handover_to_nobody_texts_nobody(start_service, fake_twilio, clock,
                                          started):
    """bob is not a staff member (a gap in the rota): nothing to announce or confirm."""
    clock.now = chicago(2027, 3, 8, 8, 59)
    svc = await start_service(fake_twilio, oncall=SPRING, escalation=POLICY)
    await register_staff(svc, "alice", phone=ALICE)
    await register_staff(svc, "dave", role="admin", phone=DAVE)
    phones = Phones(fake_twilio, started)
    await check_at(svc)
    await check_at(svc, chicago(2027, 3, 8, 9, 0))
    await check_at(svc, chicago(2027, 3, 8, 10, 0))
    await phones.nothing_more()
    assert await handovers(svc) == [("alice", False, False, False), (None, False, False, False)]


@pytest.mark.parametrize("minutes", [0, 24 * 60 + 1, "15"])
async def test_confirm_minutes_is_checked(env, minutes):
    with pytest.raises(ConfigError, match=r"oncall\.confirm_minutes"):
        env.settings(oncall={"confirm_minutes": minutes})

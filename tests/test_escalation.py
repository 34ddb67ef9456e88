"""On-call escalation end to end: a contact's emergency comes in by a signed webhook, pages go
out through the outbox to the fake Twilio (and the fake Telegram), staff answer ACK / RESOLVE
by text, and the ladder's next steps fire when the clock is moved and the sweep runs.

The team in every test, with rotation [alice, bob] starting Monday 2026-11-30 09:00 Chicago
and the clock at 10:00 that day: alice is on call, carol is the backup, bob is the other
on-call member, and erin has role "staff" (never paged). The scheduler's own sweep is moved
out of the way (sweep_interval_seconds=3600): each test sweeps by hand with sweep_job.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bot.gsm import is_gsm7, septets
from bot.storage.database import make_engine
from bot.storage.models import (
    AuditEntry,
    Contact,
    Conversation,
    Escalation,
    Message,
    OncallOverride,
    Outbox,
    Staff,
)
from handlers.escalation import _fire
from schedules.escalations import sweep_job
from tests.conftest import PUBLIC_URL, Service, example_config, quiet, sent_in_all
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio, SentSms
from tests.fixtures import CONTACT_NUMBER, TELEGRAM_CONTACT_ID
from tests.waiting import eventually

ALICE = "+13145550142"  # on call this week
CAROL = "+13145550143"  # backup
BOB = "+13145550144"  # on call next week
ERIN = "+13145550145"  # role "staff"
DAVE = "+13145550146"  # admin, registered only where a test says so
STRANGER = "+13145550147"  # nobody on staff
ALICE_CHAT = 700000142  # alice's Telegram chat

ONCALL = {"rotation": ["alice", "bob"], "backup": "carol", "handover": "monday 09:00",
          "start": "2026-11-30"}
POLICY = {"repage_after_seconds": 300, "everyone_after_seconds": 600, "repeats": 1,
          "ack_timeout_seconds": 1800, "sweep_interval_seconds": 3600}

EN = example_config()["replies"]["en"]
EMERGENCY_REPLY = EN["emergency"].format(safety=EN["safety"])
FIRST_CONTACT_REPLY = (
    f"Thank you for reaching out. {EN['safety']} Staff are in now and will answer you here "
    f"soon. {EN['intake_question']}"
)
PAGE = re.compile(
    r"^EMERGENCY #(\d+) \(sms\) \d\d:\d\d\. Reply ACK \1\. "
    r"https://triage\.example\.org/console/escalations/\1$"
)


def acknowledged(n: int) -> str:
    return f"Acknowledged #{n}. Reply RESOLVE {n} when it is handled. {link(n)}"


def link(n: int) -> str:
    return f"{PUBLIC_URL}/console/escalations/{n}"


# --- helpers ---------------------------------------------------------------------------------


class Phones:
    """What reaches the fake Twilio, read step by step: `expect(n)` returns exactly the n
    texts that arrived since the last read, and fails if fewer arrive or, once every
    service the test started is quiet (its outbox idle), more."""

    def __init__(self, fake: FakeTwilio, services: list[Service]) -> None:
        self.fake = fake
        self.services = services
        self.seen = 0

    async def expect(self, n: int) -> list[SentSms]:
        await self.fake.wait_for_messages(self.seen + n)
        await self.nothing_more(self.seen + n)
        new = self.fake.sent[self.seen:]
        self.seen += n
        return new

    async def nothing_more(self, total: int | None = None) -> None:
        await quiet(self.services)
        sent_in_all(self.fake, self.seen if total is None else total)


def pages_to(sent: list[SentSms], number: str) -> list[str]:
    return [m.body for m in sent if m.to == number and m.body.startswith("EMERGENCY #")]


async def register_staff(
    svc: Service,
    username: str,
    role: str = "oncall",
    phone: str | None = None,
    telegram: int | None = None,
    disabled: bool = False,
) -> int:
    cipher = svc.services.cipher
    staff = Staff(username=username, role=role, password_hash="x", disabled=disabled,
                  created_at=svc.clock.now)
    if phone is not None:
        staff.phone_enc = cipher.encrypt(phone)
        staff.phone_hash = cipher.address_hash("sms", phone)
    if telegram is not None:
        staff.telegram_enc = cipher.encrypt(str(telegram))
        staff.telegram_hash = cipher.address_hash("telegram", str(telegram))

    async def add(session: Any) -> int:
        session.add(staff)
        await session.commit()
        return staff.id

    return await svc.query(add)


async def register_team(svc: Service) -> dict[str, int]:
    return {
        "alice": await register_staff(svc, "alice", phone=ALICE, telegram=ALICE_CHAT),
        "bob": await register_staff(svc, "bob", phone=BOB),
        "carol": await register_staff(svc, "carol", phone=CAROL),
        "erin": await register_staff(svc, "erin", role="staff", phone=ERIN),
    }


async def staff_id(svc: Service, username: str) -> int:
    [member] = [s for s in await svc.all(Staff) if s.username == username]
    return member.id


async def add_row(svc: Service, row: Any) -> None:
    async def add(session: Any) -> None:
        session.add(row)
        await session.commit()

    await svc.query(add)


async def sweep_after(svc: Service, seconds: float) -> list[int]:
    """Move the clock on, run one sweep; returns the escalations that paged. Waits for the
    outbox first: a send in flight must not see its lease run out as the clock jumps."""
    await settled(svc)
    svc.clock.advance(seconds=seconds)
    return await sweep_job(svc.services)


async def open_emergency(
    svc: Service,
    phones: Phones,
    text: str = "he has a gun",
    contact: str = CONTACT_NUMBER,
    paged: tuple[str, ...] = (ALICE,),
) -> tuple[int, str]:
    """A contact texts an emergency. Checks that they get one reply and that the first page
    reaches exactly `paged`; returns the escalation's number and the page text."""
    status, _ = await svc.sms(text, from_=contact)
    assert status == 200
    sent = await phones.expect(1 + len(paged))
    assert [m.to for m in sent].count(contact) == 1
    pages = [m for m in sent if m.to != contact]
    assert sorted(m.to for m in pages) == sorted(paged)
    [page] = {m.body for m in pages}
    number = re.match(r"EMERGENCY #(\d+) ", page)
    assert number is not None, page
    return int(number.group(1)), page


async def staff_says(svc: Service, phones: Phones, text: str, from_: str = ALICE) -> str:
    """A staff member texts the bot; returns the one answer they get back."""
    await svc.sms(text, from_=from_)
    [answer] = await phones.expect(1)
    assert answer.to == from_
    return answer.body


async def audit_of(svc: Service, escalation_id: int) -> list[AuditEntry]:
    return [a for a in await svc.all(AuditEntry)
            if a.target_type == "escalation" and a.target_id == escalation_id]


async def escalation(svc: Service, escalation_id: int) -> Escalation:
    [row] = [e for e in await svc.all(Escalation) if e.id == escalation_id]
    return row


async def settled(svc: Service, seconds: float = 5.0) -> list[Outbox]:
    """Wait until the outbox has nothing pending or in flight, due or not; returns its rows."""

    async def rows() -> list[Outbox] | None:
        found = await svc.all(Outbox)
        return None if any(r.status in ("pending", "sending") for r in found) else found

    return await eventually(rows, "the outbox to settle", seconds)


StartTeam = Callable[..., Awaitable[Service]]


@pytest.fixture
def start(start_service, fake_twilio) -> StartTeam:
    """Start the app with the test policy (overridable) and register the team."""

    async def start(
        oncall: dict[str, Any] | None = None,
        escalation: dict[str, Any] | None = None,
        telegram_api: FakeTelegram | None = None,
        team: bool = True,
    ) -> Service:
        svc = await start_service(
            fake_twilio,
            telegram_api=telegram_api,
            oncall={**ONCALL, **(oncall or {})},
            escalation={**POLICY, **(escalation or {})},
        )
        if team:
            await register_team(svc)
        return svc

    return start


@pytest.fixture
async def svc(start) -> Service:
    return await start()


@pytest.fixture
def phones(fake_twilio, started) -> Phones:
    return Phones(fake_twilio, started)


# --- the first page, and ACK by text -------------------------------------------------------


async def test_emergency_pages_on_call_without_contact_words(svc, phones):
    status, _ = await svc.sms("he has a gun")
    assert status == 200
    sent = await phones.expect(2)
    assert [m.body for m in sent if m.to == CONTACT_NUMBER] == [EMERGENCY_REPLY]
    [page] = pages_to(sent, ALICE)
    match = PAGE.fullmatch(page)
    assert match, page
    n = int(match.group(1))
    assert "(sms) 10:00." in page  # opened at 10:00 Chicago time, not 16:00 UTC
    assert "gun" not in page.lower()
    assert CONTACT_NUMBER not in page and CONTACT_NUMBER[2:] not in page
    [row] = await svc.all(Escalation)
    assert row.id == n

    assert await staff_says(svc, phones, f"ACK {n}") == acknowledged(n)
    assert await sweep_after(svc, 300) == []
    assert await sweep_after(svc, 600) == []
    await phones.nothing_more()
    # The ACK was a staff command, not a contact writing in.
    assert len(await svc.all(Contact)) == 1
    assert len(await svc.all(Conversation)) == 1
    assert len(await svc.all(Message)) == 2  # the emergency and its reply


async def test_full_ladder_pages_on_call_then_backup_then_everyone(svc, phones):
    n, page = await open_emergency(svc, phones)  # step 0: alice only
    assert await sweep_after(svc, 299) == []  # a step never fires early
    steps = [
        (1, [ALICE, CAROL]),  # +300 s: on call again, with the backup
        (600, [ALICE, BOB, CAROL]),  # +600 s: every on-call member, never role "staff"
        (300, [ALICE]),  # repeats=1: the ladder once more
        (300, [ALICE, CAROL]),
        (600, [ALICE, BOB, CAROL]),
    ]
    for seconds, recipients in steps:
        assert await sweep_after(svc, seconds) == [n]
        sent = await phones.expect(len(recipients))
        assert sorted(m.to for m in sent) == sorted(recipients)
        assert {m.body for m in sent} == {page}
    assert await sweep_after(svc, 300) == []
    assert await sweep_after(svc, 86400) == []
    await phones.nothing_more()
    assert (await escalation(svc, n)).next_step_at is None


async def test_ack_stops_the_ladder(svc, phones, clock):
    n, _ = await open_emergency(svc, phones)
    await staff_says(svc, phones, f"ACK {n}")
    row = await escalation(svc, n)
    assert row.status == "acked" and row.acked_at == clock.now
    assert row.acked_by == (await staff_id(svc, "alice"))
    assert row.next_step_at == clock.now + timedelta(seconds=1800)  # only the ack timeout
    for seconds in (300, 600, 300, 599):
        assert await sweep_after(svc, seconds) == []
    await phones.nothing_more()


async def test_ack_timeout_pages_again(svc, phones):
    n, page = await open_emergency(svc, phones)
    await staff_says(svc, phones, f"ACK {n}")
    assert await sweep_after(svc, 1799) == []
    assert await sweep_after(svc, 1) == [n]
    [again] = await phones.expect(1)
    assert (again.to, again.body) == (ALICE, page)
    assert (await escalation(svc, n)).status == "open"
    assert "ack_timed_out" in [a.action for a in await audit_of(svc, n)]
    # The ladder runs again from the top.
    assert await sweep_after(svc, 300) == [n]
    assert sorted(m.to for m in await phones.expect(2)) == [ALICE, CAROL]


async def test_resolve_ends_it(svc, phones, clock):
    n, _ = await open_emergency(svc, phones)
    assert await staff_says(svc, phones, f"RESOLVE {n}", from_=CAROL) == f"Resolved #{n}."
    row = await escalation(svc, n)
    assert row.status == "resolved" and row.resolved_at == clock.now
    assert row.resolved_by == row.acked_by == (await staff_id(svc, "carol"))
    for seconds in (300, 600, 1800, 7 * 86400):
        assert await sweep_after(svc, seconds) == []
    await phones.nothing_more()
    assert await staff_says(svc, phones, f"ACK {n}") == f"No open emergency #{n}. None are open."


async def test_bare_ack_when_one_open(svc, phones):
    n, _ = await open_emergency(svc, phones)
    assert await staff_says(svc, phones, "ack") == acknowledged(n)
    assert (await escalation(svc, n)).status == "acked"


async def test_bare_ack_with_two_open_asks_which(svc, phones):
    first, _ = await open_emergency(svc, phones)
    second, _ = await open_emergency(svc, phones, contact=STRANGER)
    answer = await staff_says(svc, phones, "ACK")
    assert answer == f"Reply ACK and the number. Open: #{first}, #{second}."
    assert [e.status for e in await svc.all(Escalation)] == ["open", "open"]
    assert await staff_says(svc, phones, f"ACK #{second}") == acknowledged(second)


async def test_unknown_escalation_number_gets_clear_reply(svc, phones):
    n, _ = await open_emergency(svc, phones)
    assert await staff_says(svc, phones, "ACK 999") == f"No open emergency #999. Open: #{n}."
    assert (await escalation(svc, n)).status == "open"
    assert await sweep_after(svc, 300) == [n]  # the ladder goes on


async def test_ack_with_an_absurd_number_gets_the_clear_reply(svc, phones):
    """A typo must not turn the on-call person's ACK into a failed write: they would get no
    answer, and the message would sit in the spool."""
    n, _ = await open_emergency(svc, phones)
    answer = await staff_says(svc, phones, "ACK 99999999999999999999")
    assert answer == f"No open emergency #99999999999999999999. Open: #{n}."
    assert len(svc.services.spool) == 0


async def test_other_text_from_staff_gets_the_commands(svc, phones):
    answer = await staff_says(svc, phones, "hello, is this working?", from_=ERIN)
    assert answer == (
        "Commands: ACK 42 to acknowledge emergency #42, RESOLVE 42 when it is handled."
    )
    assert await svc.all(Contact) == [] and await svc.all(Conversation) == []


async def test_ack_from_unregistered_number_is_a_contact_message(svc, phones):
    n, _ = await open_emergency(svc, phones)
    await svc.sms(f"ACK {n}", from_=STRANGER)
    [reply] = await phones.expect(1)
    assert (reply.to, reply.body) == (STRANGER, FIRST_CONTACT_REPLY)
    assert len(await svc.all(Conversation)) == 2
    assert (await escalation(svc, n)).status == "open"


async def test_disabled_staff_number_is_treated_as_contact(svc, phones):
    await register_staff(svc, "frank", phone=STRANGER, disabled=True)
    n, _ = await open_emergency(svc, phones)
    await svc.sms(f"ACK {n}", from_=STRANGER)
    [reply] = await phones.expect(1)
    assert (reply.to, reply.body) == (STRANGER, FIRST_CONTACT_REPLY)
    assert (await escalation(svc, n)).status == "open"
    # Nor is a disabled member paged when everyone is.
    await sweep_after(svc, 300)
    await phones.expect(2)
    await sweep_after(svc, 600)
    assert sorted(m.to for m in await phones.expect(3)) == sorted([ALICE, BOB, CAROL])


# --- who is on call ------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [[], ["zed"]], ids=["empty", "unknown-member"])
async def test_rota_gap_pages_every_oncall_member_and_admin(start, phones, rotation):
    svc = await start(oncall={"rotation": rotation})
    await register_staff(svc, "dave", role="admin", phone=DAVE)
    n, _ = await open_emergency(svc, phones, paged=(ALICE, BOB, CAROL, DAVE))
    [queued] = [a for a in await audit_of(svc, n) if a.action == "page_queued"]
    assert "rota_gap" in queued.detail


async def test_override_beats_rotation(svc, phones, clock):
    now = clock.now
    await add_row(svc, OncallOverride(staff_id=await staff_id(svc, "bob"),
                                      starts_at=now - timedelta(hours=1), until=None,
                                      created_at=now))
    # A newer override that has already ended counts for nothing.
    await add_row(svc, OncallOverride(staff_id=await staff_id(svc, "carol"),
                                      starts_at=now - timedelta(hours=2),
                                      until=now - timedelta(minutes=1), created_at=now))
    await open_emergency(svc, phones, paged=(BOB,))


# --- failures ------------------------------------------------------------------------------
# The contact writes by Telegram in these, so the only SMS is alice's page.


async def test_page_that_fails_on_sms_is_delivered_on_telegram(
    start, fake_twilio, fake_telegram
):
    svc = await start(telegram_api=fake_telegram)
    fake_twilio.fail_next(400, code=21211)
    await svc.telegram("he has a gun")
    sent = await fake_telegram.wait_for_messages(2)
    await svc.assert_sent(fake_telegram, 2)
    assert [m.text for m in sent if m.chat_id == TELEGRAM_CONTACT_ID] == [EMERGENCY_REPLY]
    [page] = [m.text for m in sent if m.chat_id == ALICE_CHAT]
    assert re.fullmatch(r"EMERGENCY #(\d+) \(telegram\) 10:00\. Reply ACK \1\. \S+", page)
    [attempt] = fake_twilio.attempts
    assert (attempt.fields["To"], attempt.fields["Body"], attempt.status) == (ALICE, page, 400)
    assert fake_twilio.sent == []

    rows = [r for r in await settled(svc) if r.kind == "page"]
    assert [(r.channel, r.status) for r in rows] == [("sms", "failed"), ("telegram", "sent")]
    assert rows[1].failover_of == rows[0].id
    n = rows[0].escalation_id
    actions = [a.action for a in await audit_of(svc, n)]
    assert actions.count("page_failed") == 1 and actions.count("page_sent") == 1
    [failover] = [a for a in await audit_of(svc, n) if a.action == "page_failover"]
    assert failover.detail == "from=sms to=telegram"

    # alice can answer where the page reached her.
    await svc.telegram(f"ACK {n}", chat_id=ALICE_CHAT)
    answer = (await fake_telegram.wait_for_messages(3))[2]
    assert (answer.chat_id, answer.text) == (ALICE_CHAT, acknowledged(n))


async def test_page_failing_temporarily_fails_over_and_retries_so_both_channels_deliver(
    start, fake_twilio, fake_telegram, clock
):
    """A 500 from Twilio: the page goes out on Telegram at once, and the SMS is still
    retried with backoff, so alice gets it on both."""
    svc = await start(telegram_api=fake_telegram)
    fake_twilio.fail_next(500)
    await svc.telegram("he has a gun")
    sent = await fake_telegram.wait_for_messages(2)
    [page] = [m.text for m in sent if m.chat_id == ALICE_CHAT]
    await svc.assert_sent(fake_twilio, 0)  # the retry is not due yet
    clock.advance(seconds=2)
    svc.services.worker.wake()
    [sms] = await fake_twilio.wait_for_messages(1)
    assert (sms.to, sms.body) == (ALICE, page)
    await svc.assert_sent(fake_twilio, 1)
    await svc.assert_sent(fake_telegram, 2)  # failed over once, not on every retry

    rows = [r for r in await settled(svc) if r.kind == "page"]
    assert [(r.channel, r.status, r.attempts) for r in rows] == [
        ("sms", "sent", 2), ("telegram", "sent", 1)
    ]
    actions = [a.action for a in await audit_of(svc, rows[0].escalation_id)]
    assert actions.count("page_failover") == 1 and actions.count("page_sent") == 2


# --- the page's text -----------------------------------------------------------------------


async def test_include_preview_quotes_the_contact_only_when_configured(start, phones):
    svc = await start(escalation={"include_preview": True})
    n, page = await open_emergency(svc, phones, text="please  help\nhe has a gun")
    assert page == (f"EMERGENCY #{n} (sms) 10:00. Reply ACK {n}. {link(n)} "
                    '"please help he has a gun"')


async def test_page_is_one_gsm7_sms(svc, phones):
    _, page = await open_emergency(svc, phones)
    assert is_gsm7(page) and septets(page) <= 160


async def test_quoted_preview_keeps_the_page_one_gsm7_sms(start, phones):
    """Whatever the contact wrote (accents, emoji, curly quotes), the page to on-call is
    still a single GSM-7 SMS."""
    svc = await start(escalation={"include_preview": True})
    _, page = await open_emergency(
        svc, phones,
        text="¡Auxilio! Él me quitó el pasaporte 🙏 “no puedo salir” de aquí, ayúdenme por favor",
    )
    assert page.startswith("EMERGENCY #") and '"' in page  # the preview is there
    assert is_gsm7(page), page
    assert septets(page) <= 160


# --- two processes ---------------------------------------------------------------------------


async def test_two_sweepers_never_send_the_same_page(start, phones):
    """Two app instances on the same SQLite file (same tmp_path, same clock) sweep at once,
    several rounds per step: each step of each escalation is queued and sent exactly once."""
    a = await start()
    b = await start(team=False)  # same database: the team is already there
    alice, carol = await staff_id(a, "alice"), await staff_id(a, "carol")
    contacts = [f"+131455501{50 + i}" for i in range(20)]
    for contact in contacts:
        await a.sms("he has a gun", from_=contact)
    await phones.expect(40)  # 20 emergency replies, 20 pages to alice
    ids = [e.id for e in await a.all(Escalation)]
    assert len(ids) == 20

    for seconds, recipients in ((300, [ALICE, CAROL]), (600, [ALICE, BOB, CAROL])):
        await settled(a)  # nothing in flight while the clock jumps past the outbox lease
        a.clock.advance(seconds=seconds)
        fired: list[int] = []
        for _ in range(4):
            for result in await asyncio.gather(sweep_job(a.services), sweep_job(b.services)):
                fired += result
        assert sorted(fired) == sorted(ids)
        sent = await phones.expect(20 * len(recipients))
        assert Counter(m.to for m in sent) == {to: 20 for to in recipients}
        assert len({(m.to, m.body) for m in sent}) == len(sent)  # no page twice

    pages = [r for r in await settled(a) if r.kind == "page"]
    per_escalation = Counter((r.escalation_id, r.staff_id) for r in pages)
    bob = await staff_id(a, "bob")
    assert per_escalation == Counter(
        {**{(e, alice): 3 for e in ids}, **{(e, carol): 2 for e in ids},
         **{(e, bob): 1 for e in ids}}
    )
    queued = [e.target_id for e in await a.all(AuditEntry) if e.action == "page_queued"]
    assert Counter(queued) == {e: 3 for e in ids}


async def test_a_stale_sweeper_loses_the_compare_and_set(svc, phones):
    """The fencing token itself: a sweeper that read the escalation before another one fired
    the step sends nothing, even though nothing stops it from trying."""
    n, _ = await open_emergency(svc, phones)
    engine = make_engine(svc.services.settings.database.url)  # the other sweeper's own
    try:
        async with AsyncSession(engine, expire_on_commit=False) as stale:
            row = await stale.get(Escalation, n)
            await stale.commit()  # keeps its now-old copy of step and due time
            assert await sweep_after(svc, 300) == [n]  # another sweeper fires step 1
            await phones.expect(2)

            def fire_stale(session: Session) -> tuple[bool, int]:
                fired = _fire(session, svc.services.escalation, row, svc.clock.now)
                return fired, len(session.new)

            assert await stale.run_sync(fire_stale) == (False, 0)
            await stale.commit()
    finally:
        await engine.dispose()
    await phones.nothing_more()
    assert len([r for r in await svc.all(Outbox) if r.kind == "page"]) == 3


# --- audit ---------------------------------------------------------------------------------


async def test_every_page_ack_and_resolve_is_audited(svc, phones):
    n, _ = await open_emergency(svc, phones)
    await sweep_after(svc, 300)
    await phones.expect(2)
    await settled(svc)
    await staff_says(svc, phones, f"ACK {n}")
    await staff_says(svc, phones, f"RESOLVE {n}", from_=CAROL)
    entries = await audit_of(svc, n)
    assert [e.action for e in entries] == [
        "escalation_opened", "page_queued", "page_sent",
        "page_queued", "page_sent", "page_sent",
        "escalation_acked", "escalation_resolved",
    ]
    opened, first, *_ = entries
    assert opened.detail == "trigger=keyword"
    assert first.detail == "step=0 level=0 cycle=0 paged=1"
    ids = {name: await staff_id(svc, name) for name in ("alice", "carol")}
    sent_to = sorted(int(re.search(r"staff=(\d+)", e.detail).group(1))
                     for e in entries if e.action == "page_sent")
    assert sent_to == sorted([ids["alice"], ids["alice"], ids["carol"]])
    acked, resolved = entries[-2:]
    assert (acked.actor, acked.actor_staff_id) == ("alice", ids["alice"])
    assert (resolved.actor, resolved.actor_staff_id) == ("carol", ids["carol"])
    for entry in entries:  # never message text or addresses
        assert "gun" not in entry.detail and "555" not in entry.detail



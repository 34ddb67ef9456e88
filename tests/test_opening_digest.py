"""At each opening the staff chat (`[console] staff_chat_id`) gets one line, without
content: how many conversations wait and how many emergencies came in while staff were out
(issue 11). Once per opening, however many processes run the check, and however often.

Hours are the example's, Monday to Friday 09:00-17:00 in Chicago, with Christmas Day 2026
(a Friday) closed: staff leave on Thursday 24 at 17:00 and are back on Monday 28 at 09:00.
The check is run by hand at the moments the test sets on the clock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot.storage.models import Escalation, OpeningDigest
from schedules.hours import digest_job
from tests.conftest import PUBLIC_URL, Service
from tests.fakes.telegram_api import FakeTelegram
from tests.test_staff_chat import STAFF_CHAT

CHICAGO = ZoneInfo("America/Chicago")
HOURS = {"holidays": ["2026-12-25"]}


def chicago(*wall: int) -> datetime:
    return datetime(*wall, tzinfo=CHICAGO).astimezone(UTC)  # type: ignore[misc]


def digests(fake: FakeTelegram) -> list[str]:
    return [m.text for m in fake.sent
            if str(m.chat_id) == STAFF_CHAT and m.text.startswith("Open now:")]


async def check_at(svc: Service, at: datetime, *others: Service) -> None:
    await svc.outbox_idle()
    svc.clock.now = at
    for _ in range(3):
        await asyncio.gather(*(digest_job(s.services) for s in (svc, *others)))
    await svc.outbox_idle()


async def test_one_line_at_each_opening_after_a_holiday_weekend(
    start_service, fake_twilio, fake_telegram, clock
):
    clock.now = chicago(2026, 12, 24, 8, 59)
    svc = await start_service(fake_twilio, fake_telegram, hours=HOURS,
                              console={"staff_chat_id": STAFF_CHAT})
    other = await start_service(fake_twilio, fake_telegram, hours=HOURS,
                                console={"staff_chat_id": STAFF_CHAT})
    await check_at(svc, clock.now, other)
    assert digests(fake_telegram) == []  # closed
    await check_at(svc, chicago(2026, 12, 24, 9, 0), other)
    assert digests(fake_telegram) == [
        f"Open now: 0 conversations waiting, 0 emergencies came in while staff were out. "
        f"{PUBLIC_URL}/console"]

    # Thursday afternoon, staff in: an emergency now is not one that came in while out.
    clock.now = chicago(2026, 12, 24, 16, 0)
    await svc.sms("Maria at the Lakeview motel", from_="+13145550161")
    await svc.sms("he has a gun", from_="+13145550162")
    await check_at(svc, chicago(2026, 12, 24, 16, 30), other)
    # Christmas Day and Saturday, closed.
    clock.now = chicago(2026, 12, 25, 3, 0)
    await svc.sms("estoy en peligro", from_="+13145550163")
    clock.now = chicago(2026, 12, 26, 11, 0)
    await svc.sms("hello, are you there?", from_="+13145550164")
    await check_at(svc, chicago(2026, 12, 28, 8, 59), other)
    assert len(digests(fake_telegram)) == 1

    await check_at(svc, chicago(2026, 12, 28, 9, 0), other)
    await check_at(svc, chicago(2026, 12, 28, 11, 0), other)
    assert len(await svc.all(Escalation)) == 2
    _, monday = digests(fake_telegram)
    assert monday == (f"Open now: 4 conversations waiting, 1 emergency came in while staff "
                      f"were out. {PUBLIC_URL}/console")
    for words in ("Maria", "Lakeview", "peligro", "gun", "555"):
        assert words not in monday
    assert [d.opening_at for d in await svc.all(OpeningDigest)] == [
        chicago(2026, 12, 24, 9, 0), chicago(2026, 12, 28, 9, 0)]

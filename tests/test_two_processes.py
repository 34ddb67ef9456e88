"""Two replicas on one database never send the same page twice (SPEC "On-call escalation").

Two real `python -m bot run` processes share one database (an SQLite file, or the PostgreSQL
database the run is given) and both run the escalation sweep every second. Emergencies
arrive alternately at each. Every escalation must page the person on call exactly twice: at
once, and once more when the re-page falls due; the compare-and-set in handlers.escalation
must keep the other process's sweep from firing a step again. The page text carries the
public_url of the process that fired it, which shows that both processes really worked on
the shared database.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from pathlib import Path

import aiohttp

from bot.storage.database import make_engine
from tests.fakes.twilio_api import FakeTwilio, SentSms
from tests.fixtures import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    encode_form,
    load_twilio_form,
    twilio_signature,
)
from tests.subprocesses import (
    INBOUND_PATH,
    ONCALL_PHONE,
    add_oncall_staff,
    alive,
    escalations_opened,
    free_port,
    more_sweeps,
    outbox_drained,
    running,
    sent_to,
    service_env,
    wait_for_sent,
    wait_healthy,
    write_service_config,
)

EMERGENCIES = 12
CONTACTS = [f"+1618555{101 + i:04d}" for i in range(EMERGENCIES)]  # fictional 555-01XX
SWEEP_INTERVAL_SECONDS = 1
REPAGE_AFTER_SECONDS = 3
PAGES_PER_ESCALATION = 2  # level 0 at once, level 1 after REPAGE_AFTER_SECONDS; level 2 in 1 h
SWEEPS_AFTER_PAGES = 4  # by each process, that must page nobody
PAGE_NUMBER = re.compile(r"^EMERGENCY #(\d+) ")
PAGE_ORIGIN = re.compile(r"http://127\.0\.0\.1:(\d+)/console/escalations/")


def write_config(folder: Path, port: int, database_url: str, twilio_url: str) -> Path:
    """The same config for every process except [server]: each is checked against its own
    public_url when verifying Twilio signatures."""
    return write_service_config(folder, port, database_url, twilio_url, {
        "sms": {"max_per_second": 1000},
        "escalation": {"repage_after_seconds": REPAGE_AFTER_SECONDS,
                       "everyone_after_seconds": 3600, "repeats": 0,
                       "sweep_interval_seconds": SWEEP_INTERVAL_SECONDS},
    })


async def post_emergency(session: aiohttp.ClientSession, base: str, contact: str,
                         n: int) -> None:
    """A signed inbound SMS from `contact`, with a MessageSid of its own (no dedup)."""
    sid = f"SM{n:032x}"
    form = load_twilio_form("inbound_sms", Body="he has a gun", From=contact, MessageSid=sid,
                            SmsMessageSid=sid, SmsSid=sid)
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(AUTH_TOKEN, base + INBOUND_PATH, form)}
    async with session.post(base + INBOUND_PATH, data=encode_form(form),
                            headers=headers) as response:
        assert response.status == 200, await response.text()


def by_escalation(pages: list[SentSms]) -> dict[int, list[SentSms]]:
    found: dict[int, list[SentSms]] = defaultdict(list)
    for page in pages:
        match = PAGE_NUMBER.match(page.body)
        assert match, f"not a page: {page.body!r}"
        found[int(match[1])].append(page)
    return dict(found)


def origin(page: SentSms) -> int:
    match = PAGE_ORIGIN.search(page.body)
    assert match, f"page without a console link: {page.body!r}"
    return int(match[1])


async def test_two_processes_sweeping_one_database_never_double_page(
    tmp_path: Path, database_url: str
) -> None:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    engine = make_engine(database_url)
    try:
        ports = [free_port(), free_port()]
        while ports[1] == ports[0]:
            ports[1] = free_port()
        folders = [tmp_path / "a", tmp_path / "b"]
        configs = [write_config(folder, port, database_url, fake.base_url)
                   for folder, port in zip(folders, ports, strict=True)]
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        logs = [folder / "service.log" for folder in folders]
        # One encryption key for both: they read each other's rows. DEBUG: logs show sweeps.
        env = service_env(log_level="DEBUG")
        await add_oncall_staff(folders[0], configs[0], env)  # creates the schema, once

        timeout = aiohttp.ClientTimeout(total=5)
        connector = aiohttp.TCPConnector(force_close=True)
        # Both start together, so their sweeps run within milliseconds of each other every
        # second: each due re-page is seen by two sweepers at about the same time.
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
            running(folders[0], configs[0], env, logs[0]) as a,
            running(folders[1], configs[1], env, logs[1]) as b,
        ):
            procs = [a, b]
            await asyncio.gather(*(wait_healthy(session, base, proc, log)
                                   for base, proc, log in zip(bases, procs, logs, strict=True)))
            for n, contact in enumerate(CONTACTS):
                await post_emergency(session, bases[n % 2], contact, n + 1)
            await wait_for_sent(fake, ONCALL_PHONE, PAGES_PER_ESCALATION * EMERGENCIES, *logs)
            # Both processes keep sweeping; a step fired twice would show up here, once
            # the outbox is quiet.
            await more_sweeps(SWEEPS_AFTER_PAGES, procs, logs)
            await outbox_drained(engine, procs, logs)
            alive(procs, logs)

        pages = sent_to(fake, ONCALL_PHONE)
        opened = await escalations_opened(engine)
        per_escalation = by_escalation(pages)
        counts = {number: [origin(page) for page in sent]
                  for number, sent in per_escalation.items()}  # who fired each page
        assert len(pages) == PAGES_PER_ESCALATION * EMERGENCIES, counts
        assert len(per_escalation) == EMERGENCIES, counts
        assert all(len(sent) == PAGES_PER_ESCALATION for sent in counts.values()), counts
        for number, (_first, repage) in per_escalation.items():
            # The re-page is the escalation's next step, not the first one fired again: it
            # goes once that step is due, REPAGE_AFTER_SECONDS after the escalation opened.
            waited = (repage.date_created - opened[number]).total_seconds()
            assert waited >= REPAGE_AFTER_SECONDS, (number, waited)
        # Each first page came from the process the emergency was posted to: both wrote.
        first_origins = Counter(origin(sent[0]) for sent in per_escalation.values())
        assert first_origins == {port: EMERGENCIES // 2 for port in ports}, first_origins
    finally:
        await engine.dispose()
        await fake.close()

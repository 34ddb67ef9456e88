"""A restart loses no page and doubles none (SPEC "On-call escalation", Durable).

The real service runs as `python -m bot run` in a subprocess against the fake Twilio in this
process. An emergency pages the on-call person; the service is then SIGKILLed before the
re-page is due and started again on the same database. The due time lives in the database,
so the new process must send the re-page, once, with the same text as the first page.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from bot.storage.database import make_engine
from tests.fakes.twilio_api import FakeTwilio
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
    kill,
    more_sweeps,
    outbox_drained,
    running,
    sent_to,
    service_env,
    wait_for_sent,
    wait_healthy,
    write_service_config,
)

CONTACT = "+13145550123"
REPAGE_AFTER_SECONDS = 4
SWEEP_INTERVAL_SECONDS = 1
SWEEPS_BEFORE_KILL = 1  # well before the re-page is due
SWEEPS_AFTER_REPAGE = 3  # sweeps that must page nobody


def write_config(folder: Path, port: int, twilio_url: str, database_url: str) -> Path:
    return write_service_config(folder, port, database_url, twilio_url, {
        "escalation": {"repage_after_seconds": REPAGE_AFTER_SECONDS,
                       "everyone_after_seconds": 3600, "repeats": 0,
                       "sweep_interval_seconds": SWEEP_INTERVAL_SECONDS},
    })


async def post_emergency(session: aiohttp.ClientSession, base: str, body: str) -> None:
    form = load_twilio_form("inbound_sms", Body=body, From=CONTACT, MessageSid="SM" + "1" * 32,
                            SmsMessageSid="SM" + "1" * 32, SmsSid="SM" + "1" * 32)
    # Signed as Twilio signs: against the configured public_url plus the path.
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(AUTH_TOKEN, base + INBOUND_PATH, form)}
    async with session.post(base + INBOUND_PATH, data=encode_form(form),
                            headers=headers) as response:
        assert response.status == 200, await response.text()


async def test_repage_arrives_exactly_once_after_sigkill(tmp_path: Path, database_url: str):
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    engine = make_engine(database_url)
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = write_config(tmp_path, port, fake.base_url, database_url)
        env = service_env(log_level="DEBUG")  # DEBUG: the log shows each sweep
        log = tmp_path / "service.log"
        await add_oncall_staff(tmp_path, config, env)
        # force_close: no pooled connection to the killed process is reused for the next one.
        timeout = aiohttp.ClientTimeout(total=5)
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            async with running(tmp_path, config, env, log) as first:
                await wait_healthy(session, base, first, log)
                await post_emergency(session, base, "he has a gun")
                [page] = await wait_for_sent(fake, ONCALL_PHONE, 1, log)
                await wait_for_sent(fake, CONTACT, 1, log)  # the emergency reply
                # The first process sweeps (and must not re-page early), then dies.
                await more_sweeps(SWEEPS_BEFORE_KILL, [first], [log])
                await kill(first)
            # The killed process sent no re-page: any that comes is the restarted one's.
            assert len(sent_to(fake, ONCALL_PHONE)) == 1, (
                "re-paged before the kill: the first page came too late for this test's timing"
            )
            to_contact = len(sent_to(fake, CONTACT))

            async with running(tmp_path, config, env, log) as second:
                await wait_healthy(session, base, second, log)
                first_page, repage = await wait_for_sent(fake, ONCALL_PHONE, 2, log)
                # Quiet: the restarted process sweeps on and its outbox has nothing left.
                await more_sweeps(SWEEPS_AFTER_REPAGE, [second], [log])
                await outbox_drained(engine, [second], [log])
                alive([second], [log])

        assert len(sent_to(fake, ONCALL_PHONE)) == 2, sent_to(fake, ONCALL_PHONE)
        assert first_page == page
        assert repage.body == page.body
        assert page.body.startswith("EMERGENCY #")
        # Not fired early by the restart: the step was due REPAGE_AFTER_SECONDS after opening.
        [(number, opened)] = (await escalations_opened(engine)).items()
        assert page.body.startswith(f"EMERGENCY #{number} ")
        waited = (repage.date_created - opened).total_seconds()
        assert waited >= REPAGE_AFTER_SECONDS, waited
        # Nothing the first process had sent was sent again.
        assert len(sent_to(fake, CONTACT)) == to_contact
    finally:
        await engine.dispose()
        await fake.close()

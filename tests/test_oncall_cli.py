"""The on-call commands run for real beside a running service (issue 11), on the run's
database (SQLite, or PostgreSQL with TRIAGE_TEST_DATABASE_URL).

`python -m bot page-test USERNAME` queues a test page and reads the database; the service,
another process, sends it through the outbox to the fake Twilio, records the delivery
receipt and takes alice's ACK. The command exits 0 only once she has acknowledged.
`python -m bot oncall set USERNAME` is a handover: the person put on call is texted, once.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from sqlalchemy import select

from bot.channels.sms import STATUS_PATH
from bot.domain import OutboxKind
from bot.storage.database import make_engine
from bot.storage.models import AuditEntry, Escalation, Outbox
from tests.conftest import sent_in_all
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
    ONCALL_USER,
    WAIT_SECONDS,
    add_oncall_staff,
    free_port,
    outbox_drained,
    running,
    service_env,
    wait_for_sent,
    wait_healthy,
    write_service_config,
)

BOB_PHONE = "+13145550144"


def write_config(folder: Path, port: int, database_url: str, twilio_url: str) -> Path:
    return write_service_config(folder, port, database_url, twilio_url,
                                {"escalation": {"sweep_interval_seconds": 1}})


async def bot(folder: Path, config: Path, env: dict[str, str], *args: str,
              stdin: bytes | None = None) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, "--config", str(config),
        cwd=folder, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    return proc


async def page_test(folder: Path, config: Path, env: dict[str, str],
                    *args: str) -> asyncio.subprocess.Process:
    return await bot(folder, config, env, "page-test", *args)


async def finished(proc: asyncio.subprocess.Process) -> tuple[int, list[str], list[str]]:
    stdout, stderr = await asyncio.wait_for(
        asyncio.gather(_read(proc.stdout), _read(proc.stderr)), WAIT_SECONDS)
    await asyncio.wait_for(proc.wait(), WAIT_SECONDS)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode().splitlines(), stderr.decode().splitlines()


async def _read(stream: asyncio.StreamReader | None) -> bytes:
    return b"" if stream is None else await stream.read()


async def post_signed(session: aiohttp.ClientSession, base: str, path: str,
                      form: dict[str, str]) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(AUTH_TOKEN, base + path, form)}
    async with session.post(base + path, data=encode_form(form), headers=headers) as answer:
        assert answer.status == 200, await answer.text()


async def test_page_test_reports_delivery_and_the_ack_and_fails_without_one(
    tmp_path: Path, database_url: str
) -> None:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    engine = make_engine(database_url)
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = write_config(tmp_path, port, database_url, fake.base_url)
        env = service_env()
        log = tmp_path / "service.log"
        await add_oncall_staff(tmp_path, config, env)
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5),
                                  connector=connector) as session,
            running(tmp_path, config, env, log) as service,
        ):
            await wait_healthy(session, base, service, log)
            cli = await page_test(tmp_path, config, env, ONCALL_USER, "--wait", "30")
            [page] = await wait_for_sent(fake, ONCALL_PHONE, 1, log)
            assert page.body == ("TEST PAGE #1, not an emergency. Reply ACK to show that "
                                 f"pages reach you. {base}/console")
            # Twilio reports it delivered; then alice answers.
            await post_signed(session, base, STATUS_PATH, load_twilio_form(
                "status_delivered", MessageSid=page.sid, SmsSid=page.sid, To=ONCALL_PHONE))
            sid = "SM" + "a1" * 16
            await post_signed(session, base, INBOUND_PATH, load_twilio_form(
                "inbound_sms", Body="ACK", From=ONCALL_PHONE, MessageSid=sid,
                SmsMessageSid=sid, SmsSid=sid))
            code, out, err = await finished(cli)
            assert (code, err) == (0, []), (out, err)
            assert out[0] == "test page #1 queued for alice: sms"
            assert "sms: delivered" in out
            assert out[-1].startswith("acknowledged by sms after ")
            _, answer = await wait_for_sent(fake, ONCALL_PHONE, 2, log)
            assert answer.body == "Test page #1 acknowledged: pages reach you."

            # Nobody answers this one.
            code, out, err = await finished(
                await page_test(tmp_path, config, env, ONCALL_USER, "--wait", "2"))
            assert code == 1
            assert err == ["error: test page #2 was not acknowledged within 2 s"]
            assert out[0] == "test page #2 queued for alice: sms"
            await wait_for_sent(fake, ONCALL_PHONE, 3, log)

            code, out, err = await finished(await page_test(tmp_path, config, env, "zed"))
            assert (code, out, err) == (2, [], ["error: no active staff member named zed"])

        # With the service stopped, nothing is sent, and the command says why it may be.
        code, out, err = await finished(
            await page_test(tmp_path, config, env, ONCALL_USER, "--wait", "1"))
        assert code == 1
        assert err == ["error: test page #3 was not acknowledged within 1 s (nothing was "
                       "sent: is the service running?)"]
        assert "sms: queued, not sent yet" in out

        async with engine.connect() as conn:
            assert (await conn.execute(select(Escalation.id))).all() == []  # no emergency
            kinds = (await conn.execute(select(Outbox.kind).order_by(Outbox.id))).scalars()
            assert list(kinds) == [OutboxKind.TEST_PAGE, OutboxKind.STAFF_NOTICE,
                                   OutboxKind.TEST_PAGE, OutboxKind.TEST_PAGE]
            audit = (await conn.execute(
                select(AuditEntry.action, AuditEntry.target_id, AuditEntry.detail)
                .where(AuditEntry.target_type == "page_test").order_by(AuditEntry.id))).all()
        staff_id = audit[0].detail.split()[0]
        assert [tuple(row) for row in audit] == [
            ("test_page_queued", 1, f"{staff_id} channels=sms"),
            ("test_page_acked", 1, "channel=sms"),
            ("test_page_result", 1, "sms=delivered acked=sms"),
            ("test_page_queued", 2, f"{staff_id} channels=sms"),
            ("test_page_result", 2, "sms=sent acked=no"),
            ("test_page_queued", 3, f"{staff_id} channels=sms"),
            ("test_page_result", 3, "sms=pending acked=no"),
        ]
    finally:
        await engine.dispose()
        await fake.close()


async def test_oncall_set_texts_the_person_put_on_call_once(
    tmp_path: Path, database_url: str
) -> None:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = write_config(tmp_path, port, database_url, fake.base_url)
        env = service_env()
        log = tmp_path / "service.log"
        await add_oncall_staff(tmp_path, config, env)
        code, _, err = await finished(await bot(
            tmp_path, config, env, "staff", "add", "bob", "--role", "oncall", "--phone",
            BOB_PHONE, stdin=b"another long test password\n"))
        assert (code, err) == (0, [])
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5),
                                  connector=connector) as session,
            running(tmp_path, config, env, log) as service,
        ):
            await wait_healthy(session, base, service, log)
            code, out, err = await finished(await bot(tmp_path, config, env, "oncall", "set",
                                                      "bob"))
            assert (code, out, err) == (0, ["bob is on call"], [])
            [told] = await wait_for_sent(fake, BOB_PHONE, 1, log)
            assert told.body == ("You are now on call for emergencies, until further "
                                 "notice. Reply ACK to confirm you got this.")
            # Once the outbox is quiet: that text and nothing else (alice, on call already,
            # was told nothing).
            engine = make_engine(database_url)
            try:
                await outbox_drained(engine, [service], [log])
            finally:
                await engine.dispose()
            sent_in_all(fake, 1)
    finally:
        await fake.close()

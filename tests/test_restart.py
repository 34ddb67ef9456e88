"""A restart loses no page and doubles none (SPEC "On-call escalation", Durable).

The real service runs as `python -m bot run` in a subprocess against the fake Twilio in this
process. An emergency pages the on-call person; the service is then SIGKILLed before the
re-page is due and started again on the same database. The due time lives in the database,
so the new process must send the re-page, once, with the same text as the first page.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.conftest import ROOT
from tests.fakes.twilio_api import FakeTwilio, SentSms
from tests.fixtures import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OUR_NUMBER,
    encode_form,
    load_twilio_form,
    set_config_keys,
    twilio_signature,
)
from tests.subprocesses import (
    ONCALL_PHONE,
    ONCALL_USER,
    add_oncall_staff,
    free_port,
    service_env,
)

CONTACT = "+13145550123"
INBOUND_PATH = "/webhooks/twilio/sms"
REPAGE_AFTER_SECONDS = 4
SWEEP_INTERVAL_SECONDS = 1
KILL_AFTER_FIRST_PAGE = 1.0  # well before the re-page is due
WAIT_SECONDS = 30.0  # the bound on every single wait in this file
SETTLE_SECONDS = 3 * SWEEP_INTERVAL_SECONDS + 0.5  # three sweeps that must page nobody
POLL_SECONDS = 0.05


def write_config(folder: Path, port: int, twilio_url: str) -> Path:
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text = set_config_keys(example, {
        "server": {"port": port, "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": f"sqlite+aiosqlite:///{folder / 'triage.db'}"},
        "sms": {"enabled": True, "account_sid": ACCOUNT_SID, "from_number": OUR_NUMBER,
                "api_base_url": twilio_url},
        "oncall": {"rotation": [ONCALL_USER]},
        "escalation": {"repage_after_seconds": REPAGE_AFTER_SECONDS,
                       "everyone_after_seconds": 3600, "repeats": 0,
                       "sweep_interval_seconds": SWEEP_INTERVAL_SECONDS},
    })
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


@asynccontextmanager
async def running(folder: Path, config: Path, env: dict[str, str],
                  log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m bot run`; killed on the way out whatever happened."""
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--config", str(config),
            cwd=folder, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )
    try:
        yield proc
    finally:
        await kill(proc)


def tail(log: Path, lines: int = 40) -> str:
    """The end of the service's log, for a failure message."""
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(proc.wait(), WAIT_SECONDS)


async def wait_healthy(session: aiohttp.ClientSession, base: str,
                       proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        assert proc.returncode is None, f"run exited early:\n{tail(log)}"
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass  # not listening yet
        assert time.monotonic() < deadline, f"/healthz never answered:\n{tail(log)}"
        await asyncio.sleep(POLL_SECONDS)


async def post_emergency(session: aiohttp.ClientSession, base: str, body: str) -> None:
    form = load_twilio_form("inbound_sms", Body=body, From=CONTACT, MessageSid="SM" + "1" * 32,
                            SmsMessageSid="SM" + "1" * 32, SmsSid="SM" + "1" * 32)
    # Signed as Twilio signs: against the configured public_url plus the path.
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(AUTH_TOKEN, base + INBOUND_PATH, form)}
    async with session.post(base + INBOUND_PATH, data=encode_form(form),
                            headers=headers) as response:
        assert response.status == 200, await response.text()


def sent_to(fake: FakeTwilio, number: str) -> list[SentSms]:
    return [sms for sms in fake.sent if sms.to == number]


async def wait_for_sent(fake: FakeTwilio, number: str, n: int, log: Path) -> list[SentSms]:
    deadline = time.monotonic() + WAIT_SECONDS
    while len(sent_to(fake, number)) < n:
        assert time.monotonic() < deadline, (
            f"expected {n} messages to {number}, got {sent_to(fake, number)!r}:\n"
            f"{tail(log)}"
        )
        await asyncio.sleep(POLL_SECONDS)
    return sent_to(fake, number)


async def test_repage_arrives_exactly_once_after_sigkill(tmp_path: Path) -> None:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = write_config(tmp_path, port, fake.base_url)
        env = service_env()
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
                await asyncio.sleep(KILL_AFTER_FIRST_PAGE)
                await kill(first)
            # The killed process sent no re-page: any that comes is the restarted one's.
            assert len(sent_to(fake, ONCALL_PHONE)) == 1, (
                "re-paged before the kill: the first page came too late for this test's timing"
            )
            to_contact = len(sent_to(fake, CONTACT))

            async with running(tmp_path, config, env, log) as second:
                await wait_healthy(session, base, second, log)
                first_page, repage = await wait_for_sent(fake, ONCALL_PHONE, 2, log)
                await asyncio.sleep(SETTLE_SECONDS)
                assert second.returncode is None, tail(log)

        assert len(sent_to(fake, ONCALL_PHONE)) == 2, sent_to(fake, ONCALL_PHONE)
        assert first_page == page
        assert repage.body == page.body
        assert page.body.startswith("EMERGENCY #")
        # Not fired early by the restart: the step was due REPAGE_AFTER_SECONDS after opening.
        waited = repage.accepted_at_monotonic - page.accepted_at_monotonic
        assert waited >= REPAGE_AFTER_SECONDS - 0.5, waited
        # Nothing the first process had sent was sent again.
        assert len(sent_to(fake, CONTACT)) == to_contact
    finally:
        await fake.close()

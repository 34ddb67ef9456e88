"""A crash under load: signed first contacts from distinct numbers, SIGKILL halfway through,
a restart on the same database, and Twilio's retry of every webhook that got no 2xx.

Used by tests/test_crash.py (one run) and bench/faults.py (several, for the figures). The
promise checked: every webhook answered 2xx is stored, and every contact gets exactly one
first reply, however the kill cut across the inbound path and the outbox.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from sqlalchemy import select

from bot.storage.database import make_engine
from bot.storage.models import ProviderEvent
from tests.conftest import ROOT
from tests.databases import sqlite_url
from tests.fakes.twilio_api import FakeTwilio
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
    INBOUND_PATH,
    free_port,
    kill,
    outbox_drained,
    running,
    service_env,
    tail,
    wait_healthy,
)

FIRST_REPLY = "Thank you for reaching out."
DRAIN_SECONDS = 120.0  # the bound on waiting for the outbox to drain after the restart
ANSWER_DELAY_SECONDS = 0.05  # how long the fake Twilio takes to answer a send it has taken


@dataclass(frozen=True)
class CrashResult:
    contacts: int
    answered_before_kill: int
    replayed: int
    lost: list[str]  # message ids answered 2xx that are not stored
    doubled: list[str]  # numbers that got the first reply more than once
    missing: list[str]  # numbers that never got it
    reconciled: int  # sends found at Twilio after the restart instead of sent again
    seconds: float


def contact_numbers(n: int) -> list[str]:
    """Distinct numbers, all in the fictional 555-01XX range of different area codes."""
    return [f"+1{201 + i // 100}55501{i % 100:02d}" for i in range(n)]


def write_config(folder: Path, port: int, twilio_url: str, database_url: str) -> Path:
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text = set_config_keys(example, {
        "server": {"port": port, "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": database_url},
        "sms": {"enabled": True, "account_sid": ACCOUNT_SID, "from_number": OUR_NUMBER,
                "api_base_url": twilio_url, "max_per_second": 400},
        # A short send timeout keeps the lease short, so sends cut off by the kill are
        # taken up again soon after the restart.
        "outbox": {"send_timeout_seconds": 2},
    })
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def crash_run(folder: Path, contacts: int = 2000, concurrency: int = 32,
                    database_url: str | None = None) -> CrashResult:
    """One run in `folder`, on `database_url` (a database with nothing in it) or, by default,
    a new SQLite file there."""
    started = time.monotonic()
    database_url = database_url or sqlite_url(folder)
    engine = make_engine(database_url)
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    # Twilio takes each message at once but answers a moment later, as over a real network:
    # the kill then always finds sends that Twilio has and the service has not recorded.
    fake.accept_then_hang(ANSWER_DELAY_SECONDS, times=4 * contacts)
    await fake.start()
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = write_config(folder, port, fake.base_url, database_url)
        env = service_env()
        log = folder / "service.log"
        hooks = []
        for n, number in enumerate(contact_numbers(contacts)):
            sid = f"SM{n:032x}"
            form = load_twilio_form("inbound_sms", Body="hello", From=number, MessageSid=sid,
                                    SmsMessageSid=sid, SmsSid=sid)
            hooks.append((sid, form))
        answered: set[str] = set()
        # force_close: no pooled connection to the killed process is reused for the next one.
        timeout = aiohttp.ClientTimeout(total=15)
        connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def post(sid: str, form: dict[str, str]) -> None:
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": twilio_signature(AUTH_TOKEN, base + INBOUND_PATH,
                                                           form),
                }
                try:
                    async with session.post(base + INBOUND_PATH, data=encode_form(form),
                                            headers=headers) as response:
                        await response.read()
                        if response.status == 200:
                            answered.add(sid)
                except (aiohttp.ClientError, TimeoutError):
                    pass  # no answer: Twilio will try again

            async with running(folder, config, env, log) as first:
                await wait_healthy(session, base, first, log)
                gate = asyncio.Semaphore(concurrency)
                halfway = asyncio.Event()
                killed = asyncio.Event()

                async def send(sid: str, form: dict[str, str]) -> None:
                    async with gate:
                        if killed.is_set():
                            return  # the process is gone: Twilio's retry comes later
                        await post(sid, form)
                        if len(answered) >= contacts // 2:
                            halfway.set()

                async def killer() -> None:
                    await halfway.wait()
                    # Just as Twilio takes a message: its answer is still 50 ms away, so
                    # that send is in flight when the kill lands.
                    await fake.wait_for_messages(len(fake.sent) + 1, timeout=30)
                    killed.set()
                    await kill(first)

                kill_task = asyncio.create_task(killer())
                await asyncio.gather(*(send(sid, form) for sid, form in hooks))
                halfway.set()
                await kill_task
            answered_before_kill = len(answered)
            unanswered = [(sid, form) for sid, form in hooks if sid not in answered]

            async with running(folder, config, env, log) as second:
                await wait_healthy(session, base, second, log)
                # Twilio retries every webhook that got no 2xx, with the same MessageSid.
                retry = unanswered
                for _ in range(5):
                    await asyncio.gather(*(post(sid, form) for sid, form in retry))
                    retry = [(sid, form) for sid, form in retry if sid not in answered]
                    if not retry:
                        break
                assert not retry, f"{len(retry)} webhooks never answered:\n{tail(log)}"
                await outbox_drained(engine, [second], [log], DRAIN_SECONDS)
                async with engine.connect() as conn:
                    stored = set((await conn.scalars(select(ProviderEvent.provider_id))).all())
                reconciled = log.read_text(errors="replace").count('"outbox_reconciled"')
        firsts = Counter(m.to for m in fake.sent if m.body.startswith(FIRST_REPLY))
        numbers = contact_numbers(contacts)
        return CrashResult(
            contacts=contacts,
            answered_before_kill=answered_before_kill,
            replayed=len(unanswered),
            lost=sorted(answered - stored),
            doubled=sorted(n for n in numbers if firsts[n] > 1),
            missing=sorted(n for n in numbers if firsts[n] == 0),
            reconciled=reconciled,
            seconds=time.monotonic() - started,
        )
    finally:
        await engine.dispose()
        await fake.close()

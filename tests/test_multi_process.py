"""Two service processes on one PostgreSQL database take in everything once (issue:
PostgreSQL and several processes).

Two real `python -m bot run` processes, on different ports, share the run's database. 200
contacts write 10 messages each, every message to one process or the other, and one in ten
to both (the same MessageSid twice, as a retry through a load balancer would); for 50 of the
contacts the last message is an emergency. Halfway through, one process is SIGKILLed; what
was meant for it goes to the survivor, and every webhook that got no answer is sent again,
as Twilio does. Then, once the survivor has drained the outbox: every contact got exactly
one first reply, no message was stored twice, every emergency paged the person on call
exactly once (the policy's first step; the next is an hour away), and nothing is pending.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.domain import Direction
from bot.storage.database import make_engine
from bot.storage.models import Escalation, Message, ProviderEvent
from tests.databases import on_postgres
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
    UNSETTLED,
    add_oncall_staff,
    free_port,
    kill,
    outbox_drained,
    running,
    scalar,
    service_env,
    wait_healthy,
    write_service_config,
)

pytestmark = pytest.mark.skipif(
    not on_postgres(), reason="several processes share one database only on PostgreSQL"
)
CONTACTS = 200
MESSAGES_EACH = 10
EMERGENCIES = 50
FIRST_REPLY = "Thank you for reaching out."
DRAIN_SECONDS = 120.0


def numbers() -> list[str]:
    return [f"+1{301 + n // 100}55501{n % 100:02d}" for n in range(CONTACTS)]  # fictional


def write_config(folder: Path, port: int, database_url: str, twilio_url: str) -> Path:
    return write_service_config(folder, port, database_url, twilio_url, {
        "sms": {"max_per_second": 500},
        "escalation": {"repage_after_seconds": 3600, "everyone_after_seconds": 3600,
                       "repeats": 0, "sweep_interval_seconds": 1},
        "outbox": {"send_timeout_seconds": 2},
    })


async def test_two_processes_take_everything_once_even_when_one_is_killed(
    tmp_path: Path, database_url: str
):
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    fake.accept_then_hang(0.02, times=10 * CONTACTS * MESSAGES_EACH)  # a real network's pace
    await fake.start()
    engine = make_engine(database_url)
    try:
        ports = [free_port(), free_port()]
        configs = [write_config(tmp_path / name, port, database_url, fake.base_url)
                   for name, port in zip("ab", ports, strict=True)]
        env = service_env()
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        await add_oncall_staff(tmp_path / "a", configs[0], env)
        rng = random.Random(1)
        plan: dict[str, list[tuple[str, dict[str, str], bool]]] = {}
        for c, number in enumerate(numbers()):
            plan[number] = []
            for k in range(MESSAGES_EACH):
                sid = f"SM{c:016x}{k:016x}"
                last = k == MESSAGES_EACH - 1
                body = "he has a gun" if last and c < EMERGENCIES else f"message {k}"
                form = load_twilio_form("inbound_sms", Body=body, From=number, MessageSid=sid,
                                        SmsMessageSid=sid, SmsSid=sid)
                plan[number].append((sid, form, rng.random() < 0.1))
        answered: set[str] = set()
        timeout = aiohttp.ClientTimeout(total=15)
        connector = aiohttp.TCPConnector(force_close=True, limit=64)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session, \
                running(tmp_path / "a", configs[0], env, logs[0]) as first, \
                running(tmp_path / "b", configs[1], env, logs[1]) as second:
            procs = [first, second]
            for proc, port, log in zip(procs, ports, logs, strict=True):
                await wait_healthy(session, f"http://127.0.0.1:{port}", proc, log)
            alive = [True, True]

            async def post(index: int, sid: str, form: dict[str, str]) -> bool:
                if not alive[index]:
                    index = 0  # the load balancer sends what was the dead one's to the survivor
                base = f"http://127.0.0.1:{ports[index]}"
                headers = {"Content-Type": "application/x-www-form-urlencoded",
                           "X-Twilio-Signature": twilio_signature(AUTH_TOKEN,
                                                                  base + INBOUND_PATH, form)}
                try:
                    async with session.post(base + INBOUND_PATH, data=encode_form(form),
                                            headers=headers) as response:
                        await response.read()
                        if response.status == 200:
                            answered.add(sid)
                            return True
                except (aiohttp.ClientError, TimeoutError):
                    pass
                return False

            total = CONTACTS * MESSAGES_EACH
            halfway = asyncio.Event()

            async def contact(c: int, messages: list[tuple[str, dict[str, str], bool]]) -> None:
                for k, (sid, form, twice) in enumerate(messages):
                    target = (c + k) % 2
                    tries = [post(target, sid, form)]
                    if twice:
                        tries.append(post(1 - target, sid, form))
                    await asyncio.gather(*tries)
                    while sid not in answered:  # Twilio retries a webhook that got no 2xx
                        await post(0, sid, form)
                    if len(answered) >= total // 2:
                        halfway.set()

            async def killer() -> None:
                await halfway.wait()
                alive[1] = False
                await kill(second)

            kill_task = asyncio.create_task(killer())
            await asyncio.gather(*(contact(c, messages)
                                   for c, messages in enumerate(plan.values())))
            halfway.set()
            await kill_task

            await outbox_drained(engine, [first], [logs[0]], DRAIN_SECONDS)

        assert len(answered) == total
        firsts = Counter(m.to for m in fake.sent if m.body.startswith(FIRST_REPLY))
        assert {n: firsts[n] for n in numbers() if firsts[n] != 1} == {}
        assert await scalar(engine, select(func.count()).select_from(ProviderEvent)) == total
        inbound = select(func.count()).select_from(Message).where(
            Message.direction == Direction.INBOUND)
        assert await scalar(engine, inbound) == total
        assert await scalar(engine, select(func.count()).select_from(Escalation)) == EMERGENCIES
        pages = [m.body for m in fake.sent if m.to == ONCALL_PHONE]
        assert len(pages) == EMERGENCIES and len(set(pages)) == EMERGENCIES
        assert await scalar(engine, UNSETTLED) == 0
    finally:
        await engine.dispose()
        await fake.close()

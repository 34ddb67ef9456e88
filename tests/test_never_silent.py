"""When the database cannot take a message: the contact still gets the safety text at once,
the message waits encrypted in the spool, and it is taken in once the database is back."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import func, select

from bot.storage.models import Base, Conversation, Escalation, Message, ProviderEvent
from tests.conftest import Service, example_config
from tests.databases import connect, on_postgres, sqlite_path
from tests.fixtures import CONTACT_NUMBER, TELEGRAM_CONTACT_ID

SAFETY = example_config()["replies"]["en"]["safety"]
FAST_FALLBACK = {"database": {"write_timeout_seconds": 0.3}}


@asynccontextmanager
async def database_down(svc: Service) -> AsyncIterator[None]:
    """Another connection holds the database's write lock: every write waits, and the
    service gives up on it. On SQLite that is the file's lock (BEGIN EXCLUSIVE; unlike chmod,
    this works for root, which CI runs as); on PostgreSQL, an EXCLUSIVE lock on every table,
    which lets reads go on, as SQLite's lock does in WAL mode. On the way out the lock goes,
    and the service's writer catches up with whatever waited for it, so that a spool drain
    then is not timed against SQLite's busy handler noticing."""
    url = svc.services.settings.database.url
    if on_postgres():
        conn = await connect(url)
        tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {tables} IN EXCLUSIVE MODE")
                yield
        finally:
            await conn.close()
    else:
        lite = sqlite3.connect(sqlite_path(url), isolation_level=None)
        lite.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            lite.execute("ROLLBACK")
            lite.close()
    await svc.services.writer.run(lambda session: None, notify=False)


async def rows(svc: Service, model: type) -> int:
    return await svc.query(lambda s: s.scalar(select(func.count()).select_from(model)))


def spool_files(svc: Service) -> list[Path]:
    return sorted(svc.services.settings.database.spool_dir.glob("*.msg"))


async def test_sms_gets_safety_text_in_twiml_when_database_is_down(
    start_service, fake_twilio
):
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    async with database_down(svc):
        status, twiml = await svc.sms("he has a gun, I can't leave")
        assert status == 200
        assert f"<Message>{SAFETY}</Message>" in twiml
        [spooled] = spool_files(svc)
        raw = spooled.read_bytes()
        assert b"gun" not in raw and CONTACT_NUMBER[2:].encode() not in raw
        assert await rows(svc, ProviderEvent) == 0

    assert await svc.services.intake.drain_spool() == 1
    assert spool_files(svc) == []
    [inbound] = await svc.all(Message)
    assert svc.decrypt(inbound.body_enc) == "he has a gun, I can't leave"
    [escalation] = await svc.all(Escalation)
    assert escalation.status == "open"
    # The contact already had the safety text; nothing is sent late on top of it.
    await svc.assert_sent(fake_twilio, 0)


async def test_stop_while_database_is_down_gets_no_reply(start_service, fake_twilio):
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    async with database_down(svc):
        status, twiml = await svc.sms("STOP")
    assert status == 200 and "<Message>" not in twiml
    await svc.services.intake.drain_spool()
    [conversation_count] = [await rows(svc, Conversation)]
    assert conversation_count == 0


async def test_telegram_webhook_replies_in_its_answer_when_database_is_down(
    start_service, fake_telegram
):
    svc = await start_service(telegram_api=fake_telegram, **FAST_FALLBACK)
    async with database_down(svc):
        status, body = await svc.telegram("Hello")
    assert status == 200
    assert body == {"method": "sendMessage", "chat_id": TELEGRAM_CONTACT_ID, "text": SAFETY}
    assert len(spool_files(svc)) == 1
    await svc.services.intake.drain_spool()
    assert await rows(svc, Message) == 1


async def test_spooled_message_survives_a_restart(start_service, fake_twilio):
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    async with database_down(svc):
        await svc.sms("Hello")
    await svc.client.close()
    # A new process start takes the spool in before anything else.
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    assert spool_files(svc) == []
    assert await rows(svc, Message) == 1


async def test_replayed_message_after_spooling_is_taken_in_once(
    start_service, fake_twilio
):
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    sid = svc.next_sid()
    async with database_down(svc):
        await svc.sms("Hello", sid=sid)
    await svc.sms("Hello", sid=sid)  # the provider retries once the database is back
    await svc.services.intake.drain_spool()
    assert await rows(svc, ProviderEvent) == 1
    assert spool_files(svc) == []


async def test_unreadable_spool_file_is_held_and_does_not_block_the_rest(
    start_service, fake_twilio
):
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    async with database_down(svc):
        await svc.sms("first")
        await svc.sms("second", from_="+13145550177")
    first, _ = spool_files(svc)
    first.write_text("not a spooled message")

    assert await svc.services.intake.drain_spool() == 1
    assert spool_files(svc) == []
    held = svc.services.settings.database.spool_dir / "held"
    assert [p.name for p in held.glob("*.msg")] == [first.name]
    [inbound] = await svc.all(Message)
    assert svc.decrypt(inbound.body_enc) == "second"


async def test_spooled_first_contact_is_not_also_answered_by_a_late_commit(
    start_service, fake_twilio
):
    # The write timeout (0.3 s) is far below SQLite's busy timeout (5 s): the batch holding
    # this message is still waiting for the lock when the webhook gives up and spools it.
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    # The writer has its connection open, and nothing waits in it.
    await svc.services.writer.run(lambda session: None, notify=False)
    async with database_down(svc):
        status, twiml = await svc.sms("Hello")
        assert status == 200 and f"<Message>{SAFETY}</Message>" in twiml
    # The lock is free: the waiting batch now commits, without the withdrawn unit.
    await svc.services.writer.run(lambda session: None)
    assert await rows(svc, ProviderEvent) == 0
    assert await svc.services.intake.drain_spool() == 1
    assert await rows(svc, Message) == 1
    await svc.outbox_idle()
    assert fake_twilio.sent == []  # the safety text in the TwiML was the one reply


async def test_processes_sharing_a_spool_folder_take_turns_draining_it(
    start_service, fake_twilio
):
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    async with database_down(svc):
        await svc.sms("Hello")
    spool = svc.services.settings.database.spool_dir
    other = os.open(spool / ".drain-lock", os.O_RDWR)  # another process is draining
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        assert await svc.services.intake.drain_spool() == 0
        assert len(spool_files(svc)) == 1
    finally:
        os.close(other)
    assert await svc.services.intake.drain_spool() == 1
    assert await rows(svc, Message) == 1

"""Promises that only PostgreSQL can break: several processes migrating one empty database at
once, and several transactions in flight in one process, where one waiting on a row lock
must hold up nobody else."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bot.storage.database import ensure_schema, make_engine
from bot.storage.models import Message
from tests.databases import connect, on_postgres
from tests.waiting import eventually

pytestmark = pytest.mark.skipif(not on_postgres(), reason="PostgreSQL only")


async def test_processes_starting_at_once_migrate_an_empty_database_once(empty_database):
    engines = [make_engine(empty_database) for _ in range(4)]
    try:
        await asyncio.gather(*(ensure_schema(engine) for engine in engines))
        async with engines[0].connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version")))
            assert len(versions.all()) == 1
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_unit_waiting_on_a_row_lock_holds_up_no_inbound_message(
    start_service, fake_twilio, database_url
):
    svc = await start_service(fake_twilio, database={"write_timeout_seconds": 2})
    await svc.sms("Hello")  # conversation #1
    await svc.outbox_idle()
    blocker = await connect(database_url)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT id FROM conversations WHERE id = 1 FOR UPDATE")

        def touch_conversation_one(session: Session) -> None:
            session.execute(text("UPDATE conversations SET priority = 50 WHERE id = 1"))

        waiting = asyncio.create_task(svc.services.writer.run(touch_conversation_one))

        async def blocked() -> bool:  # a backend of the service's waits on our lock
            return bool(await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                blocker.get_server_pid()))

        await eventually(blocked, "the unit to wait on the row lock")
        assert not waiting.done()
        started = time.monotonic()
        answers = await asyncio.gather(*(svc.sms("hi", from_=f"+1314555{150 + n:04d}")
                                         for n in range(12)))
        assert {status for status, _ in answers} == {200}
        assert time.monotonic() - started < 2  # not held up: no write timeout, no spool
        assert list(svc.services.settings.database.spool_dir.glob("*.msg")) == []
        await transaction.rollback()
        await asyncio.wait_for(waiting, 5)
    finally:
        await blocker.close()
    stored = await svc.query(lambda s: s.scalars(select(Message.id)))
    assert len(list(stored)) >= 13

"""The group-commit writer on either database: units that arrive together commit together,
one unit's failure is its alone, and on PostgreSQL a connection that went away (a server
restart, a proxy's idle timeout) costs a retry, not a message."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.storage.database import WRITER_APPLICATION_NAME
from bot.storage.models import AuditEntry, Message
from bot.storage.queries import audit
from tests.conftest import Service
from tests.databases import connect, on_postgres

NOW = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)


@pytest.fixture
async def svc(start_service, fake_twilio) -> Service:
    return await start_service(fake_twilio)


class Refused(Exception):
    pass


def audited(n: int):
    def unit(session: Session) -> int:
        audit(session, NOW, f"unit {n}", "test", n)
        session.flush()
        return n

    return unit


def refused(session: Session) -> None:
    audit(session, NOW, "refused", "test", 0)
    session.flush()  # its row is written, then taken back with the unit
    raise Refused


async def actions(svc) -> list[str]:
    rows = await svc.query(lambda s: s.scalars(select(AuditEntry.action)
                                               .where(AuditEntry.target_type == "test")))
    return sorted(rows)


async def test_one_failing_unit_among_many_fails_alone(svc) -> None:
    writer = svc.services.writer
    units = [audited(n) for n in range(30)]
    units.insert(15, refused)
    results = await asyncio.gather(*(writer.run(unit) for unit in units),
                                   return_exceptions=True)
    assert [type(r) for r in results].count(Refused) == 1
    assert isinstance(results[15], Refused)
    assert [r for r in results if not isinstance(r, Refused)] == list(range(30))
    assert await actions(svc) == sorted(f"unit {n}" for n in range(30))


@pytest.mark.skipif(not on_postgres(), reason="PostgreSQL only")
async def test_a_message_after_the_writers_connections_were_cut_is_stored(
    svc, fake_twilio, database_url
) -> None:
    status, _ = await svc.sms("Hello")
    assert status == 200
    admin = await connect(database_url)
    try:
        cut = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1", WRITER_APPLICATION_NAME)
        assert cut >= 1  # the writer's pooled connection, now gone
    finally:
        await admin.close()
    status, _ = await svc.sms("are you there?")
    assert status == 200  # answered after the commit, on a new connection
    assert list(svc.services.settings.database.spool_dir.glob("*.msg")) == []
    bodies = await svc.query(lambda s: s.scalars(select(Message.body_enc)
                                                 .where(Message.direction == "in")
                                                 .order_by(Message.id)))
    assert [svc.decrypt(b) for b in bodies] == ["Hello", "are you there?"]
    count = await svc.query(lambda s: s.scalar(select(func.count()).select_from(Message)
                                               .where(Message.direction == "in")))
    assert count == 2

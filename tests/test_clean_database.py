"""Each test starts from a clean database, on SQLite (a new file) and on PostgreSQL (the
run's schema emptied, its ids restarted): whichever of these two runs second finds nothing
of what the first, or any test before it, stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.models import Base, Contact
from tests.conftest import Service


async def counts(svc: Service) -> dict[str, int]:
    async def fn(session: AsyncSession) -> dict[str, int]:
        return {table.name: await session.scalar(select(func.count()).select_from(table))
                for table in Base.metadata.sorted_tables}

    return await svc.query(fn)


@pytest.mark.parametrize("turn", ["one", "two"])
async def test_each_test_starts_from_an_empty_database(start_service, fake_twilio, turn):
    svc = await start_service(fake_twilio)
    assert set((await counts(svc)).values()) == {0}
    await svc.sms("Hello")
    await svc.assert_sent(fake_twilio, 1)
    [contact] = await svc.all(Contact)
    assert contact.id == 1  # numbering starts again too

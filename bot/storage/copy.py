"""Copy an install's whole database to another one: moving from SQLite to PostgreSQL.

Every table, every row, in the order foreign keys need, in batches. The target is migrated
first and must be empty; the source must be at the same revision. Ciphertexts are copied as
they are, so the same TRIAGE_ENCRYPTION_KEY reads them on the other side. On PostgreSQL the
id sequences are moved past the copied ids, so new rows do not collide with old ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.storage.database import ensure_schema
from bot.storage.models import Base

BATCH = 2000


class TargetNotEmpty(RuntimeError):
    """The database to copy to already holds data; it is left as it is."""


@dataclass(frozen=True)
class Copied:
    table: str
    rows: int


async def copy_database(source: AsyncEngine, target: AsyncEngine) -> list[Copied]:
    await ensure_schema(source)  # refuses a source older than this code
    await ensure_schema(target)  # an empty target is migrated here
    tables = Base.metadata.sorted_tables
    async with target.begin() as out:
        for table in tables:
            if (await out.execute(select(func.count()).select_from(table))).scalar_one():
                raise TargetNotEmpty(f"the target database already has rows in {table.name}")
        copied = []
        async with source.connect() as into:
            for table in tables:
                copied.append(Copied(table.name, await _copy_table(into, out, table)))
        if out.dialect.name == "postgresql":
            for table in tables:
                await _move_sequence(out, table)
    return copied


async def _copy_table(source: AsyncConnection, target: AsyncConnection, table: Table) -> int:
    order = list(table.primary_key.columns)
    result = await source.stream(select(table).order_by(*order))
    total = 0
    async for batch in result.mappings().partitions(BATCH):
        await target.execute(table.insert(), [dict(row) for row in batch])
        total += len(batch)
    return total


async def _move_sequence(conn: AsyncConnection, table: Table) -> None:
    if "id" not in table.c or table.c.id.autoincrement is False:
        return
    highest = select(func.coalesce(func.max(table.c.id), 0) + 1).scalar_subquery()
    await conn.execute(select(func.setval(func.pg_get_serial_sequence(table.name, "id"),
                                          highest, False)))

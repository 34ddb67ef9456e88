"""The Alembic migrations build exactly the schema the models describe, on the run's
database (SQLite, or PostgreSQL with TRIAGE_TEST_DATABASE_URL), and undo themselves."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from bot.storage.database import alembic_config, make_engine
from bot.storage.models import Base


def _upgrade(conn: Connection, *steps: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    for step in steps:
        if step == "base":
            command.downgrade(cfg, "base")
        else:
            command.upgrade(cfg, step)


def _differences(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


async def test_migrated_schema_matches_the_models(empty_database):
    engine = make_engine(empty_database)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, "head")
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


async def test_every_migration_downgrades_and_upgrades_again(empty_database):
    engine = make_engine(empty_database)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, "head", "base", "head")
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()

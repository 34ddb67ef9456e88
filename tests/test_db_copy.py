"""`python -m bot db copy --to URL`: an SQLite install moves to another database whole.

The target is PostgreSQL when the run has one (the move the command exists for), another
SQLite file otherwise. Every row of every table arrives unchanged, the service runs on the
copy with the same key, and new rows there do not collide with copied ids.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select

from bot.app import create_app
from bot.config import parse_settings
from bot.storage.database import make_engine
from bot.storage.models import Base
from tests.conftest import Env, Service
from tests.databases import _dsn, postgres_url, sqlite_url
from tests.test_cli import assert_ok, assert_one_line_error, bot, cli_env, write_config
from tests.test_escalation import ALICE, ONCALL, POLICY, register_staff


@pytest.fixture
async def target_url(tmp_path: Path) -> AsyncIterator[str]:
    base = postgres_url()
    if base is None:
        yield sqlite_url(tmp_path / "target")
        return
    schema = f"copy_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(_dsn(base))
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}?search_path={schema}"
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def every_row(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            found = {}
            for table in Base.metadata.sorted_tables:
                rows = await conn.execute(select(table).order_by(*table.primary_key.columns))
                found[table.name] = [dict(row._mapping) for row in rows]
            return found
    finally:
        await engine.dispose()


async def test_db_copy_moves_every_row_and_the_service_runs_on_the_copy(
    tmp_path: Path, aiohttp_client, fake_twilio, clock, target_url
):
    (tmp_path / "target").mkdir(exist_ok=True)
    key = cli_env()["TRIAGE_ENCRYPTION_KEY"]
    env = Env(tmp_path, sqlite_url(tmp_path), key=key)
    svc = Service(await aiohttp_client(create_app(
        env.settings(fake_twilio, oncall=ONCALL, escalation=POLICY), clock)), clock)
    await register_staff(svc, "alice", phone=ALICE)
    await svc.sms("Hello")
    await svc.sms("1")  # need help now: an emergency, a page
    await svc.sms("Hola", from_="+13145550177")
    await svc.outbox_idle()
    await svc.client.close()
    source = await every_row(env.database_url)
    assert source["messages"] and source["escalations"] and source["audit_log"]

    write_config(tmp_path)  # the example config, on the SQLite file above
    result = bot(tmp_path, "db", "copy", "--to", target_url)
    assert_ok(result)
    assert "copied" in result.stdout
    assert await every_row(target_url) == source

    raw = env.raw_config(fake_twilio, None, oncall=ONCALL, escalation=POLICY,
                         database={"url": target_url})
    moved = Service(await aiohttp_client(create_app(
        parse_settings(raw, env.environ(), base_dir=tmp_path), clock)), clock)
    moved._sid = 100  # past the copied message ids, which the copy remembers as taken in
    assert (await moved.sms("I am back", from_="+13145550178"))[0] == 200  # new ids
    assert (await moved.sms("thanks"))[0] == 200  # the copied contact's conversation goes on
    await moved.outbox_idle()
    after = await every_row(target_url)
    assert len(after["conversations"]) == len(source["conversations"]) + 1
    new_inbound = [m for m in after["messages"][len(source["messages"]):]
                   if m["direction"] == "in"]
    assert [moved.decrypt(m["body_enc"]) for m in new_inbound] == ["I am back", "thanks"]
    assert new_inbound[1]["conversation_id"] == source["conversations"][0]["id"]


async def test_db_copy_refuses_a_target_that_has_data(tmp_path: Path, target_url):
    (tmp_path / "target").mkdir(exist_ok=True)
    write_config(tmp_path)
    assert_ok(bot(tmp_path, "staff", "add", "erin", "--role", "staff",
                  stdin="a long test password\n"))
    assert_ok(bot(tmp_path, "db", "copy", "--to", target_url))
    assert_one_line_error(bot(tmp_path, "db", "copy", "--to", target_url), "already has rows")


def test_db_copy_refuses_a_bad_url_in_one_line(tmp_path: Path):
    write_config(tmp_path)
    assert_one_line_error(bot(tmp_path, "db", "copy", "--to", "not a url"), "--to")

"""Key rotation that ends: `python -m bot rekey` moves everything to the newest key, in
batches, survives a kill halfway, and after it the old key can be removed: every message
still reads, every contact is still recognised, and an opt-out whose address was erased
still holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from bot.app import create_app
from bot.config import parse_settings
from bot.crypto import generate_key
from bot.storage.database import make_engine
from bot.storage.models import Base, Contact, Message
from handlers.rekey import ENCRYPTED
from tests.conftest import ROOT, Env, Service
from tests.fixtures import set_config_keys
from tests.test_cli import cli_env
from tests.test_escalation import ALICE, ONCALL, POLICY, register_staff
from tests.waiting import eventually

CONTACTS = [f"+1{601 + n // 100}55501{n % 100:02d}" for n in range(150)]  # fictional
ERASED = "+13145550180"
KILL_WAIT = 60.0


async def start(env: Env, aiohttp_client, fake_twilio, clock, key: str) -> Service:
    env.key = key
    raw = env.raw_config(fake_twilio, None, oncall=ONCALL, escalation=POLICY)
    app = create_app(parse_settings(raw, env.environ(), base_dir=env.tmp_path), clock)
    return Service(await aiohttp_client(app), clock)


async def under_key(url: str, kid: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            query = select(func.count()).select_from(Message).where(
                func.substr(Message.body_enc, 1, len(kid) + 1) == f"{kid}:")
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


def rekey(folder: Path, keys: str, *extra: str) -> subprocess.Popen[str]:
    env = cli_env(TRIAGE_ENCRYPTION_KEY=keys)
    return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "bot", "rekey", "--config", str(folder / "config.toml"),
         *extra], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


async def test_rekey_survives_a_kill_and_the_old_key_can_go(
    env, aiohttp_client, fake_twilio, clock
):
    old, new = generate_key(), generate_key()
    old_id, new_id = old.split(":")[0], new.split(":")[0]
    svc = await start(env, aiohttp_client, fake_twilio, clock, old)
    await register_staff(svc, "alice", phone=ALICE)
    for n, number in enumerate(CONTACTS):
        await svc.sms(f"hello {n}", from_=number)
        await svc.sms(f"second message {n}", from_=number)
    await svc.sms("STOP", from_=ERASED)
    await svc.sms("DELETE", from_=ERASED)  # opted out, then erased: only the hash is left
    await svc.outbox_idle()
    await svc.client.close()
    assert await under_key(env.database_url, old_id) > 300

    config = env.tmp_path / "config.toml"
    config.write_text(set_config_keys((ROOT / "config.example.toml").read_text(), {
        "database": {"url": env.database_url},
    }))
    # Paused between batches, so the kill lands halfway however fast the machine is.
    first = rekey(env.tmp_path, f"{new},{old}", "--batch", "5", "--pause", "0.05")

    async def well_under_way() -> bool:
        assert first.poll() is None, first.communicate()
        return await under_key(env.database_url, new_id) >= 20

    await eventually(well_under_way, "rekey to make progress", KILL_WAIT, every=0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()  # closes its pipes too
    assert await under_key(env.database_url, old_id) > 0  # cut off halfway

    second = rekey(env.tmp_path, f"{new},{old}")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert f"done: everything is under key {new_id}; you can now remove {old_id}" in out
    assert await under_key(env.database_url, old_id) == 0

    # The old key is gone from the environment.
    svc = await start(env, aiohttp_client, fake_twilio, clock, new)
    svc._sid = 10_000
    sent_before = len(fake_twilio.sent)
    await svc.sms("it's me again", from_=CONTACTS[7])  # recognised: no new first reply
    await svc.sms("hello?", from_=ERASED)  # the opt-out holds: nothing is sent
    await svc.sms("ACK", from_=ALICE)  # still known as staff
    await svc.outbox_idle()
    sent = fake_twilio.sent[sent_before:]
    assert [m.to for m in sent] == [ALICE]  # the answer to her ACK, and nothing else
    messages = await svc.all(Message)
    assert svc.decrypt(messages[0].body_enc) == "hello 0"
    contacts = await svc.all(Contact)
    assert len(contacts) == len(CONTACTS) + 1  # nobody became a second, new contact
    [erased] = [c for c in contacts if c.address_enc is None]
    assert erased.opted_out


async def test_an_erased_opt_out_survives_two_rotations(env, aiohttp_client, fake_twilio, clock):
    first, second, third = generate_key(), generate_key(), generate_key()
    svc = await start(env, aiohttp_client, fake_twilio, clock, first)
    await svc.sms("STOP", from_=ERASED)
    await svc.sms("DELETE", from_=ERASED)
    await svc.outbox_idle()
    await svc.client.close()
    config = env.tmp_path / "config.toml"
    config.write_text(set_config_keys((ROOT / "config.example.toml").read_text(), {
        "database": {"url": env.database_url},
    }))
    for keys in (f"{second},{first}", f"{third},{second}"):  # each time the oldest goes
        done = rekey(env.tmp_path, keys)
        _, err = done.communicate(timeout=120)
        assert done.returncode == 0, err

    svc = await start(env, aiohttp_client, fake_twilio, clock, third)
    svc._sid = 10_000
    sent_before = len(fake_twilio.sent)
    await svc.sms("hello?", from_=ERASED)
    await svc.outbox_idle()
    assert fake_twilio.sent[sent_before:] == []  # still opted out: nothing at all is sent
    [contact] = await svc.all(Contact)
    assert contact.opted_out and contact.address_enc is None


def test_rekey_knows_every_encrypted_column():
    found = {(table.name, column.name) for table in Base.metadata.tables.values()
             for column in table.columns if column.name.endswith("_enc")}
    covered = {(table.name, name) for table, names in ENCRYPTED.items() for name in names}
    # retired_lookup_keys.key_enc is re-encrypted by keep_lookup_keys, in its own way
    assert found - covered == {("retired_lookup_keys", "key_enc")}

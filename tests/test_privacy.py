"""Keep as little as possible, and lock up what is kept."""

from __future__ import annotations

import logging

import pytest

from bot.crypto import Cipher, DecryptError, generate_key
from bot.logs import JsonFormatter, quiet_libraries
from bot.storage.models import Contact, Conversation, Message, Outbox
from schedules.retention import purge_job
from tests.conftest import Service
from tests.fixtures import CONTACT_NUMBER, TELEGRAM_CONTACT_ID
from tests.test_sms_flow import wait_until_sent

SECRET_TEXT = "Maria at the Lakeview motel room 12"


def raw_database(svc: Service) -> bytes:
    path = svc.services.settings.database.url.split("///", 1)[1]
    data = b""
    for suffix in ("", "-wal"):
        try:
            with open(path + suffix, "rb") as f:
                data += f.read()
        except FileNotFoundError:
            pass
    return data


async def test_bodies_and_addresses_are_encrypted_at_rest(start_service, fake_twilio):
    svc = await start_service(fake_twilio)
    await svc.sms(SECRET_TEXT)
    await fake_twilio.wait_for_messages(1)
    raw = raw_database(svc)
    for needle in (CONTACT_NUMBER, CONTACT_NUMBER[2:], "Lakeview", "immediate danger"):
        assert needle.encode() not in raw, needle
    [contact] = await svc.all(Contact)
    assert svc.decrypt(contact.address_enc) == CONTACT_NUMBER
    assert contact.address_hash == svc.services.cipher.address_hash("sms", CONTACT_NUMBER)


async def test_provider_location_fields_are_dropped(start_service, fake_twilio):
    svc = await start_service(fake_twilio)
    status, _ = await svc.sms("Hello", FromCity="SAINT LOUIS", FromZip="63101",
                              FromState="MO", ToCity="SAINT LOUIS")
    assert status == 200
    raw = raw_database(svc)
    assert b"63101" not in raw and b"SAINT LOUIS" not in raw
    for row in await svc.all(Message):
        assert "63101" not in svc.decrypt(row.body_enc)


async def test_sent_outbox_rows_keep_no_address_or_body(start_service, fake_twilio):
    svc = await start_service(fake_twilio)
    await svc.sms("Hello")
    await fake_twilio.wait_for_messages(1)
    await wait_until_sent(svc)
    [row] = await svc.all(Outbox)
    assert row.address_enc is None and row.body_enc is None and row.message_id is not None


@pytest.fixture
def captured_logs():
    """Every record any logger emits at any level, formatted as production formats it."""
    records: list[str] = []
    formatter = JsonFormatter()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(formatter.format(record))
            records.append(record.getMessage())

    handler = Capture(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet_libraries()
    yield records
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_logs_hold_no_text_or_address_for_a_whole_conversation(
    start_service, fake_twilio, fake_telegram, captured_logs, clock
):
    svc = await start_service(fake_twilio, telegram_api=fake_telegram)
    for body in (SECRET_TEXT, "2", "NOT SAFE", "he has a gun", "HELP", "STOP", "START",
                 "BORRAR"):
        await svc.sms(body)
        await svc.telegram(body)
    fake_twilio.fail_next(500)
    await svc.sms("retry me Lakeview", from_="+13145550188")
    clock.advance(days=1)
    await fake_twilio.wait_for_messages(5)
    await fake_telegram.wait_for_messages(5)
    assert any("inbound_taken" in line for line in captured_logs)  # the capture works
    joined = "\n".join(captured_logs)
    for needle in (CONTACT_NUMBER, CONTACT_NUMBER[2:], "+13145550188", str(TELEGRAM_CONTACT_ID),
                   "Lakeview", "Maria", "immediate danger", "gun"):
        assert needle not in joined, needle


async def test_purge_removes_closed_conversations_past_retention(
    start_service, fake_twilio, clock
):
    svc = await start_service(fake_twilio, privacy={"retention_days": 30})
    await svc.sms("Hello")
    await svc.sms("EXIT")  # closed now
    await svc.sms("Hello", from_="+13145550155")  # stays open
    await svc.sms("STOP", from_="+13145550166")  # opted out: must be remembered

    clock.advance(days=29)
    result = await purge_job(svc.services)
    assert result.conversations == 0

    clock.advance(days=2)
    result = await purge_job(svc.services)
    assert result.conversations == 1
    [conversation] = await svc.all(Conversation)
    assert conversation.status == "open"
    contacts = await svc.all(Contact)
    hashes = {c.address_hash for c in contacts}
    cipher = svc.services.cipher
    assert cipher.address_hash("sms", CONTACT_NUMBER) not in hashes
    assert cipher.address_hash("sms", "+13145550166") in hashes
    assert all(m.conversation_id == conversation.id for m in await svc.all(Message))


async def test_key_rotation_keeps_old_data_readable_and_hashes_stable(env):
    old = env.key
    before = Cipher.from_env_value(old)
    token = before.encrypt("hello")
    after = Cipher.from_env_value(f"{generate_key()},{old}")
    assert after.decrypt(token) == "hello"
    assert after.encrypt("x").split(":")[0] != token.split(":")[0]
    assert after.address_hash("sms", CONTACT_NUMBER) == before.address_hash("sms", CONTACT_NUMBER)


async def test_tampered_ciphertext_is_rejected(env):
    cipher = Cipher.from_env_value(env.key)
    token = cipher.encrypt("hello")
    kid, body = token.split(":")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(DecryptError):
        cipher.decrypt(f"{kid}:{flipped}")


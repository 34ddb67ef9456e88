"""Keep as little as possible, and lock up what is kept."""

from __future__ import annotations

from typing import Any

import pytest
from telegram import Bot

from bot.crypto import Cipher, DecryptError, generate_key
from bot.logs import REDACTED_EVENT
from bot.storage.models import Contact, Conversation, Message, Outbox
from schedules.retention import purge_job
from tests.conftest import WEBHOOK_SECRET, Service
from tests.databases import at_rest
from tests.fakes.telegram_api import FakeTelegram
from tests.fixtures import (
    CONTACT_NUMBER,
    TELEGRAM_CONTACT_ID,
    TELEGRAM_TOKEN,
    load_telegram_update,
    unparseable_telegram_update,
)
from tests.test_sms_flow import wait_until_sent
from tests.test_telegram import wait_for_offset_past
from tests.waiting import eventually

SECRET_TEXT = "Maria at the Lakeview motel room 12"
SECOND_CHAT = 700000145
UNPARSEABLE_CHAT = 700000177


async def raw_database(svc: Service) -> bytes:
    """The database as it lies at rest, once it holds the contact (so the read is not of an
    empty or another database)."""
    raw = await at_rest(svc.services.settings.database.url)
    assert svc.services.cipher.address_hash("sms", CONTACT_NUMBER).encode() in raw
    return raw


async def test_bodies_and_addresses_are_encrypted_at_rest(start_service, fake_twilio):
    svc = await start_service(fake_twilio)
    await svc.sms(SECRET_TEXT)
    await fake_twilio.wait_for_messages(1)
    raw = await raw_database(svc)
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
    raw = await raw_database(svc)
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


class TelegramContact:
    """A Telegram contact writing in, through whichever way the service takes updates in."""

    def __init__(self, svc: Service, fake: FakeTelegram, mode: str) -> None:
        self.svc = svc
        self.fake = fake
        self.mode = mode
        self._update_id = 600000000

    async def say(self, text: str, chat_id: int = TELEGRAM_CONTACT_ID) -> None:
        self._update_id += 1
        if self.mode == "webhook":
            status, _ = await self.svc.telegram(text, chat_id=chat_id, update_id=self._update_id)
            assert status == 200
            return
        update = load_telegram_update(
            "text_message", update_id=self._update_id, chat_id=chat_id, text=text
        )
        await self._polled(self.fake.push_update(update))

    async def say_unparseable(self, text: str, chat_id: int, first_name: str) -> None:
        self._update_id += 1
        update = unparseable_telegram_update(
            update_id=self._update_id, chat_id=chat_id, text=text, first_name=first_name
        )
        if self.mode == "webhook":
            response = await self.svc.client.post(
                "/webhooks/telegram", json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
            )
            assert response.status == 400
            return
        await self._polled(self.fake.push_raw_update(update))

    async def _polled(self, update: dict[str, Any]) -> None:
        # Confirmed to Telegram means stored: the conversation goes on in order.
        await wait_for_offset_past(self.fake, update["update_id"])


@pytest.mark.parametrize("telegram_mode", ["webhook", "polling"])
async def test_logs_hold_no_text_or_address_for_a_whole_conversation(
    start_service, fake_twilio, fake_telegram, captured_logs, clock, telegram_mode
):
    svc = await start_service(fake_twilio, telegram_api=fake_telegram,
                              telegram={"mode": telegram_mode})
    contact = TelegramContact(svc, fake_telegram, telegram_mode)
    for body in (SECRET_TEXT, "2", "NOT SAFE", "he has a gun", "HELP", "STOP", "START",
                 "BORRAR"):
        await svc.sms(body)
        await contact.say(body)
    await contact.say_unparseable(SECRET_TEXT, chat_id=UNPARSEABLE_CHAT, first_name="Marisol")
    fake_twilio.fail_next(500)
    fake_telegram.fail_next(500)
    await svc.sms("retry me Lakeview", from_="+13145550188")
    await contact.say("retry me Lakeview", chat_id=SECOND_CHAT)

    async def both_failed_once() -> bool:
        failed = {r.channel for r in await svc.all(Outbox) if r.last_error is not None}
        return failed == {"sms", "telegram"}

    await eventually(both_failed_once, "a failed send on each channel")  # before time moves
    clock.advance(days=1)
    await fake_twilio.wait_for_messages(5)

    async def second_chat_answered() -> bool:
        return any(m.chat_id == SECOND_CHAT for m in fake_telegram.sent)

    await eventually(second_chat_answered, "the retried reply to the second Telegram chat")
    entries = captured_logs.entries()
    assert any(e["event"] == "inbound_taken" for e in entries)  # the capture works
    assert any(e["logger"].startswith("telegram") for e in entries)  # libraries at DEBUG too
    if telegram_mode == "polling":
        assert any(e["event"] == "telegram_update_unparseable" for e in entries)
    everything = captured_logs.everything()
    for needle in (CONTACT_NUMBER, CONTACT_NUMBER[2:], "+13145550188", str(TELEGRAM_CONTACT_ID),
                   str(SECOND_CHAT), str(UNPARSEABLE_CHAT), "Lakeview", "Maria", "Marisol",
                   "Alex", "immediate danger", "gun", TELEGRAM_TOKEN.partition(":")[2]):
        assert needle not in everything, needle


async def test_third_party_critical_log_carries_no_text(fake_telegram, captured_logs):
    # PTB's own get_updates, on a batch it cannot parse, logs the raw batch at CRITICAL.
    fake_telegram.push_raw_update(unparseable_telegram_update(
        update_id=600000001, chat_id=UNPARSEABLE_CHAT, text=SECRET_TEXT, first_name="Marisol"
    ))
    async with Bot(TELEGRAM_TOKEN, base_url=fake_telegram.base_url) as bot:
        with pytest.raises(TypeError):
            await bot.get_updates(timeout=0)

    [critical] = [e for e in captured_logs.entries() if e["level"] == "critical"]
    assert critical == {"at": critical["at"], "level": "critical", "logger": "telegram.Bot",
                        "event": REDACTED_EVENT, "exception": "TypeError"}
    everything = captured_logs.everything()
    for needle in (str(UNPARSEABLE_CHAT), "Lakeview", "Maria", "Marisol", "yesterday"):
        assert needle not in everything, needle


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


async def test_key_rotation_keeps_old_data_readable_and_old_hashes_found(env):
    old = env.key
    before = Cipher.from_env_value(old)
    token = before.encrypt("hello")
    after = Cipher.from_env_value(f"{generate_key()},{old}")
    assert after.decrypt(token) == "hello"
    assert after.encrypt("x").split(":")[0] != token.split(":")[0]
    # New addresses are hashed under the new key; an address stored under the old one is
    # still looked up by its old hash (and `rekey` moves it over).
    old_hash = before.address_hash("sms", CONTACT_NUMBER)
    assert after.address_hash("sms", CONTACT_NUMBER) != old_hash
    assert old_hash in after.address_hashes("sms", CONTACT_NUMBER)


async def test_tampered_ciphertext_is_rejected(env):
    cipher = Cipher.from_env_value(env.key)
    token = cipher.encrypt("hello")
    kid, body = token.split(":")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(DecryptError):
        cipher.decrypt(f"{kid}:{flipped}")


"""Opt-out is absolute: after STOP nothing of any kind reaches the address, on any channel,
whatever queued it; erasing the conversation afterwards keeps the opt-out, as a keyed hash.
The one exception is the single opt-out confirmation on channels other than SMS (Twilio
confirms STOP on SMS itself)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from bot.domain import Channel, OutboxKind
from bot.storage import outbox
from bot.storage.models import Contact, Conversation, Message, Outbox
from tests.conftest import Service, example_config
from tests.fixtures import CONTACT_NUMBER, TELEGRAM_CONTACT_ID
from tests.test_escalation import ALICE, ALICE_CHAT, ONCALL, POLICY, register_staff
from tests.test_sms_flow import wait_until
from tests.waiting import eventually

EN = example_config()["replies"]["en"]
OPTOUT_CONFIRM = EN["optout_confirm"]


class Contact_:
    """One contact on one channel: how they write, and what reached their screen."""

    def __init__(self, svc: Service, channel: str, fakes: dict[str, Any]) -> None:
        self.svc = svc
        self.channel = channel
        self.fake = fakes[channel]
        self.address = CONTACT_NUMBER if channel == "sms" else str(TELEGRAM_CONTACT_ID)

    async def write(self, text: str) -> None:
        if self.channel == "sms":
            status, _ = await self.svc.sms(text)
        else:
            status, _ = await self.svc.telegram(text)
        assert status == 200

    def received(self) -> list[str]:
        if self.channel == "sms":
            return [m.body for m in self.fake.sent if m.to == self.address]
        return [m.text for m in self.fake.sent if str(m.chat_id) == self.address]


@pytest.fixture(params=["sms", "telegram"])
async def contact(request, start_service, fake_twilio, fake_telegram) -> Contact_:
    svc = await start_service(fake_twilio, fake_telegram, oncall=ONCALL, escalation=POLICY)
    return Contact_(svc, request.param, {"sms": fake_twilio, "telegram": fake_telegram})


def confirmations(channel: str) -> list[str]:
    """What STOP itself answers: nothing on SMS (Twilio does), one line elsewhere."""
    return [] if channel == "sms" else [OPTOUT_CONFIRM]


async def test_erase_after_stop_sends_nothing_and_keeps_opt_out(contact: Contact_):
    svc = contact.svc
    await contact.write("Hello")
    await svc.outbox_idle()
    [first_reply] = contact.received()
    await contact.write("STOP")
    await contact.write("DELETE")
    await contact.write("hello again")
    await contact.write("he has a gun")  # an emergency still queues and pages, silently
    await svc.outbox_idle()

    assert contact.received() == [first_reply, *confirmations(contact.channel)]
    [kept] = await svc.all(Contact)
    assert kept.opted_out and kept.address_enc is None
    assert kept.address_hash == svc.services.cipher.address_hash(contact.channel,
                                                                 contact.address)
    for row in await svc.all(Outbox):
        assert row.address_enc is None and row.body_enc is None
    # The erased conversation is gone; what came after is queued for staff.
    conversations = await svc.all(Conversation)
    assert [c.outcome for c in conversations] == ["erased", None]
    assert conversations[1].emergency and conversations[1].contact_id == kept.id
    bodies = [svc.decrypt(m.body_enc) for m in await svc.all(Message)]
    assert bodies == ["hello again", "he has a gun"]


async def test_second_stop_gets_no_second_confirmation(contact: Contact_):
    await contact.write("Hello")
    await contact.write("STOP")
    await contact.write("STOP")
    await contact.write("stop!")
    await contact.svc.outbox_idle()
    assert contact.received()[1:] == confirmations(contact.channel)


async def test_stop_again_before_the_confirmation_went_out_still_confirms_once(
    start_service, fake_twilio, fake_telegram, clock
):
    # A double tap on STOP: the second comes while the first's confirmation waits for a
    # retry (Telegram failed it once). The second STOP must not call that confirmation back.
    svc = await start_service(fake_twilio, fake_telegram, oncall=ONCALL, escalation=POLICY)
    contact = Contact_(svc, "telegram", {"sms": fake_twilio, "telegram": fake_telegram})
    await contact.write("Hello")
    await svc.outbox_idle()
    fake_telegram.fail_next(500)
    await contact.write("STOP")
    await wait_until(svc, lambda rows: any(
        r.kind == OutboxKind.OPTOUT_CONFIRM and r.attempts == 1 and r.status == "pending"
        for r in rows))
    await contact.write("STOP")
    clock.advance(seconds=5)  # past the retry's backoff
    svc.services.worker.wake()

    async def confirmed() -> bool:
        return len(contact.received()) == 2

    await eventually(confirmed, "the opt-out confirmation, sent on its retry")
    await svc.outbox_idle()
    assert contact.received()[1:] == [OPTOUT_CONFIRM]


async def test_start_after_erase_while_opted_out_is_answered_again(contact: Contact_):
    await contact.write("STOP")
    await contact.write("DELETE")
    await contact.write("START")
    await contact.write("Hello")
    await contact.svc.outbox_idle()
    received = contact.received()
    assert received[-1].startswith("Thank you for reaching out.")
    [kept] = await contact.svc.all(Contact)
    assert not kept.opted_out and contact.svc.decrypt(kept.address_enc) == contact.address


async def test_every_outbound_kind_to_an_opted_out_address_is_refused(contact: Contact_):
    svc = contact.svc
    await contact.write("Hello")
    await contact.write("STOP")
    await svc.outbox_idle()
    before = contact.received()
    cipher = svc.services.cipher
    address_hash = cipher.address_hash(contact.channel, contact.address)
    # Every kind of row, queued the way any code path would queue it, straight to the address:
    # with the contact's id, without it (a staff address, an erased contact), and the SMS
    # opt-out confirmation that Twilio sends itself.
    kinds = [OutboxKind.REPLY, OutboxKind.PAGE, OutboxKind.STAFF_NOTICE]
    if contact.channel == "sms":
        kinds.append(OutboxKind.OPTOUT_CONFIRM)
    [opted_out] = await svc.all(Contact)

    def queue(session: Session) -> list[int]:
        ids = []
        for kind in kinds:
            for contact_id in (opted_out.id, None):
                ids.append(outbox.enqueue(
                    session, svc.clock(), channel=contact.channel, kind=kind,
                    address_enc=cipher.encrypt(contact.address), address_hash=address_hash,
                    body_enc=cipher.encrypt(f"a {kind} nobody may see"), contact_id=contact_id,
                ))
        return ids

    ids = await svc.services.writer.run(queue)
    await svc.outbox_idle()
    assert contact.received() == before
    rows = {row.id: row for row in await svc.all(Outbox)}
    assert {(rows[i].status, rows[i].last_error) for i in ids} == {("refused", "opted_out")}
    assert all(rows[i].address_enc is None and rows[i].body_enc is None for i in ids)


async def test_page_to_an_opted_out_phone_goes_to_telegram_instead(
    start_service, fake_twilio, fake_telegram
):
    svc = await start_service(fake_twilio, fake_telegram, oncall=ONCALL, escalation=POLICY)
    # Alice once texted STOP to the coalition's number from her own phone, before she joined.
    await svc.sms("STOP", from_=ALICE)
    await register_staff(svc, "alice", phone=ALICE, telegram=ALICE_CHAT)
    await svc.sms("he has a gun")
    await svc.outbox_idle()
    assert [m.to for m in fake_twilio.sent] == [CONTACT_NUMBER]  # the contact's reply only
    [page] = [m for m in fake_telegram.sent if m.chat_id == ALICE_CHAT]
    assert page.text.startswith("EMERGENCY #1 (sms)")
    refused = [r for r in await svc.all(Outbox) if r.status == "refused"]
    assert [(r.kind, r.channel) for r in refused] == [("page", Channel.SMS)]

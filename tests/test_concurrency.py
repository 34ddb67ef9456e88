"""Messages that arrive at the same moment are taken in as if one after the other: on
PostgreSQL several transactions run at once, and a contact's messages must still meet."""

from __future__ import annotations

import asyncio

from bot.storage.models import Contact, Conversation, Message
from tests.fixtures import CONTACT_NUMBER

FIRST_REPLY = "Thank you for reaching out."


async def test_a_new_contacts_messages_at_once_open_one_conversation(start_service,
                                                                     fake_twilio):
    svc = await start_service(fake_twilio)
    answers = await asyncio.gather(*(svc.sms(f"hello {n}") for n in range(8)))
    assert [status for status, _ in answers] == [200] * 8
    await svc.outbox_idle()
    assert len(await svc.all(Contact)) == 1
    assert len(await svc.all(Conversation)) == 1
    assert len(await svc.all(Message)) == 8 + 1  # eight in, the first reply out
    firsts = [m for m in fake_twilio.sent if m.body.startswith(FIRST_REPLY)]
    assert [m.to for m in firsts] == [CONTACT_NUMBER]


async def test_many_contacts_at_once_each_get_one_first_reply(start_service, fake_twilio):
    svc = await start_service(fake_twilio)
    numbers = [f"+1314555{100 + n:04d}" for n in range(40)]
    sends = [svc.sms(f"hi {k}", from_=number) for number in numbers for k in range(3)]
    answers = await asyncio.gather(*sends)
    assert {status for status, _ in answers} == {200}
    await svc.outbox_idle()
    firsts = sorted(m.to for m in fake_twilio.sent if m.body.startswith(FIRST_REPLY))
    assert firsts == sorted(numbers)
    assert len(await svc.all(Conversation)) == len(numbers)


async def test_messages_at_once_after_a_closed_conversation_open_one_new_one(
    start_service, fake_twilio
):
    svc = await start_service(fake_twilio)
    await svc.sms("hello")
    await svc.sms("EXIT")  # closed: the next message opens a new conversation
    await svc.outbox_idle()
    before = len(fake_twilio.sent)
    answers = await asyncio.gather(*(svc.sms(f"back again {n}") for n in range(8)))
    assert {status for status, _ in answers} == {200}
    await svc.outbox_idle()
    conversations = await svc.all(Conversation)
    assert [c.status for c in conversations] == ["closed", "open"]
    again = [m for m in fake_twilio.sent[before:] if m.body.startswith(FIRST_REPLY)]
    assert len(again) == 1

"""During hours a staff Telegram chat is told of each new conversation: its number and
channel and a console link, never what the contact wrote or who they are."""

from __future__ import annotations

from tests.conftest import PUBLIC_URL, SATURDAY_2PM
from tests.fixtures import CONTACT_NUMBER

STAFF_CHAT = "-1001000000142"  # a group of staff


async def test_new_conversation_during_hours_is_announced_without_content(
    start_service, fake_twilio, fake_telegram
):
    svc = await start_service(fake_twilio, fake_telegram,
                              console={"staff_chat_id": STAFF_CHAT})
    await svc.sms("Maria at the Lakeview motel")
    await svc.sms("a second message in the same conversation")
    await svc.outbox_idle()
    [notice] = [m for m in fake_telegram.sent if str(m.chat_id) == STAFF_CHAT]
    assert notice.text == (f"New conversation #1 (sms) is waiting. "
                           f"{PUBLIC_URL}/console/conversations/1")
    assert "Lakeview" not in notice.text and CONTACT_NUMBER[2:] not in notice.text


async def test_no_announcement_after_hours_or_without_a_staff_chat(
    start_service, fake_twilio, fake_telegram, clock
):
    svc = await start_service(fake_twilio, fake_telegram,
                              console={"staff_chat_id": STAFF_CHAT})
    clock.now = SATURDAY_2PM
    await svc.sms("Hello")
    await svc.outbox_idle()
    assert fake_telegram.sent == []
    await svc.client.close()
    quiet = await start_service(fake_twilio, fake_telegram)
    clock.advance(days=2)  # Monday, staff are in
    await quiet.sms("Hello", from_="+13145550177")
    await quiet.outbox_idle()
    assert fake_telegram.sent == []

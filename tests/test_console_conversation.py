"""A conversation in the staff console, over real HTTP: contacts write in through signed
webhooks, staff read and answer at /console/conversations/{number}, and what they send
reaches the fake Twilio and Telegram through the outbox. The rules (opt-out, NOT SAFE, the
quiet window, claims) are checked with crafted POSTs too, since a hidden button is no rule.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from bot.domain import PRIORITY_EMERGENCY, Direction
from bot.storage.models import (
    AuditEntry,
    CannedReply,
    Conversation,
    Escalation,
    Message,
    Outbox,
    Staff,
)
from bot.storage.views import HISTORY_LIMIT
from tests.conftest import Service
from tests.console_helpers import Browser, Page, add_staff
from tests.fixtures import (
    CONTACT_NUMBER,
    OUR_NUMBER,
    TELEGRAM_CONTACT_ID,
    load_twilio_form,
)

ALICE_PHONE = "+13145550142"  # on call
OTHER_OUR_NUMBER = "+13145550101"  # a second number of ours
PAGE = re.compile(r"^EMERGENCY #(\d+) \(sms\) \d\d:\d\d\. Reply ACK \1\. "
                  r"https://triage\.example\.org/console/escalations/\1$")


@pytest.fixture
async def svc(start_service, fake_twilio, fake_telegram) -> Service:
    return await start_service(fake_twilio, fake_telegram)


def url(number: int, action: str = "") -> str:
    return f"/console/conversations/{number}" + (f"/{action}" if action else "")


async def contact_writes(svc: Service, fake_twilio: Any, *texts: str) -> int:
    """The contact texts in (each message answered, or not, as the bot does) and the
    conversation's number."""
    for text in texts:
        status, _ = await svc.sms(text)
        assert status == 200
    await svc.outbox_idle()
    conversations = await svc.all(Conversation)
    return conversations[-1].id


async def staff_browser(svc: Service, username: str, role: str = "staff") -> Browser:
    await add_staff(svc, username, role=role)
    browser = Browser(svc)
    await browser.sign_in(username)
    return browser


async def open_page(browser: Browser, number: int) -> Page:
    page = await browser.get(url(number))
    assert page.status == 200, page.text[:300]
    return page


async def act(browser: Browser, number: int, action: str,
              form: dict[str, str] | None = None) -> Page:
    """Open the page (for its form's CSRF token) and post one of its forms."""
    await open_page(browser, number)
    return await browser.post(url(number, action), form or {})


async def staff_messages(svc: Service) -> list[Message]:
    return [m for m in await svc.all(Message) if m.author_staff_id is not None]


async def audit_rows(svc: Service, action: str) -> list[AuditEntry]:
    return [r for r in await svc.all(AuditEntry) if r.action == action]


def texts_to(fake_twilio: Any, number: str = CONTACT_NUMBER) -> list[str]:
    return [m.body for m in fake_twilio.sent if m.to == number]


def reply_box(page: Page) -> str:
    found = re.search(r'<textarea id="reply-text"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert found, page.text[:500]
    return found.group(0)


# --- replying -------------------------------------------------------------------------------


async def test_staff_reply_reaches_the_contact_by_sms_with_exactly_that_text(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    text = "Hi, this is Erin from the coalition.\nAre you safe to talk now?"
    page = await act(erin, number, "reply", {"text": text})
    assert page.status == 303 and page.location == url(number) + "?done=replied"
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == 2
    sent = fake_twilio.sent[-1]
    assert (sent.to, sent.from_, sent.body) == (CONTACT_NUMBER, OUR_NUMBER, text)
    [message] = await staff_messages(svc)
    assert message.direction == Direction.OUTBOUND and message.automatic is False
    [conversation] = await svc.all(Conversation)
    assert conversation.first_staff_reply_at == svc.clock.now
    assert conversation.awaiting_since is None
    [row] = await audit_rows(svc, "conversation_replied")
    assert (row.actor, row.target_id, row.detail) == ("erin", number, "channel=sms")
    page = await erin.follow(page)
    assert "Reply queued" in page.text and "Are you safe to talk now?" in page.text


async def test_only_the_first_staff_reply_sets_first_staff_reply_at(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    first = svc.clock.now
    await act(erin, number, "reply", {"text": "One"})
    svc.clock.advance(minutes=5)
    await svc.sms("Thanks")
    svc.clock.advance(minutes=5)
    await act(erin, number, "reply", {"text": "Two"})
    [conversation] = await svc.all(Conversation)
    assert conversation.first_staff_reply_at == first and conversation.awaiting_since is None


async def test_staff_reply_goes_from_the_number_the_contact_wrote_to(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")

    def wrote_to_other(session: Session) -> None:
        session.execute(update(Conversation).where(Conversation.id == number)
                        .values(origin=OTHER_OUR_NUMBER))

    await svc.services.writer.run(wrote_to_other)
    erin = await staff_browser(svc, "erin")
    await act(erin, number, "reply", {"text": "We are here."})
    await svc.outbox_idle()
    assert fake_twilio.sent[-1].from_ == OTHER_OUR_NUMBER


async def test_staff_reply_reaches_a_telegram_contact(svc, fake_telegram):
    await svc.telegram("Hello")
    await svc.outbox_idle()
    [conversation] = await svc.all(Conversation)
    erin = await staff_browser(svc, "erin")
    page = await open_page(erin, conversation.id)
    assert "Reply on Telegram" in page.text and "data-segments" not in reply_box(page)
    text = "Hola. Estamos aquí para ayudar 🙂"
    page = await erin.post(url(conversation.id, "reply"), {"text": text})
    assert page.status == 303
    await svc.outbox_idle()
    assert len(fake_telegram.sent) == 2
    assert (fake_telegram.sent[-1].chat_id, fake_telegram.sent[-1].text) == (
        TELEGRAM_CONTACT_ID, text)


async def test_reply_to_an_opted_out_contact_is_refused_and_nothing_is_sent(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello", "STOP")
    sent_before = len(fake_twilio.sent)
    erin = await staff_browser(svc, "erin")
    page = await open_page(erin, number)
    assert "Opted out." in page.text
    assert "disabled" in reply_box(page) and "Replying is blocked" in page.text
    page = await erin.post(url(number, "reply"), {"text": "Are you there?",
                                                  "confirm": "not_safe quiet"})
    assert page.status == 409 and "opted out" in page.text
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == sent_before
    assert await staff_messages(svc) == []
    assert await audit_rows(svc, "conversation_replied") == []


async def test_reply_after_the_quiet_window_needs_a_confirmation_even_from_a_crafted_post(
    svc, fake_twilio,
):
    number = await contact_writes(svc, fake_twilio, "Hello")
    svc.clock.advance(hours=73)  # the example config's quiet window is 72 hours
    erin = await staff_browser(svc, "erin")
    page = await open_page(erin, number)
    assert "Quiet for 3 days." in page.text
    text = "Checking in: are you still OK?"
    # The first POST, as the page's form sends it, and a crafted one with a made-up
    # confirmation: both get the warning and a second form, and nothing goes out.
    for form in ({"text": text}, {"text": text, "confirm": "not_safe"}):
        page = await erin.post(url(number, "reply"), form)
        assert page.status == 200 and "Check before you send" in page.text
        assert "Nothing has been sent yet." in page.text
        assert 'name="confirm" value="quiet"' in page.text
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == 1
    assert await staff_messages(svc) == [] and len(await svc.all(Outbox)) == 1
    # The warning page's own form confirms.
    page = await erin.post(url(number, "reply"), {"text": text, "confirm": "quiet"})
    assert page.status == 303
    await svc.outbox_idle()
    assert texts_to(fake_twilio)[-1] == text
    [row] = await audit_rows(svc, "conversation_replied")
    assert row.detail == "channel=sms confirmed=quiet"


async def test_reply_to_a_contact_who_said_not_safe_needs_that_confirmation(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello", "2", "NOT SAFE")
    [conversation] = await svc.all(Conversation)
    assert conversation.safe_to_text is False
    erin = await staff_browser(svc, "erin")
    page = await open_page(erin, number)
    assert "Not safe to text." in page.text
    sent_before = len(fake_twilio.sent)
    for form in ({"text": "Hello again"}, {"text": "Hello again", "confirm": "quiet"}):
        page = await erin.post(url(number, "reply"), form)
        assert page.status == 200 and 'name="confirm" value="not_safe"' in page.text
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == sent_before and await staff_messages(svc) == []
    page = await erin.post(url(number, "reply"), {"text": "Hello again",
                                                  "confirm": "not_safe"})
    assert page.status == 303
    await svc.outbox_idle()
    assert texts_to(fake_twilio)[-1] == "Hello again"


async def test_reply_text_limits_are_kept_on_the_server(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    page = await act(erin, number, "reply", {"text": "  \r\n "})
    assert page.status == 400 and "Write something first." in page.text
    too_long = "a" * 1601
    page = await erin.post(url(number, "reply"), {"text": too_long})
    assert page.status == 400 and "at most 1600" in page.text
    assert too_long in reply_box(page)  # what was written is not lost
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == 1 and await staff_messages(svc) == []
    page = await erin.post(url(number, "reply"), {"text": "b" * 1600})
    assert page.status == 303
    await svc.outbox_idle()
    assert texts_to(fake_twilio)[-1] == "b" * 1600


async def test_a_contact_who_erased_their_conversation_cannot_be_written_to(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello", "DELETE")
    sent_before = len(fake_twilio.sent)
    erin = await staff_browser(svc, "erin")
    page = await open_page(erin, number)
    assert "Erased." in page.text and "disabled" in reply_box(page)
    page = await erin.post(url(number, "reply"), {"text": "Hello?",
                                                  "confirm": "not_safe quiet"})
    assert page.status == 409
    page = await act(erin, number, "reopen")
    assert page.status == 409 and "cannot be reopened" in page.text
    page = await act(erin, number, "note", {"text": "Called back?"})
    assert page.status == 409

    def open_again(session: Session) -> None:  # no form does this: the address rule holds
        session.execute(update(Conversation).where(Conversation.id == number)
                        .values(status="open"))

    await svc.services.writer.run(open_again)
    page = await act(erin, number, "reply", {"text": "Hello?", "confirm": "not_safe quiet"})
    assert page.status == 409 and "erased their address" in page.text
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == sent_before
    assert await svc.all(Message) == []


# --- reading --------------------------------------------------------------------------------


async def test_contact_text_is_escaped_with_its_line_breaks_and_links_stay_dead(
    svc, fake_twilio,
):
    body = ('<script>alert("x")</script> look <a href="https://evil.example/a">here</a>\n'
            "or go to https://evil.example/b now")
    number = await contact_writes(svc, fake_twilio, body)
    erin = await staff_browser(svc, "erin")
    page = await open_page(erin, number)
    fragment = await erin.get(url(number, "history"))
    assert fragment.status == 200
    for html in (page.text, fragment.text):
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        assert "&lt;a href=&#34;https://evil.example/a&#34;&gt;here&lt;/a&gt;\n" in html
        assert 'href="https://evil.example' not in html and "<a href=\"http" not in html
        assert "or go to https://evil.example/b now</div>" in html


async def test_viewing_a_conversation_is_audited_and_shows_who_else_has_it_open(
    svc, fake_twilio,
):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    bob = await staff_browser(svc, "bob")
    await open_page(erin, number)
    page = await open_page(bob, number)
    assert "Open now: erin." in page.text
    assert [(r.actor, r.target_id) for r in await audit_rows(svc, "conversation_viewed")] == [
        ("erin", number), ("bob", number)]
    queue = await bob.get("/console?tab=open")
    assert "Open now: bob, erin" in queue.text
    # The page's presence beat keeps erin "open now"; without it she drops off.
    svc.clock.advance(seconds=60)
    assert (await erin.post(url(number, "presence"))).status == 204
    svc.clock.advance(seconds=60)
    page = await bob.get(url(number, "history"))
    assert "Open now: erin." in page.text
    svc.clock.advance(seconds=90)
    page = await bob.get(url(number, "history"))
    assert "Open now" not in page.text
    # bob's page had stopped its beat too: each fetch after that counts as a new view.
    assert [r.actor for r in await audit_rows(svc, "conversation_viewed")] == [
        "erin", "bob", "bob", "bob"]


async def test_a_long_conversation_opens_on_its_latest_messages_and_pages_back(
    svc, fake_twilio,
):
    number = await contact_writes(svc, fake_twilio, "Hello")
    cipher = svc.services.cipher
    now = svc.clock()

    def unit(session: Session) -> None:
        session.add_all(Message(conversation_id=number, direction=Direction.INBOUND,
                                body_enc=cipher.encrypt(f"line {i:03d}"), created_at=now)
                        for i in range(2 * HISTORY_LIMIT + 50))

    await svc.services.writer.run(unit)
    erin = await staff_browser(svc, "erin")
    first = None
    seen: list[str] = []
    page = await open_page(erin, number)
    while True:
        lines = re.findall(r"line \d{3}", page.text)
        seen = lines + seen
        if first is None:
            first = lines
            fragment = await erin.get(url(number, "history"))
            assert re.findall(r"line \d{3}", fragment.text) == lines
        older = re.search(r'href="(/console/conversations/\d+\?before=\d+)#history">'
                          r"Show the (\d+) before these", page.text)
        if older is None:
            break
        page = await erin.get(older.group(1))
        assert page.status == 200 and "Back to the latest" in page.text
        live = re.search(r'data-history="([^"]+)"', page.text).group(1)
        assert re.findall(r"line \d{3}", (await erin.get(live)).text) == \
            re.findall(r"line \d{3}", page.text)
    assert first == [f"line {i:03d}" for i in range(HISTORY_LIMIT + 50, 2 * HISTORY_LIMIT + 50)]
    assert seen == [f"line {i:03d}" for i in range(2 * HISTORY_LIMIT + 50)]
    assert "Hello" in page.text and "earlier messages are not shown" not in page.text
    assert (await erin.get(url(number) + "?before=x")).status == 400


async def test_a_conversation_that_does_not_exist_is_a_404_page(svc):
    erin = await staff_browser(svc, "erin")
    page = await erin.get(url(424242))
    assert page.status == 404 and "No conversation #424242" in page.text
    for path in (url(4242424242424242424242), "/console/conversations/abc"):
        assert (await erin.get(path)).status == 404
    await erin.get(url(424242))
    assert (await erin.post(url(424242, "claim"))).status == 404
    assert (await erin.post(url(424242, "presence"))).status == 404
    assert await audit_rows(svc, "conversation_viewed") == []


async def test_a_signed_out_browser_gets_nothing(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello <b>secret</b>")
    stranger = Browser(svc)
    for path in (url(number), url(number, "history")):
        page = await stranger.get(path)
        assert page.status == 303 and page.location.startswith("/console/login")
        assert "secret" not in page.text
    for action in ("reply", "note", "claim", "emergency", "close"):
        page = await stranger.post(url(number, action), {"text": "hi", "outcome": "spam"},
                                   csrf="made-up")
        assert page.status == 401
    # Signed in, but the form's token is not this session's: refused all the same.
    erin = await staff_browser(svc, "erin")
    await open_page(erin, number)
    for action in ("reply", "claim", "emergency"):
        assert (await erin.post(url(number, action), {"text": "hi"}, csrf="forged")).status \
            == 403
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == 1
    assert await staff_messages(svc) == [] and await svc.all(Escalation) == []
    assert [c.assigned_to for c in await svc.all(Conversation)] == [None]


@pytest.mark.parametrize("role", ["staff", "oncall", "admin"])
async def test_every_role_may_work_a_conversation(svc, fake_twilio, role):
    number = await contact_writes(svc, fake_twilio, "Hello")
    _, secret = await add_staff(svc, "pat", role=role, two_factor=role == "admin")
    browser = Browser(svc)
    await browser.sign_in("pat", totp_secret=secret)
    assert (await act(browser, number, "claim")).status == 303
    assert (await act(browser, number, "reply", {"text": "Hello from pat"})).status == 303
    await svc.outbox_idle()
    assert texts_to(fake_twilio)[-1] == "Hello from pat"


# --- claiming -------------------------------------------------------------------------------


async def test_two_staff_claiming_at_once_one_wins_and_the_other_is_told(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    bob = await staff_browser(svc, "bob")
    await open_page(erin, number)
    await open_page(bob, number)
    pages = await asyncio.gather(erin.post(url(number, "claim")),
                                 bob.post(url(number, "claim")))
    assert sorted(p.status for p in pages) == [303, 409]
    [lost] = [p for p in pages if p.status == 409]
    [conversation] = await svc.all(Conversation)
    winner = {s.id: s.username for s in await svc.all(Staff)}[conversation.assigned_to]
    assert f"{winner} has already claimed it." in lost.text
    [row] = await audit_rows(svc, "conversation_claimed")
    assert row.actor == winner


async def test_transfer_hands_it_to_another_active_staff_member(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    bob = await staff_browser(svc, "bob")
    gone_id, _ = await add_staff(svc, "gone", disabled=True)
    ids = {s.username: s.id for s in await svc.all(Staff)}
    assert (await act(erin, number, "claim")).status == 303
    page = await open_page(erin, number)
    assert f'<option value="{ids["bob"]}">bob</option>' in page.text
    assert ">gone<" not in page.text
    page = await erin.post(url(number, "transfer"), {"to": str(gone_id)})
    assert page.status == 400
    page = await erin.post(url(number, "transfer"), {"to": str(ids["bob"])})
    assert page.status == 303
    [conversation] = await svc.all(Conversation)
    assert conversation.assigned_to == ids["bob"]
    [row] = await audit_rows(svc, "conversation_transferred")
    assert (row.actor, row.detail) == ("erin", "to=bob")
    # Now bob has it: erin (role staff) can neither take it back nor release it.
    assert "Claimed by bob." in (await open_page(erin, number)).text
    page = await erin.post(url(number, "release"))
    assert page.status == 409 and "bob has it" in page.text
    page = await act(erin, number, "transfer", {"to": str(ids["erin"])})
    assert page.status == 409
    assert (await act(bob, number, "release")).status == 303
    [conversation] = await svc.all(Conversation)
    assert conversation.assigned_to is None


# --- notes, closing, category, priority -----------------------------------------------------


async def test_a_note_is_kept_for_staff_and_never_sent(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    note = "Caller sounded scared. Try again after 6pm. <b>not markup</b>"
    page = await act(erin, number, "note", {"text": note})
    assert page.status == 303
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == 1
    [message] = await staff_messages(svc)
    assert message.direction == Direction.NOTE and svc.decrypt(message.body_enc) == note
    assert all(row.message_id != message.id for row in await svc.all(Outbox))
    page = await open_page(erin, number)
    assert "Note by erin" in page.text and "never sent" in page.text
    assert "&lt;b&gt;not markup&lt;/b&gt;" in page.text
    [row] = await audit_rows(svc, "note_added")
    assert row.actor == "erin" and row.detail == ""


async def test_close_with_an_outcome_then_reopen(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    assert (await act(erin, number, "close", {"outcome": "quick_exit"})).status == 400
    assert (await act(erin, number, "close", {"outcome": "referred"})).status == 303
    [conversation] = await svc.all(Conversation)
    assert (conversation.status, conversation.outcome) == ("closed", "referred")
    assert conversation.closed_at == svc.clock.now
    page = await open_page(erin, number)
    assert "Closed" in page.text and "Reopen it to reply." in page.text
    assert "disabled" in reply_box(page)
    page = await erin.post(url(number, "reply"), {"text": "Anything else?"})
    assert page.status == 409 and "Reopen it first." in page.text
    assert (await act(erin, number, "reopen")).status == 303
    [conversation] = await svc.all(Conversation)
    assert (conversation.status, conversation.outcome, conversation.closed_at) == (
        "open", None, None)
    assert (await act(erin, number, "reply", {"text": "Anything else?"})).status == 303
    await svc.outbox_idle()
    assert texts_to(fake_twilio)[-1] == "Anything else?"
    [closed] = await audit_rows(svc, "conversation_closed")
    assert (closed.actor, closed.detail) == ("erin", "referred")
    [reopened] = await audit_rows(svc, "conversation_reopened")
    assert reopened.detail == "was=referred"


async def test_an_older_conversation_is_not_reopened_once_the_contact_wrote_again(
    svc, fake_twilio,
):
    first = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    await act(erin, first, "close", {"outcome": "information_given"})
    second = await contact_writes(svc, fake_twilio, "Me again")
    assert second != first
    page = await act(erin, first, "reopen")
    assert page.status == 409 and f"see #{second}" in page.text


async def test_category_and_priority_are_set(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    assert (await act(erin, number, "category", {"category": "connect_services"})).status \
        == 303
    assert (await act(erin, number, "priority", {"priority": "50"})).status == 303
    assert (await act(erin, number, "category", {"category": "lunch"})).status == 400
    assert (await act(erin, number, "priority", {"priority": "100"})).status == 400
    [conversation] = await svc.all(Conversation)
    assert (conversation.intake_category, conversation.priority) == ("connect_services", 50)
    assert [r.detail for r in await audit_rows(svc, "conversation_category_set")] == [
        "connect_services"]
    assert [r.detail for r in await audit_rows(svc, "conversation_priority_set")] == ["50"]


# --- emergencies ----------------------------------------------------------------------------


async def test_marking_an_emergency_pages_on_call_by_the_keyword_path(
    start_service, fake_twilio, fake_telegram,
):
    svc = await start_service(fake_twilio, fake_telegram, oncall={
        "rotation": ["alice"], "handover": "monday 09:00", "start": "2026-11-30"})
    number = await contact_writes(svc, fake_twilio, "Hello")
    await add_staff(svc, "alice", role="oncall")
    cipher = svc.services.cipher

    def give_alice_a_phone(session: Session) -> None:
        session.execute(update(Staff).where(Staff.username == "alice").values(
            phone_enc=cipher.encrypt(ALICE_PHONE),
            phone_hash=cipher.address_hash("sms", ALICE_PHONE)))

    await svc.services.writer.run(give_alice_a_phone)
    erin = await staff_browser(svc, "erin")
    page = await act(erin, number, "emergency")
    assert page.status == 303
    await svc.outbox_idle()
    [page_text] = texts_to(fake_twilio, ALICE_PHONE)
    match = PAGE.match(page_text)
    assert match, page_text
    [escalation] = await svc.all(Escalation)
    assert (escalation.id, escalation.trigger, escalation.conversation_id) == (
        int(match.group(1)), "staff", number)
    [conversation] = await svc.all(Conversation)
    assert conversation.emergency and conversation.priority == PRIORITY_EMERGENCY
    [opened] = await audit_rows(svc, "escalation_opened")
    assert (opened.actor, opened.detail) == ("erin", "trigger=staff")
    page = await open_page(erin, number)
    assert f'Escalation <a href="/console/escalations/{escalation.id}">' in page.text
    # Again, by a crafted POST: the open escalation goes on; no second one, no second page.
    page = await erin.post(url(number, "emergency"))
    assert page.status == 303
    await svc.outbox_idle()
    assert len(await svc.all(Escalation)) == 1 and len(texts_to(fake_twilio, ALICE_PHONE)) == 1
    assert [r.detail for r in await audit_rows(svc, "conversation_marked_emergency")] == [
        f"escalation={escalation.id}", f"escalation={escalation.id} already_open"]


# --- delivery status, canned replies, audit -------------------------------------------------


async def test_delivery_status_shows_delivered_after_twilio_says_so(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")
    erin = await staff_browser(svc, "erin")
    await act(erin, number, "reply", {"text": "Tracking this one"})
    await svc.outbox_idle()
    [sent] = [m for m in fake_twilio.sent if m.body == "Tracking this one"]
    [message] = await staff_messages(svc)

    def status_of(page: Page) -> str:
        item = page.text[page.text.index(f'id="m{message.id}"'):]
        return re.search(r'<span class="delivery ([a-z]+)">', item).group(1)

    assert status_of(await erin.get(url(number, "history"))) == "sent"
    form = load_twilio_form("status_delivered", MessageSid=sent.sid, SmsSid=sent.sid)
    status, _ = await svc.post_form("/webhooks/twilio/status", form)
    assert status == 200
    page = await erin.get(url(number, "history"))
    assert status_of(page) == "delivered" and "Delivered" in page.text


async def test_a_canned_reply_goes_into_the_reply_box(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "Hello")

    def add_canned(session: Session) -> list[int]:
        rows = [CannedReply(title="Hours", language="en", body="We are open 9 to 5.\nCall us.",
                            created_at=svc.clock.now, updated_at=svc.clock.now),
                CannedReply(title="Horario", language="es", body="Abrimos de 9 a 5.",
                            created_at=svc.clock.now, updated_at=svc.clock.now)]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]

    hours_id, _ = await svc.services.writer.run(add_canned)
    erin = await staff_browser(svc, "erin")
    page = await open_page(erin, number)
    assert page.text.index(">Hours (English)<") < page.text.index(">Horario (Spanish)<")
    page = await erin.get(url(number) + f"?canned={hours_id}")
    assert ">We are open 9 to 5.\nCall us.</textarea>" in reply_box(page)
    await svc.outbox_idle()
    assert len(fake_twilio.sent) == 1  # choosing one sends nothing


async def test_every_action_writes_its_audit_row_and_never_the_text(svc, fake_twilio):
    number = await contact_writes(svc, fake_twilio, "My secret words")
    erin = await staff_browser(svc, "erin")
    bob_id, _ = await add_staff(svc, "bob")
    steps = [
        ("claim", {}, "conversation_claimed"),
        ("release", {}, "conversation_released"),
        ("transfer", {"to": str(bob_id)}, "conversation_transferred"),
        ("reply", {"text": "Reply words private"}, "conversation_replied"),
        ("note", {"text": "Note words private"}, "note_added"),
        ("category", {"category": "other"}, "conversation_category_set"),
        ("priority", {"priority": "80"}, "conversation_priority_set"),
        ("emergency", {}, "conversation_marked_emergency"),
        ("close", {"outcome": "spam"}, "conversation_closed"),
        ("reopen", {}, "conversation_reopened"),
    ]
    for action, form, audited in steps:
        before = len(await audit_rows(svc, audited))
        page = await act(erin, number, action, form)
        assert page.status == 303, (action, page.text[:300])
        rows = await audit_rows(svc, audited)
        assert len(rows) == before + 1, action
        assert (rows[-1].actor, rows[-1].actor_staff_id is not None, rows[-1].target_type,
                rows[-1].target_id) == ("erin", True, "conversation", number)
    assert len(await audit_rows(svc, "conversation_viewed")) == len(steps)
    details = " ".join(f"{r.action} {r.detail}" for r in await svc.all(AuditEntry))
    for private in ("secret", "words", CONTACT_NUMBER, "Reply", "Note w"):
        assert private not in details

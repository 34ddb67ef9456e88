"""Cries for help reach on-call (issue 7): "help me", "necesito ayuda", a bare HELP or AYUDA,
after hours too, and with an invisible character inside a word. Signed webhooks in, the
outbox out to the fake Twilio; the team and helpers are tests/test_escalation.py's (alice on
call, carol the backup, bob the other on-call member, erin staff).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from bot.storage.models import AuditEntry, Conversation, Escalation
from tests.conftest import MONDAY_10AM, SATURDAY_2PM, Service, example_config
from tests.fixtures import CONTACT_NUMBER
from tests.test_escalation import (
    ALICE,
    EMERGENCY_REPLY,
    ONCALL,
    PAGE,
    POLICY,
    Phones,
    pages_to,
    register_team,
)

REPLIES = example_config()["replies"]
EN, ES = REPLIES["en"], REPLIES["es"]
ES_EMERGENCY_REPLY = ES["emergency"].format(safety=ES["safety"])
HELP_REPLY = EN["help"].format(safety=EN["safety"])
ES_HELP_REPLY = ES["help"].format(safety=ES["safety"])
FIRST_CONTACT_CLOSED = (
    f"Thank you for reaching out. {EN['safety']} Staff are back Monday at 9:00 AM and will "
    f"answer you here. {EN['intake_question']}"
)

StartTeam = Callable[..., Awaitable[Service]]


@pytest.fixture
def start(start_service, fake_twilio) -> StartTeam:
    async def start(oncall: dict[str, Any] | None = None) -> Service:
        svc = await start_service(fake_twilio, oncall={**ONCALL, **(oncall or {})},
                                  escalation=POLICY)
        await register_team(svc)
        return svc

    return start


@pytest.fixture
async def svc(start) -> Service:
    return await start()


@pytest.fixture
def phones(fake_twilio, started) -> Phones:
    return Phones(fake_twilio, started)


async def contact_and_pages(phones: Phones, n: int = 2) -> tuple[list[str], list[str]]:
    """The texts the contact got and the pages alice got, among the next `n` sent."""
    sent = await phones.expect(n)
    assert {m.to for m in sent} <= {CONTACT_NUMBER, ALICE}
    return [m.body for m in sent if m.to == CONTACT_NUMBER], pages_to(sent, ALICE)


async def one_open_escalation(svc: Service, page: str) -> Escalation:
    """The single escalation, open, for the single conversation, numbered as in the page."""
    [conversation] = await svc.all(Conversation)
    assert conversation.emergency is True and conversation.priority == 100
    [escalation] = await svc.all(Escalation)
    match = PAGE.fullmatch(page)
    assert match, page
    assert escalation.id == int(match.group(1))
    assert (escalation.status, escalation.channel, escalation.trigger) == (
        "open", "sms", "keyword"
    )
    assert escalation.conversation_id == conversation.id
    return escalation


# --- cry-for-help phrases --------------------------------------------------------------------


async def test_help_me_pages_on_call(svc, phones):
    status, _ = await svc.sms("help me")
    assert status == 200
    texts, [page] = await contact_and_pages(phones)
    assert texts == [EMERGENCY_REPLY]
    escalation = await one_open_escalation(svc, page)
    [opened] = [a for a in await svc.all(AuditEntry) if a.action == "escalation_opened"]
    assert (opened.target_id, opened.detail) == (escalation.id, "trigger=keyword")
    await phones.nothing_more()


@pytest.mark.parametrize(
    "text", ["please help", "i need help", "Heeelp meee", "plz help", "HELP ME!!!"]
)
async def test_cries_for_help_in_english_page_on_call(svc, phones, text):
    await svc.sms(text)
    texts, [page] = await contact_and_pages(phones)
    assert texts == [EMERGENCY_REPLY]
    await one_open_escalation(svc, page)


@pytest.mark.parametrize("text", ["necesito ayuda", "ayúdame", "Ayudame porfavor", "auxilio"])
async def test_cries_for_help_in_spanish_page_on_call_and_answer_in_spanish(svc, phones, text):
    await svc.sms(text)
    texts, [page] = await contact_and_pages(phones)
    assert texts == [ES_EMERGENCY_REPLY]
    await one_open_escalation(svc, page)


@pytest.mark.parametrize(
    "text",
    ["he\u200blp me", "i ne\u00aded he\u200dlp", "necesito ayu\u2060da", "he\u200elp me"],
    ids=["zwsp", "soft-hyphen-and-zwj", "word-joiner", "left-to-right-mark"],
)
async def test_invisible_character_inside_a_word_still_escalates(svc, phones, text):
    await svc.sms(text)
    texts, [page] = await contact_and_pages(phones)
    assert texts == [ES_EMERGENCY_REPLY if "ayu" in text else EMERGENCY_REPLY]
    await one_open_escalation(svc, page)


async def test_help_me_after_hours_follow_up_gets_the_emergency_reply(start, phones, clock):
    clock.now = SATURDAY_2PM
    svc = await start(oncall={"start": "2026-11-23"})  # alice's week runs to Monday 9:00
    await svc.sms("hello")
    [first] = await phones.expect(1)
    assert (first.to, first.body) == (CONTACT_NUMBER, FIRST_CONTACT_CLOSED)
    await svc.sms("help me")
    texts, [page] = await contact_and_pages(phones)
    assert texts == [EMERGENCY_REPLY]
    assert "(sms) 14:00." in page
    await one_open_escalation(svc, page)
    await phones.nothing_more()


# --- the bare HELP / AYUDA keyword -------------------------------------------------------------


async def test_bare_help_answers_and_pages(svc, phones, clock):
    await svc.sms("HELP")
    texts, [page] = await contact_and_pages(phones)
    assert texts == [HELP_REPLY]  # the keyword answer, with 911 and the hotline, and no other
    await one_open_escalation(svc, page)
    [conversation] = await svc.all(Conversation)
    assert conversation.status == "open"
    assert conversation.last_emergency_reply_at == clock.now
    await phones.nothing_more()


async def test_bare_ayuda_answers_in_spanish_and_pages(svc, phones):
    await svc.sms("¡Ayuda!")
    texts, [page] = await contact_and_pages(phones)
    assert texts == [ES_HELP_REPLY]
    await one_open_escalation(svc, page)


async def test_help_after_a_first_message_answers_and_pages(svc, phones):
    await svc.sms("hello")
    await phones.expect(1)
    await svc.sms("help")
    texts, [page] = await contact_and_pages(phones)
    assert texts == [HELP_REPLY]
    await one_open_escalation(svc, page)


async def test_bare_help_counts_as_the_emergency_text_for_ten_minutes(svc, phones, clock):
    await svc.sms("HELP")
    await contact_and_pages(phones)
    clock.advance(minutes=9)
    await svc.sms("help me")  # an emergency, but the help answer went out 9 minutes ago
    await phones.nothing_more()
    clock.advance(minutes=1)
    await svc.sms("please help")
    texts, pages = await contact_and_pages(phones, 1)
    assert (texts, pages) == ([EMERGENCY_REPLY], [])  # the escalation is already open
    assert len(await svc.all(Escalation)) == 1


async def test_help_while_an_escalation_is_open_opens_no_second_one(svc, phones):
    await svc.sms("he has a gun")
    await contact_and_pages(phones)
    await svc.sms("HELP")
    texts, pages = await contact_and_pages(phones, 1)
    assert (texts, pages) == ([HELP_REPLY], [])
    [escalation] = await svc.all(Escalation)
    assert escalation.step == 1  # one page so far; the re-page is the ladder's, not HELP's
    assert escalation.next_step_at == MONDAY_10AM + timedelta(seconds=300)


async def test_info_answers_without_paging(svc, phones):
    await svc.sms("INFO")
    texts, pages = await contact_and_pages(phones, 1)
    assert (texts, pages) == ([HELP_REPLY], [])
    await phones.nothing_more()
    assert await svc.all(Escalation) == []
    [conversation] = await svc.all(Conversation)
    assert conversation.emergency is False and conversation.priority == 0

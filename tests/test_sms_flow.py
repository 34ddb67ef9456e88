"""The conversation over SMS, end to end: signed Twilio webhooks in, the real twilio SDK out
to the fake Twilio, and what a contact sees on their phone."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.domain import ConversationStatus, IntakeState
from bot.gsm import is_gsm7, sms_segments
from bot.storage.models import (
    Contact,
    Conversation,
    Escalation,
    Message,
    Outbox,
    ProviderEvent,
)
from tests.conftest import MONDAY_10AM, SATURDAY_2PM, Service, example_config
from tests.fakes.twilio_api import FakeTwilio
from tests.fixtures import (
    AUTH_TOKEN,
    CONTACT_NUMBER,
    MESSAGING_SERVICE_SID,
    OUR_NUMBER,
    load_twilio_form,
    twilio_signature,
)
from tests.waiting import eventually

EN = example_config()["replies"]["en"]
ES = example_config()["replies"]["es"]
SAFETY = EN["safety"]
OTHER = "+13145550177"


def texts_to(fake: FakeTwilio, number: str = CONTACT_NUMBER) -> list[str]:
    return [m.body for m in fake.sent if m.to == number]


async def count(svc: Service, model: type) -> int:
    return await svc.query(lambda s: s.scalar(select(func.count()).select_from(model)))


@pytest.fixture
async def svc(start_service, fake_twilio) -> Service:
    return await start_service(fake_twilio)


# --- first contact -------------------------------------------------------------------------


async def test_first_reply_carries_safety_text_hours_and_intake(svc, fake_twilio):
    status, twiml = await svc.sms("Hello")
    assert status == 200
    assert twiml.strip().endswith("<Response />") or "<Message>" not in twiml
    [sent] = await fake_twilio.wait_for_messages(1)
    assert sent.to == CONTACT_NUMBER and sent.from_ == OUR_NUMBER
    assert sent.body == (
        f"Thank you for reaching out. {SAFETY} Staff are in now and will answer you here soon. "
        f"{EN['intake_question']}"
    )
    assert "call 911" in sent.body and "1-888-373-7888" in sent.body and "233733" in sent.body
    assert sent.status_callback == "https://triage.example.org/webhooks/twilio/status"


async def test_first_reply_fits_three_gsm7_segments(svc, fake_twilio, clock):
    clock.now = SATURDAY_2PM  # the longer, closed variant
    await svc.sms("Hello")
    [sent] = await fake_twilio.wait_for_messages(1)
    assert "Staff are back Monday at 9:00 AM" in sent.body
    assert is_gsm7(sent.body)
    assert sms_segments(sent.body) <= 3


async def test_no_reply_ever_says_text_911(svc, fake_twilio):
    for body in ("Hello", "HELP", "he has a gun", "1"):
        await svc.sms(body, from_=OTHER if body == "HELP" else CONTACT_NUMBER)
    await fake_twilio.wait_for_messages(4)
    for sent in fake_twilio.sent:
        assert not re.search(r"text(ing)?\s+(to\s+)?911", sent.body, re.IGNORECASE)


async def test_first_message_in_spanish_is_answered_in_spanish(svc, fake_twilio):
    await svc.sms("Hola, necesito información por favor")
    [sent] = await fake_twilio.wait_for_messages(1)
    assert sent.body.startswith("Gracias por escribirnos. " + ES["safety"])
    assert ES["intake_question"] in sent.body
    [contact] = await svc.all(Contact)
    assert contact.language == "es"


async def test_es_keyword_switches_replies_to_spanish(svc, fake_twilio):
    await svc.sms("Hello")
    await svc.sms("ES")
    sent = await fake_twilio.wait_for_messages(2)
    assert sent[1].body == ES["language_set"]
    await svc.sms("EN")
    sent = await fake_twilio.wait_for_messages(3)
    assert sent[2].body == EN["language_set"]


# --- during hours, after hours ---------------------------------------------------------------


async def test_during_hours_later_messages_get_no_automatic_reply(svc, fake_twilio):
    await svc.sms("Hello")
    await fake_twilio.wait_for_messages(1)
    await svc.sms("I have a question about a job offer")
    await svc.sms("It seemed strange")
    await svc.assert_sent(fake_twilio, 1)
    [_conversation] = await svc.all(Conversation)
    assert await count(svc, Message) == 4  # three in, one automatic reply


async def test_after_hours_notice_once_per_closed_period(svc, fake_twilio, clock):
    clock.now = SATURDAY_2PM
    await svc.sms("Hello")  # first reply says when staff are back: counts as the notice
    await svc.sms("3")  # intake answer: the safe-to-text question, not a notice
    await svc.sms("are you there?")
    await svc.sms("hello??")
    sent = await fake_twilio.wait_for_messages(2)
    await svc.assert_sent(fake_twilio, 2)
    assert sent[1].body == EN["safe_question"]  # not a second after-hours notice

    # Monday: open, then closed again Monday night: a new closed period, one new notice.
    clock.now = MONDAY_10AM
    await svc.sms("anyone?")
    await svc.assert_sent(fake_twilio, 2)
    clock.now = MONDAY_10AM + timedelta(hours=9)  # 19:00 Chicago
    await svc.sms("still waiting")
    await svc.sms("please")
    sent = await fake_twilio.wait_for_messages(3)
    await svc.assert_sent(fake_twilio, 3)
    assert sent[2].body == EN["after_hours"].format(next_opening="tomorrow at 9:00 AM")


async def test_intake_answer_then_safe_to_text_question(svc, fake_twilio):
    await svc.sms("Hello")
    await svc.sms("2")
    sent = await fake_twilio.wait_for_messages(2)
    assert sent[1].body == EN["safe_question"]
    await svc.sms("NOT SAFE")
    sent = await fake_twilio.wait_for_messages(3)
    assert sent[2].body == EN["safe_no"]
    [conversation] = await svc.all(Conversation)
    assert conversation.intake_category == "connect_services"
    assert conversation.safe_to_text is False
    assert conversation.intake_state == IntakeState.DONE
    await svc.sms("3")  # no longer an intake answer: just a message
    await svc.assert_sent(fake_twilio, 3)


async def test_safe_answer_is_acknowledged(svc, fake_twilio):
    await svc.sms("Hello")
    await svc.sms("4")
    await svc.sms("safe")
    sent = await fake_twilio.wait_for_messages(3)
    assert sent[2].body == EN["safe_yes"]
    [conversation] = await svc.all(Conversation)
    assert conversation.safe_to_text is True


# --- emergencies -----------------------------------------------------------------------------


async def test_emergency_phrase_sends_emergency_text_and_opens_escalation(svc, fake_twilio):
    await svc.sms("Hello")
    await svc.sms("please help he has a gun")
    sent = await fake_twilio.wait_for_messages(2)
    assert sent[1].body == EN["emergency"].format(safety=SAFETY)
    [conversation] = await svc.all(Conversation)
    assert conversation.emergency is True and conversation.priority == 100
    [escalation] = await svc.all(Escalation)
    assert escalation.status == "open" and escalation.conversation_id == conversation.id
    # The first page is queued with the emergency; the re-page is due after repage_after.
    assert escalation.step == 1
    assert escalation.next_step_at == MONDAY_10AM + timedelta(seconds=300)


async def test_emergency_text_at_most_once_every_ten_minutes(svc, fake_twilio, clock):
    await svc.sms("I am in danger")
    await svc.sms("he will kill me")
    sent = await fake_twilio.wait_for_messages(1)
    await svc.assert_sent(fake_twilio, 1)
    assert sent[0].body == EN["emergency"].format(safety=SAFETY)
    assert len(await svc.all(Escalation)) == 1  # one open escalation per conversation
    clock.advance(minutes=10)
    await svc.sms("he has a knife")
    sent = await fake_twilio.wait_for_messages(2)
    assert sent[1].body == sent[0].body


async def test_intake_option_one_is_an_emergency(svc, fake_twilio):
    await svc.sms("Hello")
    await svc.sms("1")
    sent = await fake_twilio.wait_for_messages(3)
    assert sent[1].body == EN["emergency"].format(safety=SAFETY)
    assert sent[2].body == EN["safe_question"]
    [escalation] = await svc.all(Escalation)
    assert escalation.trigger == "intake"


async def test_emergency_after_hours_still_escalates(svc, fake_twilio, clock):
    clock.now = SATURDAY_2PM
    await svc.sms("estoy en peligro")
    [sent] = await fake_twilio.wait_for_messages(1)
    assert sent.body == ES["emergency"].format(safety=ES["safety"])
    assert len(await svc.all(Escalation)) == 1


# --- keywords ---------------------------------------------------------------------------------


async def test_stop_blocks_all_later_sends(svc, fake_twilio):
    await svc.sms("Hello")
    await fake_twilio.wait_for_messages(1)
    await svc.sms("Stop.")
    await svc.sms("HELP")
    await svc.sms("he has a gun")
    # Twilio confirms STOP itself on SMS; we send nothing at all from here on.
    await svc.assert_sent(fake_twilio, 1)
    [contact] = await svc.all(Contact)
    assert contact.opted_out is True
    # The messages still reach the queue, and the emergency still escalates.
    assert len(await svc.all(Escalation)) == 1
    inbound = [m for m in await svc.all(Message) if m.direction == "in"]
    assert len(inbound) == 4


async def test_stop_cancels_a_reply_not_yet_sent(svc, fake_twilio, clock):
    fake_twilio.fail_next(500)  # the first reply fails and waits for its retry
    await svc.sms("Hello")
    await wait_until(svc, lambda rows: rows[0].status == "pending" and rows[0].attempts == 1)
    await svc.sms("STOP")
    clock.advance(minutes=5)  # the retry would be due now
    svc.services.worker.wake()
    await svc.assert_sent(fake_twilio, 0)
    [row] = await svc.all(Outbox)
    assert row.status == "cancelled" and row.body_enc is None


async def test_start_after_stop_allows_replies_again(svc, fake_twilio):
    await svc.sms("STOP")
    await svc.sms("START")
    [contact] = await svc.all(Contact)
    assert contact.opted_out is False
    await svc.sms("Hello")
    [sent] = await fake_twilio.wait_for_messages(1)
    assert sent.body.startswith("Thank you for reaching out.")


async def test_yes_is_opt_in_only_when_opted_out(svc, fake_twilio):
    await svc.sms("STOP")
    await svc.sms("yes")
    [contact] = await svc.all(Contact)
    assert contact.opted_out is False


async def test_help_answers_and_still_queues(svc, fake_twilio):
    await svc.sms("help")
    [sent] = await fake_twilio.wait_for_messages(1)
    assert sent.body == EN["help"].format(safety=SAFETY)
    assert sms_segments(sent.body) <= 2
    [conversation] = await svc.all(Conversation)
    assert conversation.status == ConversationStatus.OPEN


async def test_exit_closes_silently(svc, fake_twilio):
    await svc.sms("Hello")
    await fake_twilio.wait_for_messages(1)
    await svc.sms("salir")
    await svc.assert_sent(fake_twilio, 1)
    [conversation] = await svc.all(Conversation)
    assert conversation.status == "closed" and conversation.outcome == "quick_exit"
    # Writing again opens a new conversation: a first contact again.
    await svc.sms("Hello again")
    sent = await fake_twilio.wait_for_messages(2)
    assert sent[1].body.startswith("Thank you for reaching out.")


async def test_delete_erases_content_and_address(svc, fake_twilio):
    await svc.sms("My name is Ana and I am at 12 Elm St")
    await svc.sms("BORRAR")
    sent = await fake_twilio.wait_for_messages(2)
    assert sent[1].body == EN["erase_confirm"]
    assert await count(svc, Message) == 0
    assert await count(svc, Contact) == 0
    [conversation] = await svc.all(Conversation)
    assert conversation.contact_id is None and conversation.outcome == "erased"
    for row in await svc.all(Outbox):
        assert row.address_enc is None and row.body_enc is None


# --- webhook edge: signatures, dedupe, bad input ------------------------------------------


async def test_duplicate_message_sid_replies_once(svc, fake_twilio):
    sid = svc.next_sid()
    assert (await svc.sms("Hello", sid=sid))[0] == 200
    assert (await svc.sms("Hello", sid=sid))[0] == 200
    await fake_twilio.wait_for_messages(1)
    await svc.assert_sent(fake_twilio, 1)
    assert await count(svc, ProviderEvent) == 1
    assert await count(svc, Message) == 2


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl", "AAAA"])
async def test_bad_or_missing_signature_is_403_and_writes_nothing(svc, fake_twilio, signature):
    status, _ = await svc.sms("Hello", signature=signature)
    assert status == 403
    assert await count(svc, ProviderEvent) == 0
    assert await count(svc, Contact) == 0
    await svc.assert_sent(fake_twilio, 0)


async def test_signature_is_checked_against_the_public_url(svc, fake_twilio):
    form = load_twilio_form("inbound_sms", MessageSid=svc.next_sid())
    # Signed for the address the test client really used, not the configured public URL.
    wrong = twilio_signature(AUTH_TOKEN, str(svc.client.make_url("/webhooks/twilio/sms")), form)
    status, _ = await svc.post_form("/webhooks/twilio/sms", form, signature=wrong)
    assert status == 403
    assert await count(svc, ProviderEvent) == 0


async def test_signature_over_the_url_with_its_default_port_is_taken_too(svc, fake_twilio):
    # Twilio sometimes signs https://host:443/...: the exact URL is tried first, then the
    # library's validate() with and without the port.
    form = load_twilio_form("inbound_sms", MessageSid=svc.next_sid())
    with_port = twilio_signature(
        AUTH_TOKEN, "https://triage.example.org:443/webhooks/twilio/sms", form
    )
    status, _ = await svc.post_form("/webhooks/twilio/sms", form, signature=with_port)
    assert status == 200
    assert await count(svc, ProviderEvent) == 1


async def test_signed_body_changed_in_transit_is_403(svc):
    form = load_twilio_form("inbound_sms", MessageSid=svc.next_sid())
    signature = twilio_signature(
        AUTH_TOKEN, "https://triage.example.org/webhooks/twilio/sms", form
    )
    form["Body"] = "changed"
    status, _ = await svc.post_form("/webhooks/twilio/sms", form, signature=signature)
    assert status == 403


async def test_missing_from_is_400_and_writes_nothing(svc):
    form = load_twilio_form("inbound_sms", MessageSid=svc.next_sid())
    del form["From"]
    status, _ = await svc.post_form("/webhooks/twilio/sms", form)
    assert status == 400
    assert await count(svc, ProviderEvent) == 0


async def test_non_utf8_body_is_400(svc):
    response = await svc.client.post(
        "/webhooks/twilio/sms",
        data=b"Body=%FF&From=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": "x"},
    )
    assert response.status == 400
    assert await count(svc, ProviderEvent) == 0


async def test_oversized_body_is_413(svc):
    response = await svc.client.post(
        "/webhooks/twilio/sms",
        data=b"Body=" + b"a" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": "x"},
    )
    assert response.status == 413
    assert await count(svc, ProviderEvent) == 0


async def test_wrong_content_type_is_415(svc):
    response = await svc.client.post("/webhooks/twilio/sms", json={"Body": "x"})
    assert response.status == 415


@pytest.mark.parametrize(
    "body",
    ["I'm ok 😊", "مرحبا، أحتاج مساعدة", "nul\x00byte", "x" * 10_000, "<script>alert(1)</script>"],
)
async def test_awkward_text_is_stored_exactly(svc, body):
    status, _ = await svc.sms(body)
    assert status == 200
    [inbound] = [m for m in await svc.all(Message) if m.direction == "in"]
    assert svc.decrypt(inbound.body_enc) == body


async def test_mms_counts_media(svc):
    await svc.sms("", fixture="inbound_mms")
    [inbound] = [m for m in await svc.all(Message) if m.direction == "in"]
    assert inbound.media_count == 1


# --- delivery status -----------------------------------------------------------------------


async def test_status_callback_marks_delivered(svc, fake_twilio):
    await svc.sms("Hello")
    [sent] = await fake_twilio.wait_for_messages(1)
    await wait_until_sent(svc)
    form = load_twilio_form("status_delivered", MessageSid=sent.sid, SmsSid=sent.sid)
    status, _ = await svc.post_form("/webhooks/twilio/status", form)
    assert status == 200
    [row] = await svc.all(Outbox)
    assert row.status == "delivered" and row.provider_id == sent.sid


async def test_unsigned_status_callback_is_403(svc):
    status, _ = await svc.post_form(
        "/webhooks/twilio/status", load_twilio_form("status_delivered"), signature="nope"
    )
    assert status == 403


async def test_status_21610_marks_contact_opted_out(svc, fake_twilio):
    await svc.sms("Hello")
    [sent] = await fake_twilio.wait_for_messages(1)
    await wait_until_sent(svc)
    form = load_twilio_form("status_undelivered_21610", MessageSid=sent.sid, SmsSid=sent.sid)
    assert (await svc.post_form("/webhooks/twilio/status", form))[0] == 200
    [contact] = await svc.all(Contact)
    assert contact.opted_out is True
    [row] = await svc.all(Outbox)
    assert row.status == "failed" and row.last_error == "undelivered:21610"


async def test_send_error_21610_marks_contact_opted_out(svc, fake_twilio):
    fake_twilio.opt_out(CONTACT_NUMBER)
    await svc.sms("Hello")
    await wait_until(svc, lambda rows: rows[0].status == "failed")
    [contact] = await svc.all(Contact)
    assert contact.opted_out is True
    await svc.sms("Hello again")
    await svc.assert_sent(fake_twilio, 0)


async def wait_until_sent(svc: Service) -> None:
    await wait_until(svc, lambda rows: all(r.status == "sent" for r in rows))


async def wait_until(svc: Service, condition, seconds: float = 5.0) -> list[Outbox]:
    """The outbox's rows, once there are some and `condition(rows)` holds."""

    async def rows() -> list[Outbox] | None:
        found = await svc.all(Outbox)
        return found if found and condition(found) else None

    return await eventually(rows, "the outbox rows to get there", seconds)


async def test_reply_goes_from_the_number_the_contact_wrote_to(svc, fake_twilio):
    second_number = "+13145550199"  # the coalition's other number
    await svc.sms("Hello", To=second_number)
    await svc.sms("Hello", from_=OTHER)  # to the main number
    await svc.outbox_idle()
    senders = {m.to: m.from_ for m in fake_twilio.sent}
    assert senders == {CONTACT_NUMBER: second_number, OTHER: OUR_NUMBER}


async def test_a_messaging_service_picks_the_sender_whatever_number_was_written_to(
    start_service, fake_twilio
):
    svc = await start_service(fake_twilio, sms={"from_number": "",
                                                "messaging_service_sid": MESSAGING_SERVICE_SID})
    await svc.sms("Hello", To="+13145550199")
    await svc.outbox_idle()
    [sent] = fake_twilio.sent
    assert sent.from_ is None and sent.messaging_service_sid == MESSAGING_SERVICE_SID

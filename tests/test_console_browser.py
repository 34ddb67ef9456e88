"""The console in a real browser (Chromium, through Playwright), the two paths people take:

- at a desk (1280x800): an admin signs in with a TOTP code, a conversation that arrives by a
  signed Twilio webhook appears in the open queue without a reload, and they open it, claim
  it, reply (the fake Twilio gets exactly that text) and close it;
- on a phone (360x740): the on-call person follows the link in the page SMS, signs in, lands
  on the emergency and acknowledges it with one tap; the ladder then sends no further page.

Along the way: no page scrolls sideways at 360 px, and no page logs a console error (a CSP
violation, a missing script or stylesheet). Screenshots go to test-artifacts/.

The clock is the test clock (Monday 2026-11-30 10:00 Chicago, inside hours); TOTP codes are
computed for it, as the service checks them against it.
"""

from __future__ import annotations

import re

from playwright.async_api import expect

from bot.storage.models import Conversation, Escalation
from schedules.escalations import sweep_job
from tests.browser import (  # noqa: F401 - the two fixtures
    DESKTOP,
    PHONE,
    Chromium,
    LiveService,
    Taps,
    add_paged_member,
    assert_console_cookies,
    assert_fits,
    chromium_fixture,
    sign_in,
    start_live_service_fixture,
)
from tests.console_helpers import PASSWORD, totp_code
from tests.fixtures import CONTACT_NUMBER
from tests.test_escalation import ALICE, CAROL, ONCALL, PAGE, POLICY, Phones

FIRST_MESSAGE = "Hello. My cousin was offered a job abroad that sounds wrong. Who can we talk to?"
REPLY = ("Hi, this is Dana at the coalition. We can go through the offer with your cousin. "
         "Is now a good time?")


async def start(start_live_service, fake_twilio, **overrides) -> LiveService:
    """The service with the test rota (alice on call, carol the backup: each test adds the
    accounts it needs) and the ladder swept by hand."""
    return await start_live_service(fake_twilio, oncall=ONCALL, escalation=POLICY, **overrides)


async def test_desk_sign_in_with_totp_then_a_new_conversation_arrives_live_and_is_answered(
    start_live_service, chromium: Chromium, fake_twilio
):
    svc = await start(start_live_service, fake_twilio)
    await add_paged_member(svc, "alice", ALICE)
    dana = await add_paged_member(svc, "dana", CAROL, role="admin", two_factor=True)
    assert dana is not None
    page = await chromium.page(DESKTOP)

    await page.goto(svc.origin + "/console")
    await expect(page).to_have_url(re.compile(r"/console/login\?next=/console$"))
    await sign_in(page, "dana", PASSWORD, code=lambda: totp_code(svc, dana))
    await expect(page).to_have_url(svc.origin + "/console")
    await assert_console_cookies(page)
    rows = page.locator("#queue-rows tbody tr")
    await expect(page.locator("#queue-rows")).to_contain_text("Nobody is waiting here.")
    await chromium.shot(page, "1-queue-empty")

    # The page stays the same document while the conversation arrives: a reload or a
    # navigation would lose this mark.
    await page.evaluate("window.stillThisPage = true")
    status, _ = await svc.sms(FIRST_MESSAGE)
    assert status == 200
    [conversation] = await svc.all(Conversation)
    number = conversation.id
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(f"#{number}")
    await expect(rows.first).to_contain_text("Not claimed")
    await expect(page.locator('[data-count="waiting"]')).to_have_text("1")
    await expect(page.locator('[data-count="open"]')).to_have_text("1")
    await expect(page).to_have_title(re.compile(r"^\(1\) Queue"))
    assert await page.evaluate("window.stillThisPage === true")
    [first_reply] = await fake_twilio.wait_for_messages(1)
    assert first_reply.to == CONTACT_NUMBER  # the bot's own first reply
    await chromium.shot(page, "2-queue-new-conversation")

    await page.get_by_role("link", name=f"#{number}", exact=True).click()
    await expect(page).to_have_url(f"{svc.origin}/console/conversations/{number}")
    await expect(page.get_by_role("heading", name=f"Conversation #{number}")).to_be_visible()
    await expect(page.locator(".history")).to_contain_text(FIRST_MESSAGE)
    await page.get_by_role("button", name="Claim it").click()
    await expect(page.locator(".who-has-it")).to_contain_text("You have claimed it.")
    await chromium.shot(page, "3-conversation")

    await page.get_by_label("Reply by SMS to the contact").fill(REPLY)
    await expect(page.locator("#reply-segments")).to_have_text(
        f"{len(REPLY)} characters, 1 SMS")
    await page.get_by_role("button", name="Send reply").click()
    sent = await fake_twilio.wait_for_messages(2)
    assert (sent[1].to, sent[1].body) == (CONTACT_NUMBER, REPLY)
    await svc.assert_sent(fake_twilio, 2)
    await expect(page.locator(".history .msg.out").last).to_contain_text(REPLY)
    await chromium.shot(page, "4-after-reply")

    await page.get_by_label("How did it end?").select_option("referred")
    await page.get_by_role("button", name="Close it").click()
    await expect(page.locator(".warnings")).to_contain_text("Closed")
    await expect(page.locator(".warnings")).to_contain_text("Referred")
    [conversation] = await svc.all(Conversation)
    assert (conversation.status, conversation.outcome) == ("closed", "referred")
    await chromium.shot(page, "5-closed")
    chromium.assert_no_console_errors()


async def test_phone_on_call_follows_the_page_link_and_acknowledges_in_one_tap(
    start_live_service, chromium: Chromium, fake_twilio
):
    # Two-factor for everyone, so the page's link has to survive both sign-in steps.
    svc = await start(start_live_service, fake_twilio, console={"require_2fa": "all"})
    alice = await add_paged_member(svc, "alice", ALICE, two_factor=True)
    await add_paged_member(svc, "carol", CAROL)  # the backup: paged at the second step
    assert alice is not None
    phones = Phones(fake_twilio, [svc])

    status, _ = await svc.sms("he has a gun")
    assert status == 200
    sent = await phones.expect(2)
    [page_sms] = [m.body for m in sent if m.to == ALICE]
    match = PAGE.fullmatch(page_sms)
    assert match, page_sms
    number = int(match.group(1))
    link = page_sms.rsplit(" ", 1)[1]

    page = await chromium.page(PHONE, phone=True)
    await page.goto(svc.local(link))
    await expect(page).to_have_url(re.compile(
        rf"/console/login\?next=/console/escalations/{number}$"))
    await assert_fits(page, PHONE["width"])
    await chromium.shot(page, "1-sign-in")
    taps = Taps()
    await sign_in(page, "alice", PASSWORD, code=lambda: totp_code(svc, alice), tap=taps.tap)
    await expect(page).to_have_url(f"{svc.origin}/console/escalations/{number}")
    await assert_console_cookies(page)
    signing_in = taps.count

    # At a glance: what it is, and the one button, without scrolling.
    await expect(page.get_by_role("heading", name=f"EMERGENCY #{number}")).to_be_visible()
    acknowledge = page.get_by_role("button", name="Acknowledge")
    await expect(acknowledge).to_be_in_viewport()
    await assert_fits(page, PHONE["width"])
    await chromium.shot(page, "2-escalation")
    await taps.tap(acknowledge)
    await expect(page.locator(".state")).to_contain_text(
        "Acknowledged by alice at 10:00. Paging has stopped.")
    assert taps.count - signing_in == 1  # the issue allows two taps after sign-in
    await expect(acknowledge).to_have_count(0)
    await assert_fits(page, PHONE["width"])
    await chromium.shot(page, "3-acknowledged")
    [row] = await svc.all(Escalation)
    assert (row.id, row.status) == (number, "acked")

    # Past the time the ladder would have paged alice again, with the backup: nothing.
    await svc.outbox_idle()
    await phones.nothing_more()
    svc.clock.advance(seconds=POLICY["repage_after_seconds"] + 1)
    assert await sweep_job(svc.services) == []
    await svc.outbox_idle()
    await phones.nothing_more()

    # The rest of what she may open on the phone fits it too.
    await page.get_by_role("link", name=f"Open the conversation #{row.conversation_id}").click()
    await expect(page.locator(".history")).to_contain_text("he has a gun")
    await assert_fits(page, PHONE["width"])
    await chromium.shot(page, "4-conversation")
    await page.get_by_role("link", name="Queue", exact=True).first.click()
    await expect(page.locator("#queue-rows tbody tr")).to_have_count(1)
    await assert_fits(page, PHONE["width"])
    await chromium.shot(page, "5-queue")
    chromium.assert_no_console_errors()


async def test_a_busy_queue_reads_at_a_desk_and_fits_a_phone(
    start_live_service, chromium: Chromium, fake_twilio, fake_telegram
):
    """Every kind of row at once: an emergency (first, whatever its age), a contact quiet for
    three days who said NOT SAFE and wrote a long unbroken link, one in Spanish, one on
    Telegram. At a desk it is one table; on a phone, cards that do not scroll sideways, and
    the link in the contact's text is not a live link."""
    svc = await start(start_live_service, fake_twilio, telegram_api=fake_telegram)
    await add_paged_member(svc, "alice", ALICE)
    long_text = "Is this real? https://example.com/" + "a" * 120 + " " + "Supercalifragilistic" * 6
    for text in (long_text, "2", "NOT SAFE"):
        assert (await svc.sms(text))[0] == 200
    svc.clock.advance(hours=73)  # Thursday 11:00: the first contact has gone quiet
    assert (await svc.sms("Hola, quiero saber si una oferta de trabajo es real",
                          from_=CONTACT_NUMBER[:-1] + "4"))[0] == 200
    assert (await svc.telegram("Hi, I would like to volunteer"))[0] == 200
    assert (await svc.sms("he has a gun", from_=CONTACT_NUMBER[:-1] + "5"))[0] == 200
    await svc.outbox_idle()
    conversations = await svc.all(Conversation)
    assert len(conversations) == 4
    quiet, spanish, _, emergency = (c.id for c in conversations)

    page = await chromium.page(DESKTOP)
    await page.goto(svc.origin + "/console")
    await sign_in(page, "alice", PASSWORD, code=None)
    rows = page.locator("#queue-rows tbody tr")
    await expect(rows).to_have_count(4)
    await expect(rows.first).to_contain_text(f"#{emergency}")
    await expect(rows.first).to_contain_text("Emergency")
    quiet_row = rows.filter(has=page.get_by_role("link", name=f"#{quiet}", exact=True))
    await expect(quiet_row).to_contain_text("Not safe to text")
    await expect(quiet_row).to_contain_text("Quiet 3 days")
    spanish_row = rows.filter(has=page.get_by_role("link", name=f"#{spanish}", exact=True))
    await expect(spanish_row).to_contain_text("Spanish")
    await chromium.shot(page, "1-desk-queue")

    phone = await chromium.page(PHONE, phone=True)
    await phone.goto(svc.origin + "/console")
    await sign_in(phone, "alice", PASSWORD, code=None)
    await expect(phone.locator("#queue-rows tbody tr")).to_have_count(4)
    await assert_fits(phone, PHONE["width"])
    await chromium.shot(phone, "2-phone-queue")
    await phone.get_by_role("link", name=f"#{quiet}", exact=True).tap()
    await expect(phone.locator(".history")).to_contain_text("Supercalifragilistic")
    await expect(phone.locator(".history a")).to_have_count(0)
    await assert_fits(phone, PHONE["width"])
    await chromium.shot(phone, "3-phone-conversation")
    chromium.assert_no_console_errors()

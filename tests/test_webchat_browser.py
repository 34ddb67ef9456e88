"""The web chat in a real browser (Chromium, through Playwright), at a phone's size (360x740),
as someone on a watched phone would use it:

- they follow the coalition site's link to /chat and write "hello": the first reply, with
  the safety text, appears;
- a staff member answers from the console (a second browser, at a desk): the answer appears
  on the chat page, which is still the same document;
- they press Quick exit: the browser is on the exit site, Back never shows the chat, and the
  browser holds no cookie or storage for the chat's origin; on the server the conversation
  is closed and the console can send nothing more to it;
- in another chat, an emergency phrase pages the on-call phone at the fake Twilio, and Esc
  leaves at once.

The coalition's site and the exit site are fictional (example.org, example.com) and are
answered inside the browser by Playwright's routing, and the browser resolves no name but
loopback's: nothing leaves the machine. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import Page, Route, expect

from bot.storage.models import Conversation, Escalation, Message, Outbox, WebSession
from tests.browser import (  # noqa: F401 - the two fixtures
    DESKTOP,
    PHONE,
    Chromium,
    LiveService,
    add_paged_member,
    assert_fits,
    chromium_fixture,
    sign_in,
    start_live_service_fixture,
)
from tests.conftest import PUBLIC_URL
from tests.console_helpers import PASSWORD, add_staff
from tests.test_escalation import (
    ALICE,
    EMERGENCY_REPLY,
    FIRST_CONTACT_REPLY,
    ONCALL,
    POLICY,
    Phones,
)

SITE = "https://www.example.org/"  # the coalition's website, which links to the chat
EXIT_URL = "https://weather.example.com/today"
STAFF_REPLY = "Hi, this is Dana at the coalition. I am glad you wrote. Are you somewhere safe?"
EMERGENCY = "he has a gun and I can't leave"
NOTHING_KEPT = {"cookie": "", "local": 0, "session": 0, "indexed": [], "workers": 0}
# What the page itself can read of what the browser keeps for its origin.
KEPT = """async () => ({
  cookie: document.cookie,
  local: localStorage.length,
  session: sessionStorage.length,
  indexed: (await indexedDB.databases()).map((db) => db.name),
  workers: (await navigator.serviceWorker.getRegistrations()).length,
})"""


async def start(start_live_service, fake_twilio) -> LiveService:
    return await start_live_service(fake_twilio, oncall=ONCALL, escalation=POLICY,
                                    webchat={"exit_url": EXIT_URL})


async def phone_at_the_site(chromium: Chromium, svc: LiveService) -> Page:
    """A phone on the coalition's site, which the browser serves itself (see the top)."""
    page = await chromium.page(PHONE, phone=True)

    async def site(route: Route) -> None:
        await route.fulfill(content_type="text/html", body=(
            "<!doctype html><title>Coalition</title>"
            f'<p><a href="{svc.origin}/chat" referrerpolicy="no-referrer">Chat with us</a></p>'))

    async def weather(route: Route) -> None:
        await route.fulfill(content_type="text/html",
                            body="<!doctype html><title>Weather</title><h1>Weather today</h1>")

    await page.context.route(SITE, site)
    await page.context.route(EXIT_URL, weather)
    await page.goto(SITE)
    await page.get_by_role("link", name="Chat with us").tap()
    await expect(page).to_have_url(svc.origin + "/chat")
    return page


async def write(page: Page, text: str) -> None:
    await page.get_by_label("Message").fill(text)
    await page.get_by_role("button", name="Send").tap()
    await expect(page.locator("#log .msg.mine .text").last).to_have_text(text)


def replies(page: Page) -> Any:
    return page.locator("#log .msg.theirs")


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Wait for something the server does on its own time (a beacon's end of a chat)."""
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def test_phone_hello_gets_the_safety_reply_staff_answer_live_and_quick_exit_leaves_nothing(
    start_live_service, chromium: Chromium, fake_twilio
):
    svc = await start(start_live_service, fake_twilio)
    await add_staff(svc, "dana")
    page = await phone_at_the_site(chromium, svc)
    await expect(page.get_by_role("heading", name="In immediate danger?")).to_be_visible()
    await expect(page.get_by_role("button", name="Quick exit")).to_be_in_viewport()
    await assert_fits(page, PHONE["width"])
    await chromium.shot(page, "1-opened", full_page=False)

    await write(page, "hello")
    await expect(replies(page)).to_have_count(1)
    await expect(replies(page).first.locator(".text")).to_have_text(FIRST_CONTACT_REPLY)
    await expect(replies(page).first.locator(".who")).to_have_text("Automatic reply")
    assert await page.evaluate(KEPT) == NOTHING_KEPT
    await assert_fits(page, PHONE["width"])
    await chromium.shot(page, "2-safety-reply", full_page=False)

    # Dana answers from the console at her desk, in a browser of her own. The chat page
    # stays the same document: a reload would have lost this mark, and the chat.
    await page.evaluate("window.stillThisPage = true")
    [conversation] = await svc.all(Conversation)
    number = conversation.id
    staff = await chromium.page(DESKTOP)
    await staff.goto(f"{svc.origin}/console/conversations/{number}")
    await sign_in(staff, "dana", PASSWORD, code=None)
    await expect(staff).to_have_url(f"{svc.origin}/console/conversations/{number}")
    await expect(staff.locator(".history")).to_contain_text("hello")
    await staff.get_by_label("Reply on Web chat to the contact").fill(STAFF_REPLY)
    await staff.get_by_role("button", name="Send reply").click()
    await expect(replies(page)).to_have_count(2)
    await expect(replies(page).last.locator(".text")).to_have_text(STAFF_REPLY)
    await expect(replies(page).last.locator(".who")).to_have_text("Coalition staff")
    await expect(page.get_by_role("log")).to_contain_text(STAFF_REPLY)  # announced
    assert await page.evaluate("window.stillThisPage === true")
    await assert_fits(page, PHONE["width"])
    await chromium.shot(page, "3-staff-reply", full_page=False)

    # Quick exit: the exit site, and Back never shows the chat again.
    await page.get_by_role("button", name="Quick exit").tap()
    await expect(page).to_have_url(EXIT_URL)
    await expect(page.get_by_role("heading", name="Weather today")).to_be_visible()
    # The tab's whole history, back to where it began and forward again: no chat in it.
    await page.go_back()
    await expect(page).to_have_url(SITE)
    await page.go_back()
    await expect(page).to_have_url("about:blank")
    await page.go_forward()
    await expect(page).to_have_url(SITE)
    await page.go_forward()
    await expect(page).to_have_url(EXIT_URL)
    assert await page.evaluate("history.length") == 3

    # The browser keeps nothing for the chat's origin: no cookie anywhere in this browser,
    # no storage (read by a page of that origin that runs no script of ours).
    context = page.context
    assert await context.cookies() == []
    kept = await context.storage_state(indexed_db=True)
    assert kept == {"cookies": [], "origins": []}, kept
    check = await context.new_page()
    await check.goto(svc.origin + "/chat/static/icon.svg")
    assert await check.evaluate(KEPT) == NOTHING_KEPT

    # On the server: the chat ended by quick exit, the conversation closed silently.
    async def ended() -> bool:
        return [s.end_reason for s in await svc.all(WebSession)] == ["exit"]

    await until(ended)
    [conversation] = await svc.all(Conversation)
    assert (conversation.status, conversation.outcome) == ("closed", "quick_exit")

    # The console can send nothing more: closed, and once reopened, the contact has left.
    await staff.reload()
    await expect(staff.locator(".warnings")).to_contain_text("Closed")
    await expect(staff.locator("#reply-blocked")).to_have_text(
        "Replying is blocked. It is closed: reopen it first.")
    await expect(staff.get_by_role("button", name="Send reply")).to_be_disabled()
    await staff.get_by_role("button", name="Reopen it").click()
    await expect(staff.locator(".warnings")).to_contain_text("The contact has left the chat.")
    await expect(staff.locator("#reply-blocked")).to_have_text(
        "Replying is blocked. The contact has left the chat.")
    await chromium.shot(staff, "4-console-contact-left")
    # The form posted anyway, as a browser could with its button forced on: refused.
    status, text = await staff.evaluate("""async (text) => {
      const form = document.querySelector("form.reply");
      const body = new URLSearchParams(new FormData(form));
      body.set("text", text);
      const r = await fetch(form.action, { method: "POST", body: body });
      return [r.status, await r.text()];
    }""", "Are you still there?")
    assert status == 409 and "The contact has left the chat." in text
    [refused] = chromium.errors  # the browser reports that 409; it is the only error
    assert "409 (Conflict)" in refused and refused.endswith(f"/conversations/{number}/reply")
    chromium.errors.clear()
    await svc.outbox_idle()
    outbound = [svc.decrypt(m.body_enc) for m in await svc.all(Message) if m.direction == "out"]
    assert outbound == [FIRST_CONTACT_REPLY, STAFF_REPLY]
    # Both replies the page showed were marked delivered by it; nothing else was queued.
    assert [row.status for row in await svc.all(Outbox)] == ["delivered", "delivered"]
    assert fake_twilio.sent == []
    chromium.assert_no_console_errors()


async def test_phone_an_emergency_in_the_chat_pages_on_call_and_esc_leaves(
    start_live_service, chromium: Chromium, fake_twilio, started
):
    svc = await start(start_live_service, fake_twilio)
    await add_paged_member(svc, "alice", ALICE)
    phones = Phones(fake_twilio, started)
    page = await phone_at_the_site(chromium, svc)

    await write(page, EMERGENCY)
    await expect(replies(page).first.locator(".text")).to_have_text(EMERGENCY_REPLY)
    [escalation] = await svc.all(Escalation)
    n = escalation.id
    [sms] = await phones.expect(1)
    assert (sms.to, sms.body) == (
        ALICE, f"EMERGENCY #{n} (web) 10:00. Reply ACK {n}. {PUBLIC_URL}/console/escalations/{n}")
    await svc.outbox_idle()
    await phones.nothing_more()
    await expect(replies(page)).to_have_count(1)
    await assert_fits(page, PHONE["width"])
    await chromium.shot(page, "1-emergency", full_page=False)

    await page.keyboard.press("Escape")
    await expect(page).to_have_url(EXIT_URL)
    assert not re.search("chat", await page.title(), re.IGNORECASE)
    chromium.assert_no_console_errors()

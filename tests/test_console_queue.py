"""The queue at /console and its live stream, over real HTTP."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner
from sqlalchemy.orm import Session

from bot.app import create_app
from bot.domain import PRIORITY_EMERGENCY
from bot.storage.models import Contact, Conversation
from bot.storage.views import QUEUE_LIMIT
from tests.conftest import Service
from tests.console_helpers import Browser, add_staff


class ServedAsRun(TestServer):
    """The app served as `python -m bot run` serves it. aiohttp's test server cancels a
    handler whose client went away; the real one lets it run on, to its next write."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return await super()._make_runner(**{**kwargs, "handler_cancellation": False})


@pytest.fixture
async def svc(start_service, fake_twilio) -> Service:
    return await start_service(fake_twilio)


async def test_a_closed_live_stream_ends_quietly_and_lets_go_of_its_listener(
    aiohttp_client, env, clock, fake_twilio, captured_logs
):
    svc = Service(await aiohttp_client(ServedAsRun(create_app(env.settings(fake_twilio),
                                                              clock))), clock)
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.sign_in("erin")
    notifier = svc.services.notifier
    async with svc.client.get("/console/events", headers=browser._headers()) as stream:
        assert (await stream.content.readline()).startswith(b"retry:")
        assert notifier.streams == 1
    # The tab is closed. The server notices at its next write: a change to announce.
    async with asyncio.timeout(5):
        while notifier.streams:
            notifier.conversation(1)
            await asyncio.sleep(0.01)
    problems = [line for line in captured_logs.seen
                if " ERROR " in line or " WARNING " in line or "Traceback" in line]
    assert problems == []


# --- pages of a tab ---------------------------------------------------------------------------

NUMBERS = re.compile(r'data-numbers="([^"]*)"')
NEXT = re.compile(r'href="(/console\?tab=[a-z]+&amp;after=\d+)" rel="next"')


async def add_conversations(svc: Service, count: int, closed: bool = False) -> list[Conversation]:
    """`count` conversations straight in the database, each from its own contact, with the
    queue's sort keys spread out and tied in places."""
    cipher = svc.services.cipher
    now = svc.clock()

    def unit(session: Session) -> list[Conversation]:
        made = []
        for i in range(count):
            number = f"+1314555{i // 100 + 2:02d}{i % 100:02d}"  # not the test contact's
            contact = Contact(channel="sms", address_hash=cipher.address_hash("sms", number),
                              address_enc=cipher.encrypt(number), language="en",
                              opted_out=False, created_at=now)
            session.add(contact)
            session.flush()
            opened = now - timedelta(hours=1 + i % 7)
            conv = Conversation(
                contact_id=contact.id, channel="sms", status="closed" if closed else "open",
                intake_state="done", emergency=i % 17 == 0,
                priority=PRIORITY_EMERGENCY if i % 17 == 0 else (50 if i % 5 == 0 else 0),
                opened_at=opened, last_inbound_at=opened,
                awaiting_since=None if i % 3 == 0 else opened + timedelta(minutes=i % 4),
                closed_at=now - timedelta(minutes=i % 9) if closed else None,
                outcome="referred" if closed else None)
            session.add(conv)
            made.append(conv)
        session.flush()
        return made

    return await svc.services.writer.run(unit)


async def walk(browser: Browser, path: str) -> list[list[int]]:
    """Every page of a tab, following each page's own "Next" link."""
    pages = []
    while True:
        page = await browser.get(path)
        assert page.status == 200, page.text[:300]
        pages.append([int(n.rstrip("!")) for n in NUMBERS.search(page.text).group(1).split()])
        found = NEXT.search(page.text)
        if found is None:
            return pages
        assert 'First page' in (await browser.get(found.group(1).replace("&amp;", "&"))).text
        path = found.group(1).replace("&amp;", "&")


async def test_the_waiting_tab_pages_through_everyone_in_the_order_staff_work_it(svc):
    made = await add_conversations(svc, QUEUE_LIMIT + 30)
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.sign_in("erin")
    pages = await walk(browser, "/console?tab=waiting")
    expected = sorted(made, key=lambda c: (not c.emergency, -c.priority,
                                           c.awaiting_since or c.opened_at, c.id))
    assert [len(p) for p in pages] == [QUEUE_LIMIT, 30]
    assert [n for p in pages for n in p] == [c.id for c in expected]


async def test_the_closed_tab_pages_back_from_the_latest_closed(svc):
    made = await add_conversations(svc, QUEUE_LIMIT * 2 + 5, closed=True)
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.sign_in("erin")
    pages = await walk(browser, "/console?tab=closed")
    expected = sorted(made, key=lambda c: (c.closed_at, c.id), reverse=True)
    assert [len(p) for p in pages] == [QUEUE_LIMIT, QUEUE_LIMIT, 5]
    assert [n for p in pages for n in p] == [c.id for c in expected]


async def test_a_page_link_that_is_not_a_number_is_refused(svc):
    await add_staff(svc, "erin")
    browser = Browser(svc)
    await browser.sign_in("erin")
    for after in ("abc", "-1", "1e3", "9" * 19):
        page = await browser.get(f"/console?tab=closed&after={after}")
        assert page.status == 400 and "digits only" in page.text

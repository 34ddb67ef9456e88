"""The web chat at /chat: the same conversation rules as every channel, and a page that
leaves as little behind as a web page can."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import AppRunner

from bot.app import create_app
from bot.storage.models import Conversation, Escalation, Message, Outbox, WebSession
from tests.conftest import Service, example_config
from tests.console_helpers import Browser, add_staff
from tests.test_escalation import ALICE, ONCALL, POLICY, register_staff
from tests.test_never_silent import FAST_FALLBACK, database_down

EN = example_config()["replies"]["en"]
SAFETY = EN["safety"]
FIRST_REPLY_START = "Thank you for reaching out."


class Chat:
    """One browser tab's chat, spoken to as its script does."""

    def __init__(self, svc: Service, lang: str = "en") -> None:
        self.svc = svc
        self.lang = lang
        self.token: str | None = None
        self.after = 0
        self.count = 0

    def headers(self) -> dict[str, str]:
        return {"X-Chat-Token": self.token} if self.token else {}

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.svc.client.post(path, json=body, headers=self.headers()) as r:
            return r.status, await r.json()

    async def open(self) -> None:
        status, data = await self.post("/chat/api/session", {"lang": self.lang})
        assert status == 200, data
        self.token = data["token"]

    async def say(self, text: str) -> tuple[int, dict[str, Any]]:
        if self.token is None:
            await self.open()
        self.count += 1
        return await self.post("/chat/api/messages", {"id": f"msg{self.count:08d}",
                                                      "text": text, "lang": self.lang})

    async def replies(self) -> list[str]:
        """What the page would show now: everything the outbox has sent this chat."""
        await self.svc.outbox_idle()
        status, data = await self.post("/chat/api/poll", {"after": self.after})
        assert status == 200, data
        for reply in data["replies"]:
            self.after = max(self.after, reply["id"])
        return [reply["text"] for reply in data["replies"]]


@pytest.fixture
async def svc(start_service, fake_twilio) -> Service:
    return await start_service(fake_twilio, oncall=ONCALL, escalation=POLICY)


async def test_the_page_shows_the_safety_text_and_leaves_no_trace(svc):
    async with svc.client.get("/chat") as page:
        html = await page.text()
        assert page.status == 200
        assert "call 911" in html and "1-888-373-7888" in html and "233733" in html
        assert 'for="message">Message</label>' in html and ">Send</button>" in html
        assert ">Quick exit</button>" in html
        assert "Set-Cookie" not in page.headers
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "<script>" not in html


async def test_spanish_from_the_browser_and_on_request(svc):
    async with svc.client.get("/chat", headers={"Accept-Language": "es-MX,es;q=0.9"}) as page:
        html = await page.text()
    assert 'lang="es"' in html and ">Mensaje</label>" in html and ">Enviar</button>" in html
    assert ">Salida rápida</button>" in html and "llame al 911" in html
    async with svc.client.get("/chat?lang=es") as page:
        assert ">Enviar</button>" in await page.text()


async def test_a_first_message_gets_the_first_reply_with_the_safety_text(svc):
    chat = Chat(svc)
    status, data = await chat.say("hello")
    assert status == 200 and data["fallback"] is None
    [first] = await chat.replies()
    assert first.startswith(FIRST_REPLY_START) and SAFETY in first
    [conversation] = await svc.all(Conversation)
    assert conversation.channel == "web"


async def test_an_emergency_in_the_chat_pages_on_call(svc, fake_twilio):
    await register_staff(svc, "alice", phone=ALICE)
    chat = Chat(svc)
    await chat.say("he has a gun and I can't leave")
    await svc.outbox_idle()
    [page] = [m for m in fake_twilio.sent if m.to == ALICE]
    assert page.body.startswith("EMERGENCY #1 (web)")
    [escalation] = await svc.all(Escalation)
    assert escalation.channel == "web"
    assert any("911" in reply for reply in await chat.replies())


async def test_quick_exit_closes_silently_and_nothing_more_can_be_sent(svc):
    chat = Chat(svc)
    await chat.say("hello")
    await chat.replies()
    async with svc.client.post("/chat/api/exit", data=chat.token,
                               headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 200
    [conversation] = await svc.all(Conversation)
    assert conversation.status == "closed" and conversation.outcome == "quick_exit"
    [session] = await svc.all(WebSession)
    assert session.end_reason == "exit"
    status, data = await chat.say("are you there")
    assert status == 410 and data["error"] == "ended"
    assert len(await svc.all(Message)) == 2  # "hello" and the first reply: nothing since


async def test_a_chat_idle_too_long_has_ended(svc):
    chat = Chat(svc)
    await chat.say("hello")
    svc.clock.advance(minutes=31)
    status, _ = await chat.say("still there?")
    assert status == 410


async def test_bad_requests_get_a_clear_4xx_and_change_nothing(svc):
    chat = Chat(svc)
    await chat.open()
    cases = [
        ({"id": "msg00000001", "text": ""}, 400),
        ({"id": "msg00000001", "text": "x" * 2001}, 413),
        ({"id": "no", "text": "hi"}, 400),
        ({"id": "msg00000001", "text": "a\x00b"}, 400),
    ]
    for body, expected in cases:
        status, _ = await chat.post("/chat/api/messages", body)
        assert status == expected, body
    for headers, expected in [({"X-Chat-Token": "x" * 43}, 410),
                              ({"X-Chat-Token": "not a token!"}, 401), ({}, 401)]:
        async with svc.client.post("/chat/api/messages", json={"id": "msg00000002",
                                                              "text": "hi"},
                                   headers=headers) as r:
            assert r.status == expected, headers
    async with svc.client.post("/chat/api/messages", data="id=1&text=hi",
                               headers={**chat.headers(),
                                        "Content-Type": "application/x-www-form-urlencoded"}
                               ) as r:
        assert r.status == 415
    async with svc.client.post("/chat/api/messages", data=b"\xff\xfe{}",
                               headers={**chat.headers(),
                                        "Content-Type": "application/json"}) as r:
        assert r.status == 400
    assert await svc.all(Message) == [] and await svc.all(Conversation) == []


async def test_too_many_messages_from_one_browser_are_refused_plainly(start_service,
                                                                      fake_twilio):
    svc = await start_service(fake_twilio, webchat={"messages_per_minute": 3})
    chat = Chat(svc)
    for n in range(3):
        assert (await chat.say(f"message {n}"))[0] == 200
    status, data = await chat.say("one more")
    assert status == 429 and "Wait a minute" in data["message"]


async def test_the_chat_asks_new_people_to_wait_when_full(start_service, fake_twilio):
    svc = await start_service(fake_twilio, webchat={"max_sessions": 2})
    for _ in range(2):
        await Chat(svc).open()
    status, data = await Chat(svc).post("/chat/api/session", {"lang": "en"})
    assert status == 503 and "1-888-373-7888" in data["message"]


async def test_when_storage_is_down_the_safety_text_comes_back_in_the_answer(
    start_service, fake_twilio
):
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    chat = Chat(svc)
    await chat.open()
    async with database_down(svc):
        status, data = await chat.say("hello")
    assert status == 200 and data["fallback"] == SAFETY
    assert await svc.services.intake.drain_spool() == 1


async def test_framing_is_allowed_only_from_the_configured_site(start_service, fake_twilio):
    svc = await start_service(fake_twilio,
                              webchat={"allowed_origins": ["https://www.example.org"]})
    async with svc.client.get("/chat") as page:
        csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors https://www.example.org" in csp
    assert "X-Frame-Options" not in page.headers


async def test_staff_reply_reaches_the_open_chat_and_is_refused_once_it_has_ended(svc):
    await add_staff(svc, "erin")
    chat = Chat(svc)
    await chat.say("hello, is anyone there")
    await chat.replies()
    browser = Browser(svc)
    await browser.sign_in("erin")
    await browser.get("/console/conversations/1")
    page = await browser.post("/console/conversations/1/reply", {"text": "Hi, I am Erin."})
    assert page.status == 303
    assert await chat.replies() == ["Hi, I am Erin."]
    async with svc.client.post("/chat/api/left", data=chat.token,
                               headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 200
    page = await browser.get("/console/conversations/1")
    assert "The contact has left the chat." in page.text
    page = await browser.post("/console/conversations/1/reply", {"text": "Are you safe?"})
    assert page.status == 409 and "The contact has left the chat. Web chat" in page.text
    [conversation] = await svc.all(Conversation)
    assert conversation.status == "open"  # leaving the page is not a quick exit
    outbound = [svc.decrypt(m.body_enc) for m in await svc.all(Message)
                if m.direction == "out"]
    assert "Are you safe?" not in outbound


async def test_the_stream_brings_a_staff_reply_live(svc):
    await add_staff(svc, "erin")
    chat = Chat(svc)
    await chat.say("hello")
    await chat.replies()
    async with svc.client.get(f"/chat/api/stream?after={chat.after}",
                              headers=chat.headers()) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert await stream.content.readuntil(b"\n\n") == b"retry: 3000\nevent: ready\ndata: {}\n\n"
        browser = Browser(svc)
        await browser.sign_in("erin")
        await browser.get("/console/conversations/1")
        await browser.post("/console/conversations/1/reply", {"text": "We are here."})
        event = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
    assert event.startswith(b"event: reply\n") and b"We are here." in event


async def test_a_reply_the_page_has_shown_is_marked_delivered(svc):
    chat = Chat(svc)
    await chat.say("hello")
    await chat.replies()
    [row] = await svc.all(Outbox)
    assert row.status == "sent"
    status, _ = await chat.post("/chat/api/read", {"ids": [row.message_id]})
    assert status == 200
    [row] = await svc.all(Outbox)
    assert row.status == "delivered"
    other = Chat(svc)
    await other.say("hi")  # another chat cannot mark this one's replies
    await other.post("/chat/api/read", {"ids": [row.message_id]})


async def test_exit_typed_in_the_chat_closes_it_and_ends_the_chat(svc):
    chat = Chat(svc)
    await chat.say("hello")
    await chat.replies()
    await chat.say("EXIT")
    [conversation] = await svc.all(Conversation)
    assert conversation.status == "closed" and conversation.outcome == "quick_exit"
    assert (await chat.say("hello again"))[0] == 410
    assert await chat.replies() == []  # EXIT is answered with nothing at all


class AsInProduction(TestServer):
    """The app served as `python -m bot run` serves it: a request's handler runs on when its
    client goes away (aiohttp's test server would cancel it, hiding what happens then)."""

    async def _make_runner(self, **kwargs: Any) -> AppRunner:
        return AppRunner(self.app, **{**kwargs, "handler_cancellation": False})


async def test_a_page_that_has_gone_stops_its_stream_at_the_next_change(
    env, clock, fake_twilio, captured_logs
):
    client = TestClient(AsInProduction(create_app(env.settings(fake_twilio), clock)))
    await client.start_server()
    svc = Service(client, clock)
    chat = Chat(svc)
    await chat.say("hello")
    await chat.replies()
    notifier = svc.services.notifier
    async with svc.client.get(f"/chat/api/stream?after={chat.after}",
                              headers=chat.headers()) as stream:
        await stream.content.readuntil(b"\n\n")
        assert notifier.streams == 1
        stream.close()  # the tab is closed
    await chat.say("are you there")  # a change the stream hears: it finds the page gone
    try:
        async with asyncio.timeout(5):
            while True:
                if notifier.streams == 0:
                    break
                await asyncio.sleep(0.01)
    finally:
        await client.close()
    assert "Traceback" not in captured_logs.everything()

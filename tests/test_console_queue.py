"""The queue at /console and its live stream, over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from bot.app import create_app
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

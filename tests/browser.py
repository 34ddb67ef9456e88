"""A real browser against the real service: Debian's Chromium, driven by Playwright, talking to
the app served on a loopback port (the fake Twilio and Telegram behind it, as in every test).

The service keeps the test public_url (https://triage.example.org), so its console cookies
are Secure, as behind https in production: Chromium counts http://127.0.0.1 as a secure
context and sends them (`assert_console_cookies` checks it). Links the service writes (the
one in a page SMS) name the public URL; `LiveService.local` turns one into the same path on
the loopback server, as DNS would.

Each test gets a fresh Chromium (a fresh, throwaway profile). Every page a test opens fails
the test on any console error or uncaught exception: a CSP violation, a script or stylesheet
that did not load, a broken script. Screenshots go to test-artifacts/ at the repository root,
named for the test and the step.

A test module imports `start_live_service_fixture` and `chromium_fixture` to use the fixtures
`start_live_service` and `chromium`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    async_playwright,
)
from sqlalchemy.orm import Session

from bot.app import create_app
from bot.storage.models import Staff
from tests.conftest import PUBLIC_URL, ROOT, Clock, Env, Service
from tests.console_helpers import add_staff
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright cannot download a browser here
# The browser resolves no name but loopback's: a page that names another site (an exit
# site, say) must be answered by the test's own routing, never by the network.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}


class LiveService(Service):
    """The app on a real port, so a browser can reach it: Service's webhooks and queries,
    plus the server's origin."""

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    def local(self, link: str) -> str:
        """A link the service wrote (under the public URL), on the loopback server."""
        assert link.startswith(PUBLIC_URL + "/"), link
        return self.origin + link[len(PUBLIC_URL):]


StartLive = Callable[..., Awaitable[LiveService]]


@pytest.fixture(name="start_live_service")
async def start_live_service_fixture(
    env: Env, clock: Clock, started: list[Service]
) -> AsyncIterator[StartLive]:
    """Like conftest's start_service, but listening on 127.0.0.1 for a browser."""
    clients: list[TestClient] = []

    async def start(twilio: FakeTwilio | None = None, telegram_api: FakeTelegram | None = None,
                    **overrides: Any) -> LiveService:
        settings = env.settings(twilio, telegram_api, **overrides)
        client = TestClient(TestServer(create_app(settings, clock), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        live = LiveService(client, clock)
        started.append(live)
        return live

    yield start
    for client in clients:
        await client.close()


@dataclass
class Chromium:
    """One Chromium for one test: pages at a size, screenshots, and the console errors seen."""

    browser: Browser
    test_name: str
    errors: list[str] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    async def page(self, viewport: dict[str, int], phone: bool = False) -> Page:
        """A page in a new context (its own cookies). `phone` makes it a touch screen that
        honours the viewport meta tag, as a phone's browser does."""
        context = await self.browser.new_context(
            viewport=viewport, is_mobile=phone, has_touch=phone,
            device_scale_factor=2 if phone else 1, locale="en-US",
            timezone_id="America/Chicago",
        )
        self.contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(5000)
        page.on("console", lambda msg: self._console(page, msg))
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        return page

    def _console(self, page: Page, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            source = msg.location.get("url") or ""
            self.errors.append(f"{page.url}: {msg.text} {source}".rstrip())

    async def shot(self, page: Page, step: str, full_page: bool = True) -> Path:
        """A screenshot, test-artifacts/<test>-<step>.png: the whole page, or only what is
        on screen (on a phone, what the person sees; a sticky bar stays at the top)."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.test_name}-{step}.png"
        await page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_no_console_errors(self) -> None:
        """Fails on the errors seen since the last check (each is reported once)."""
        errors, self.errors = self.errors, []
        assert not errors, "the browser reported errors:\n" + "\n".join(errors)


@pytest.fixture(name="chromium")
async def chromium_fixture(request: pytest.FixtureRequest,
                   start_live_service: StartLive) -> AsyncIterator[Chromium]:
    """A fresh Chromium. It depends on start_live_service so that it closes first: its open
    event streams end before the server stops."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        found = Chromium(browser, name)
        try:
            yield found
        finally:
            for context in found.contexts:
                await context.close()
            await browser.close()
    found.assert_no_console_errors()


class Taps:
    """Counts what a person does with their thumb."""

    def __init__(self) -> None:
        self.count = 0

    async def tap(self, target: Locator) -> None:
        self.count += 1
        await target.tap()


async def scroll_width(page: Page) -> int:
    return int(await page.evaluate("document.documentElement.scrollWidth"))


async def assert_fits(page: Page, width: int) -> None:
    """Nothing on the page makes it scroll sideways."""
    assert await scroll_width(page) <= width, (page.url, await scroll_width(page))


async def assert_console_cookies(page: Page) -> None:
    """The session cookie reached the browser as the service set it, and was kept."""
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["triage_console"]
    assert (session["secure"], session["httpOnly"], session["sameSite"]) == (True, True,
                                                                              "Strict")


async def sign_in(page: Page, username: str, password: str, code: Callable[[], str] | None,
                  tap: Callable[[Locator], Awaitable[None]] | None = None) -> None:
    """Type the username and password (and the code, if asked for one) into the pages the
    browser is on now, pressing the buttons with `tap` (a click by default)."""
    press = tap or (lambda target: target.click())
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await press(page.get_by_role("button", name="Sign in"))
    if code is not None:
        await page.wait_for_url(re.compile(r"/console/login/code"))
        await page.get_by_label("Code").fill(code())
        await press(page.get_by_role("button", name="Continue"))


async def add_paged_member(svc: Service, username: str, phone: str, role: str = "oncall",
                           two_factor: bool = False) -> str | None:
    """A console account that is paged at `phone`; returns its TOTP secret, if enrolled."""
    staff_id, secret = await add_staff(svc, username, role=role, two_factor=two_factor)
    cipher = svc.services.cipher

    def unit(session: Session) -> None:
        staff = session.get(Staff, staff_id)
        assert staff is not None
        staff.phone_enc = cipher.encrypt(phone)
        staff.phone_hash = cipher.address_hash("sms", phone)

    await svc.services.writer.run(unit)
    return secret

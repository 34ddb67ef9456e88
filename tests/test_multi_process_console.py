"""The console behind a load balancer (issue: PostgreSQL and several processes): a staff
member signs in on one process, and their next requests land on another. The session holds
there, and a conversation that arrives at the first process reaches the live stream open on
the second, through LISTEN/NOTIFY, at once rather than at the slow poll."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.databases import on_postgres
from tests.fakes.twilio_api import FakeTwilio
from tests.fixtures import ACCOUNT_SID, AUTH_TOKEN, encode_form, load_twilio_form, twilio_signature
from tests.subprocesses import INBOUND_PATH, free_port, running, service_env, wait_healthy
from tests.test_multi_process import write_config

pytestmark = pytest.mark.skipif(
    not on_postgres(), reason="several processes share one database only on PostgreSQL"
)
USERNAME = "carol"
PASSWORD = "a long test password 02"  # a test password, not a secret
CONTACT = "+13145550163"  # fictional
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# Well under the slow poll that backs LISTEN/NOTIFY up, so only a notification is this fast.
ARRIVAL_SECONDS = 5.0


async def add_staff(folder: Path, config: Path, env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "staff", "add", USERNAME, "--role", "staff",
        "--config", str(config), cwd=folder, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(f"{PASSWORD}\n".encode()), 30)
    assert proc.returncode == 0, err.decode()


async def sign_in(session: aiohttp.ClientSession, base: str) -> None:
    async with session.get(f"{base}/console/login") as page:
        token = CSRF.search(await page.text())
    assert token, "no CSRF token on the sign-in page"
    form = {"username": USERNAME, "password": PASSWORD, "next": "/console",
            "csrf_token": token.group(1)}
    async with session.post(f"{base}/console/login", data=form,
                            allow_redirects=False) as response:
        assert response.status == 303, await response.text()


async def next_event(stream: aiohttp.ClientResponse) -> tuple[str, dict[str, object]]:
    """The next server-sent event, as (event, data)."""
    event, data = "", ""
    while True:
        line = (await stream.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and event:
            return event, json.loads(data or "{}")


async def test_a_session_and_the_live_queue_hold_across_processes(
    tmp_path: Path, database_url: str
):
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    try:
        ports = [free_port(), free_port()]
        configs = [write_config(tmp_path / name, port, database_url, fake.base_url)
                   for name, port in zip("ab", ports, strict=True)]
        env = service_env()
        await add_staff(tmp_path / "a", configs[0], env)
        first, second = (f"http://127.0.0.1:{port}" for port in ports)
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, whatever the port
        async with aiohttp.ClientSession(cookie_jar=jar) as browser, \
                running(tmp_path / "a", configs[0], env, tmp_path / "a.log") as proc_a, \
                running(tmp_path / "b", configs[1], env, tmp_path / "b.log") as proc_b:
            await wait_healthy(browser, first, proc_a, tmp_path / "a.log")
            await wait_healthy(browser, second, proc_b, tmp_path / "b.log")
            await sign_in(browser, first)

            async with browser.get(f"{second}/console", allow_redirects=False) as queue:
                assert queue.status == 200  # signed in on the other process too
                assert "Nobody is waiting here." in await queue.text()

            async with browser.get(f"{second}/console/events") as stream:
                assert stream.status == 200
                assert (await next_event(stream))[0] == "ready"
                form = load_twilio_form("inbound_sms", Body="is anyone there", From=CONTACT)
                url = first + INBOUND_PATH
                headers = {"Content-Type": "application/x-www-form-urlencoded",
                           "X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url, form)}
                async with browser.post(url, data=encode_form(form),
                                        headers=headers) as webhook:
                    assert webhook.status == 200
                async with asyncio.timeout(ARRIVAL_SECONDS):
                    while (event := await next_event(stream))[0] != "change":
                        pass
                assert event[1]["kind"] == "conversation"

            number = event[1]["id"]
            async with browser.get(f"{second}/console") as queue:
                assert f'href="/console/conversations/{number}"' in await queue.text()
            async with browser.get(f"{second}/console/conversations/{number}") as conversation:
                assert "is anyone there" in await conversation.text()
    finally:
        await fake.close()

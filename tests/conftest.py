"""Shared test wiring: fake providers on loopback, settings built from config.example.toml,
a controllable clock, and the real app under aiohttp's test client."""

from __future__ import annotations

import io
import json
import logging
import os
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import SERVICES, Services, create_app
from bot.config import Settings, parse_settings
from bot.crypto import generate_key
from bot.domain import OutboxStatus
from bot.logs import QUIET_LOGGERS, configure_logging
from bot.storage.models import Outbox
from tests.databases import PostgresSchema, fresh_schema, postgres_url, sqlite_url
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio
from tests.fixtures import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CONTACT_NUMBER,
    OUR_NUMBER,
    TELEGRAM_CONTACT_ID,
    TELEGRAM_TOKEN,
    deep_merge,
    encode_form,
    load_telegram_update,
    load_twilio_form,
    twilio_signature,
)
from tests.waiting import eventually

os.environ.setdefault("PTB_TIMEDELTA", "true")  # PTB 22 warns on int retry_after otherwise
ROOT = Path(__file__).resolve().parent.parent
PUBLIC_URL = "https://triage.example.org"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
# Monday 2026-11-30 10:00 in Chicago: inside the example config's hours.
MONDAY_10AM = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
# Saturday 2026-11-28 14:00 in Chicago: closed until Monday 9:00.
SATURDAY_2PM = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)


class Clock:
    """Time as a parameter: tests set and move it; nothing sleeps."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def example_config() -> dict[str, Any]:
    return tomllib.loads((ROOT / "config.example.toml").read_text())


@dataclass
class Env:
    """Everything one test needs, built around one temporary directory."""

    tmp_path: Path
    database_url: str = ""
    key: str = field(default_factory=generate_key)

    def __post_init__(self) -> None:
        self.database_url = self.database_url or sqlite_url(self.tmp_path)

    def environ(self, **extra: str) -> dict[str, str]:
        return {
            "TRIAGE_ENCRYPTION_KEY": self.key,
            "TRIAGE_SESSION_SECRET": "test-session-secret",
            "TRIAGE_SMS_AUTH_TOKEN": AUTH_TOKEN,
            "TRIAGE_TELEGRAM_TOKEN": TELEGRAM_TOKEN,
            "TRIAGE_TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            **extra,
        }

    def raw_config(
        self, twilio: FakeTwilio | None, telegram_api: FakeTelegram | None, **overrides: Any
    ) -> dict[str, Any]:
        raw = deep_merge(
            example_config(),
            {
                "server": {"public_url": PUBLIC_URL},
                "database": {"url": self.database_url},
                "sms": {
                    "enabled": twilio is not None,
                    "account_sid": ACCOUNT_SID,
                    "from_number": OUR_NUMBER,
                    "api_base_url": twilio.base_url if twilio else "https://api.twilio.com",
                    "max_per_second": 1000,
                },
                "telegram": {
                    "enabled": telegram_api is not None,
                    "mode": "webhook",
                    "api_base_url": telegram_api.base_url if telegram_api else "",
                    "max_per_second": 1000,
                },
                "outbox": {"retry_base_seconds": 1, "send_timeout_seconds": 5},
            },
        )
        return deep_merge(raw, overrides)

    def settings(
        self,
        twilio: FakeTwilio | None = None,
        telegram_api: FakeTelegram | None = None,
        **overrides: Any,
    ) -> Settings:
        raw = self.raw_config(twilio, telegram_api, **overrides)
        return parse_settings(raw, self.environ(), base_dir=self.tmp_path)


@pytest.fixture(scope="session", autouse=True)
def postgres_schema() -> Iterator[PostgresSchema | None]:
    """The run's PostgreSQL schema, made before the first test whatever the tests are: a
    run told to use PostgreSQL that cannot reach it stops there, with one message."""
    url = postgres_url()
    if url is None:
        yield None
        return
    schema = PostgresSchema(url)
    try:
        schema.create()
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
    yield schema
    schema.drop()


@pytest.fixture
async def database_url(tmp_path: Path, postgres_schema: PostgresSchema | None) -> str:
    """A clean database for this test: a new SQLite file, or the run's PostgreSQL schema
    emptied."""
    if postgres_schema is None:
        return sqlite_url(tmp_path)
    await postgres_schema.empty()
    return postgres_schema.url


@pytest.fixture
async def empty_database(tmp_path: Path) -> AsyncIterator[str]:
    """A database with nothing in it, not even the schema: an SQLite file not yet made, or
    a new PostgreSQL schema (dropped afterwards)."""
    base = postgres_url()
    if base is None:
        yield sqlite_url(tmp_path / "empty")
        return
    async with fresh_schema(base) as url:
        yield url


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Env:
    return Env(tmp_path, database_url)


@pytest.fixture
def clock() -> Clock:
    return Clock(MONDAY_10AM)


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram(TELEGRAM_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


class Service:
    """The running app, and how a contact and the tests talk to it."""

    def __init__(self, client: TestClient, clock: Clock) -> None:
        self.client = client
        self.clock = clock
        self._sid = 0
        self._update_id = 1000

    @property
    def services(self) -> Services:
        return self.client.app[SERVICES]

    def next_sid(self) -> str:
        self._sid += 1
        return f"SM{self._sid:032x}"

    async def sms(
        self,
        body: str,
        from_: str = CONTACT_NUMBER,
        sid: str | None = None,
        fixture: str = "inbound_sms",
        signature: str | None = None,
        **fields: str,
    ) -> tuple[int, str]:
        """Post a signed inbound-SMS webhook as Twilio would; return (status, body)."""
        sid = sid or self.next_sid()
        form = load_twilio_form(
            fixture, Body=body, From=from_, MessageSid=sid, SmsMessageSid=sid, SmsSid=sid,
            **fields,
        )
        return await self.post_form("/webhooks/twilio/sms", form, signature)

    async def post_form(
        self, path: str, form: dict[str, str], signature: str | None = None
    ) -> tuple[int, str]:
        if signature is None:
            signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, form)
        response = await self.client.post(
            path,
            data=encode_form(form),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )
        return response.status, await response.text()

    async def telegram(
        self,
        text: str,
        chat_id: int = TELEGRAM_CONTACT_ID,
        fixture: str = "text_message",
        update_id: int | None = None,
        secret: str = WEBHOOK_SECRET,
    ) -> tuple[int, Any]:
        if update_id is None:
            self._update_id += 1
            update_id = self._update_id
        update = load_telegram_update(fixture, update_id=update_id, chat_id=chat_id, text=text)
        response = await self.client.post(
            "/webhooks/telegram",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": secret},
        )
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body

    async def query(self, fn: Callable[[AsyncSession], Any]) -> Any:
        async with AsyncSession(self.services.engine, expire_on_commit=False) as session:
            return await fn(session)

    async def all(self, model: type) -> list[Any]:
        async def fn(session: AsyncSession) -> list[Any]:
            return list((await session.scalars(select(model).order_by(model.id))).all())

        return await self.query(fn)

    def decrypt(self, token: str | None) -> str | None:
        return None if token is None else self.services.cipher.decrypt(token)

    async def outbox_idle(self, seconds: float = 5.0) -> None:
        """Wait until the outbox has nothing due and nothing in flight: after this, whatever
        was going to be sent by now has been, so a test can assert that nothing more was.
        (A retry not due yet on the test's clock, or a row of a channel paused by the
        provider's rate limit, stays pending and is not waited for.)"""

        async def due(session: AsyncSession) -> int:
            now = self.clock()
            paused = self.services.worker.paused_channels()
            return await session.scalar(
                select(func.count()).select_from(Outbox).where(
                    (Outbox.status == OutboxStatus.SENDING)
                    | ((Outbox.status == OutboxStatus.PENDING) & (Outbox.next_attempt_at <= now)
                       & Outbox.channel.not_in(paused))
                )
            )

        async def idle() -> bool:
            return not self.services.worker.busy and not await self.query(due)

        await eventually(idle, "the outbox to have nothing due or in flight", seconds, 0.01)

    async def assert_sent(self, fake: FakeTwilio | FakeTelegram, n: int) -> list[Any]:
        """Once the outbox is idle, exactly `n` messages have reached `fake` in all, since
        it started: nothing more was sent, and nothing is still on its way. Returns them."""
        await self.outbox_idle()
        return sent_in_all(fake, n)


def sent_in_all(fake: FakeTwilio | FakeTelegram, n: int) -> list[Any]:
    """Exactly `n` messages have reached `fake` since it started; returns them. Call it once
    the senders are quiet (see Service.assert_sent)."""
    assert len(fake.sent) == n, (
        f"expected {n} messages at the fake in all, got {len(fake.sent)}; "
        f"after the first {n}: {fake.sent[n:]!r}"
    )
    return list(fake.sent)


async def quiet(services: list[Service]) -> None:
    """outbox_idle for every service a test started that still runs (several may share a
    database)."""
    for svc in services:
        if svc.services.worker.alive:
            await svc.outbox_idle()


StartService = Callable[..., Any]


@pytest.fixture
def started() -> list[Service]:
    """Every Service this test started, in order, for waiting until all are quiet."""
    return []


@pytest.fixture
def start_service(
    aiohttp_client: Callable[..., Any], env: Env, clock: Clock, started: list[Service]
) -> StartService:
    async def start(
        twilio: FakeTwilio | None = None,
        telegram_api: FakeTelegram | None = None,
        **overrides: Any,
    ) -> Service:
        settings = env.settings(twilio, telegram_api, **overrides)
        client = await aiohttp_client(create_app(settings, clock))
        svc = Service(client, clock)
        started.append(svc)
        return svc

    return start


@dataclass
class CapturedLogs:
    """What logging wrote while a test ran.

    ``output`` is what the production handler wrote: JSON lines, one a record. ``seen`` holds
    each record as a plain handler beside it would print it (message, arguments and
    traceback), since a record must carry nothing whichever handler it reaches.
    """

    output: io.StringIO
    seen: list[str]

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.getvalue().splitlines()]

    def everything(self) -> str:
        return self.output.getvalue() + "\n".join(self.seen)


class _PlainCapture(logging.Handler):
    def __init__(self, seen: list[str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self._seen = seen

    def emit(self, record: logging.LogRecord) -> None:
        self._seen.append(f"{self.format(record)} args={record.args!r}")


@pytest.fixture
def captured_logs() -> Iterator[CapturedLogs]:
    """Logging switched on by `configure_logging`, as `python -m bot run` does, with the
    production handler writing to a buffer, and the libraries opened up to DEBUG so that
    every record they can make is made."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogRecordFactory())
    library_levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    configure_logging("DEBUG")
    output = io.StringIO()
    [production] = root.handlers
    assert isinstance(production, logging.StreamHandler)
    production.setStream(output)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    captured = CapturedLogs(output, [])
    root.addHandler(_PlainCapture(captured.seen))
    yield captured
    handlers, level, factory = saved
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.setLogRecordFactory(factory)
    for name, library_level in library_levels.items():
        logging.getLogger(name).setLevel(library_level)

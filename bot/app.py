"""The composition root: the one place where things are built and wired.

`create_app(settings)` serves both `python -m bot run` and the tests. Each resource is opened
and closed in a cleanup context, in order: database, writer, senders, outbox worker,
channels, scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram.error import TelegramError

from bot.channels.sms import STATUS_PATH, TwilioSender, TwilioWebhooks
from bot.channels.telegram import (
    PollingBot,
    TelegramPoller,
    TelegramSender,
    TelegramWebhook,
    make_bot,
    register_webhook,
)
from bot.channels.web import WebDeps, WebSender, create_webchat
from bot.config import Settings
from bot.console import create_console
from bot.console.deps import ConsoleDeps
from bot.crypto import Cipher
from bot.http_errors import ServerLog, expect_handler, unreadable_body_is_400
from bot.intake import Intake
from bot.metrics import Metrics, ScrapeCollector
from bot.metrics_http import MetricsEndpoint, count_rejections
from bot.notify import Notifier
from bot.notify_postgres import PostgresRelay, channel_for, listen_dsn
from bot.outbox import OutboxWorker, Sender
from bot.spool import Spool
from bot.storage.database import ensure_schema, is_sqlite, make_engine, make_writer_engine
from bot.storage.reader import Reader
from bot.storage.writer import BATCH_LOCK_TIMEOUT_MS, TRANSACTIONS_IN_FLIGHT, Writer
from handlers.escalation import EscalationDeps
from handlers.inbound import InboundDeps
from handlers.keywords import EmergencyMatcher
from handlers.rekey import load_retired
from handlers.replies import FirstReplies
from handlers.staff_auth import AuthPolicy
from handlers.staff_notices import StaffChat
from schedules import register_jobs

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
WEB_SENDS_PER_SECOND = 1000.0  # no provider behind it: the page reads what was sent
# The cyclic garbage collector's thresholds once started (Python's are 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 20)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    """Everything the running app holds, typed, for routes, jobs and tests."""

    settings: Settings
    clock: Clock
    engine: AsyncEngine
    cipher: Cipher
    writer: Writer
    worker: OutboxWorker
    intake: Intake
    spool: Spool
    escalation: EscalationDeps
    notifier: Notifier
    reader: Reader
    metrics: Metrics | None  # None when [metrics] enabled = false: nothing is counted
    senders: dict[str, Sender] = field(default_factory=dict)
    telegram_bot: PollingBot | None = None
    telegram_poller: TelegramPoller | None = None  # polling mode only; readyz asks it
    scheduler: AsyncIOScheduler | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


SERVICES = web.AppKey("services", Services)


def build_services(settings: Settings, clock: Clock = utc_now) -> Services:
    """Builds the object graph; opens nothing. Resources are opened in cleanup contexts."""
    cipher = Cipher.from_env_value(settings.encryption_key.reveal())
    engine = make_engine(settings.database.url)
    writer = Writer(make_writer_engine(settings.database.url, BATCH_LOCK_TIMEOUT_MS,
                                       TRANSACTIONS_IN_FLIGHT))
    notifier = Notifier()
    senders: dict[str, Sender] = {}
    rates = {"sms": settings.sms.max_per_second, "telegram": settings.telegram.max_per_second,
             "web": WEB_SENDS_PER_SECOND}
    worker = OutboxWorker(writer, cipher, senders, rates, settings.outbox, clock, notifier)
    notifier.on_outbox(worker.wake)
    writer.on_commit = notifier.outbox
    escalation = paging_deps(settings, cipher)
    deps = InboundDeps(
        cipher=cipher,
        hours=settings.hours,
        templates=settings.replies,
        emergency=EmergencyMatcher(
            [p for phrases in settings.emergency_phrases.values() for p in phrases]
        ),
        escalation=escalation,
        first_replies=FirstReplies(settings.replies, settings.hours),
        staff_chat=(
            StaffChat(settings.console.staff_chat_id, settings.server.public_url)
            if settings.console.staff_chat_id and settings.telegram.enabled else None
        ),
    )
    spool = Spool(settings.database.spool_dir, cipher)
    reader = Reader(engine)
    metrics = None
    if settings.metrics.enabled:
        # The app's own registry, never prometheus_client's global one: two apps in one
        # process (the tests) must not count into each other.
        metrics = Metrics(CollectorRegistry(auto_describe=False), ScrapeCollector(
            reader, clock, settings.oncall, spool, lambda: all(process_checks(services).values())))
        writer.observer = metrics.observe
    intake = Intake(writer, deps, spool, clock, settings.database.write_timeout_seconds,
                    notifier, metrics)
    services = Services(
        settings, clock, engine, cipher, writer, worker, intake, spool, escalation, notifier,
        reader, metrics, senders,
    )
    if settings.telegram.enabled:
        services.telegram_bot = make_bot(settings.telegram)
    return services


def paging_deps(settings: Settings, cipher: Cipher) -> EscalationDeps:
    """What paging and handovers need; the command line builds the same to queue them."""
    enabled = {"sms": settings.sms.enabled, "telegram": settings.telegram.enabled,
               "web": settings.webchat.enabled}
    return EscalationDeps(
        cipher=cipher,
        rota=settings.oncall,
        policy=settings.escalation,
        public_url=settings.server.public_url,
        channels=frozenset(name for name, on in enabled.items() if on),
    )


def create_app(settings: Settings, clock: Clock = utc_now) -> web.Application:
    services = build_services(settings, clock)
    middlewares = [unreadable_body_is_400]
    if services.metrics is not None:
        middlewares.insert(0, count_rejections(services.metrics))  # sees every refusal
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=middlewares,
        handler_args={"logger": ServerLog(logging.getLogger("aiohttp.server"))},
    )
    app[SERVICES] = services
    app.router.add_get("/healthz", healthz, expect_handler=expect_handler)
    app.router.add_get("/readyz", readyz, expect_handler=expect_handler)
    if services.metrics is not None:
        app.router.add_routes(MetricsEndpoint(services.metrics, settings.metrics,
                                              settings.server.trusted_proxies).routes())
    app.add_subapp("/console", create_console(console_deps(services)))
    if settings.webchat.enabled:
        app.add_subapp("/chat", create_webchat(WebDeps(
            settings, clock, services.reader, services.writer, services.cipher,
            services.intake, services.notifier)))
        services.senders["web"] = WebSender(
            services.reader, services.cipher,
            timedelta(minutes=settings.webchat.idle_minutes), clock)
    if settings.sms.enabled:
        sms = TwilioWebhooks(settings.sms, settings.server.public_url, services.intake,
                             services.writer, clock, services.notifier)
        app.router.add_routes(sms.routes())
    if services.telegram_bot is not None and settings.telegram.mode == "webhook":
        hook = TelegramWebhook(services.telegram_bot, settings.telegram, services.intake, clock)
        app.router.add_routes(hook.routes())
    app.cleanup_ctx.extend([_database, _relay, _sms_sender, _telegram, _outbox, _scheduler])
    return app


def tune_gc() -> None:
    """Call once the app has started. What start-up built (modules, SQLAlchemy's tables and
    compiled statements, the config) lives as long as the process: frozen, the collector no
    longer walks it at every full collection, which took tens of milliseconds with requests
    waiting (bench/inbound.py's p99). And a young generation of 50,000 objects rather than
    700 collects every few hundred requests, not every few: a request's objects are freed
    by reference counting as it ends, so few are still young garbage when it runs.
    For `python -m bot run`; not for tests, which start many apps in one process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def console_deps(services: Services) -> ConsoleDeps:
    settings = services.settings
    policy = AuthPolicy(
        secret=session_secret(settings),
        idle=timedelta(minutes=settings.console.idle_timeout_minutes),
        require_2fa=settings.console.require_2fa,
    )
    return ConsoleDeps(settings, services.clock, services.reader, services.writer,
                       services.cipher, services.notifier, policy, services.escalation)


def session_secret(settings: Settings) -> bytes:
    """TRIAGE_SESSION_SECRET, or (when unset, as on a developer's machine) a key derived from
    the oldest encryption key, which a rotation keeps: check-config warns about that."""
    if settings.session_secret:
        return settings.session_secret.reveal().encode()
    oldest = settings.encryption_key.reveal().split(",")[-1].strip()
    return hashlib.sha256(b"triage console sessions\x00" + oldest.encode()).digest()


async def _database(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    await ensure_schema(services.engine)
    # Lookup keys kept from rotated-out keys: addresses hashed under them are still found.
    retired = await services.reader.run(lambda s: load_retired(s, services.cipher))
    services.writer.start()
    log.info("database_ready", extra={"backend": services.engine.dialect.name,
                                      "retired_lookup_keys": retired})
    yield
    await services.writer.stop()
    services.reader.close()
    await services.engine.dispose()


async def _sms_sender(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    settings = services.settings
    if not settings.sms.enabled:
        log.info("channel_disabled", extra={"channel": "sms"})
        yield
        return
    sender = TwilioSender(settings.sms, settings.server.public_url + STATUS_PATH,
                          timeout=settings.outbox.send_timeout_seconds)
    services.senders["sms"] = sender
    log.info("channel_enabled", extra={"channel": "sms"})
    yield
    await sender.close()


async def _telegram(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    settings = services.settings
    bot = services.telegram_bot
    if bot is None:
        log.info("channel_disabled", extra={"channel": "telegram"})
        yield
        return
    services.senders["telegram"] = TelegramSender(bot)
    # Both keep retrying in the background: a Telegram outage at start must not stop the
    # service (SMS may still work, and the outbox retries Telegram sends).
    if settings.telegram.mode == "webhook":
        task = register_webhook(bot, settings.server.public_url, settings.telegram)
    else:
        services.telegram_poller = TelegramPoller(bot, services.intake, services.clock)
        task = services.telegram_poller.run()
    services.tasks.append(asyncio.create_task(task, name=f"telegram-{settings.telegram.mode}"))
    log.info("channel_enabled", extra={"channel": "telegram", "mode": settings.telegram.mode})
    yield
    for task in services.tasks:
        task.cancel()
    await asyncio.gather(*services.tasks, return_exceptions=True)
    services.tasks.clear()
    services.telegram_poller = None
    with contextlib.suppress(TelegramError):
        await bot.shutdown()


async def _relay(app: web.Application) -> AsyncIterator[None]:
    """With several processes on PostgreSQL, commits are told between them by LISTEN/NOTIFY."""
    services = app[SERVICES]
    if is_sqlite(services.settings.database.url):
        yield
        return
    url = services.settings.database.url
    relay = PostgresRelay(services.notifier, listen_dsn(url), channel_for(url))
    services.notifier.relay = relay
    task = asyncio.create_task(relay.run(), name="notify-relay")
    yield
    services.notifier.relay = None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _outbox(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    services.worker.start()
    yield
    await services.worker.stop()


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    scheduler = AsyncIOScheduler(timezone=services.settings.hours.timezone)
    register_jobs(scheduler, services)
    scheduler.start()
    services.scheduler = scheduler
    # Whatever waited in the spool from a previous run is taken in now, not in a minute.
    await services.intake.drain_spool()
    yield
    scheduler.shutdown(wait=False)
    services.scheduler = None


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def process_checks(services: Services) -> dict[str, bool]:
    """Readiness as far as this process's own parts go; the database is checked apart."""
    checks = {"outbox_worker": services.worker.alive, "writer": services.writer.alive}
    if services.telegram_poller is not None:  # a webhook has no loop of ours to fail
        checks["telegram"] = services.telegram_poller.healthy
    return checks


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks = process_checks(services)
    try:
        async with services.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), 2)
        checks["database"] = True
    except Exception:
        checks["database"] = False
    ready = all(checks.values())
    checks["spool_empty"] = len(services.spool) == 0
    return web.json_response({"ready": ready, **checks}, status=200 if ready else 503)

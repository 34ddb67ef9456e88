"""python -m bot: run, check-config, db upgrade, staff add, oncall set, page-test, purge,
keygen, rekey, db copy.

Every subcommand exits 0 on success, and on bad input exits non-zero with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn, TypeVar

from aiohttp import web
from alembic.util import CommandError as MigrationError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from bot.app import create_app, paging_deps, tune_gc, utc_now
from bot.config import ConfigError, Settings, load_settings
from bot.crypto import Cipher, KeyMaterialError, generate_key
from bot.domain import StaffRole
from bot.hours import describe_week, next_offset_change
from bot.logs import configure_logging
from bot.notify_postgres import CHANNEL as NOTIFY_CHANNEL
from bot.spool import Spool
from bot.storage.copy import Copied, TargetNotEmpty, copy_database
from bot.storage.database import (
    DatabaseNotMigrated,
    ensure_schema,
    is_sqlite,
    make_engine,
    run_in_transaction,
    upgrade,
)
from handlers import page_tests, rekey, staff_admin
from handlers.escalation import empty_rota_problem, rota_problems
from handlers.handover import record_handover
from handlers.retention import Purged, purge_expired
from handlers.staff_admin import StaffAdminError

# What the shared account rules' fields are called here.
CLI_NAMES = {"phone": "--phone", "telegram_chat_id": "--telegram-chat-id",
             "password": "password (from stdin)", "until": "--until", "role": "--role"}
EXIT_USAGE = 2
EXIT_FAILED = 1
T = TypeVar("T")


class CommandError(Exception):
    """A clear, one-line reason for failing."""


class PageTestFailed(Exception):
    """The command ran, and what it checked did not work: one line, exit 1."""


def main(argv: Sequence[str] | None = None) -> int:
    # python-telegram-bot 22 warns on every 429 unless told to use timedeltas (which we read).
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StaffAdminError as exc:
        print(f"error: {exc.said_as(CLI_NAMES)}", file=sys.stderr)
        return EXIT_USAGE
    except (CommandError, ConfigError, KeyMaterialError, DatabaseNotMigrated,
            MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PageTestFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SQLAlchemyError as exc:
        print(f"error: database: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments get one line on stderr, like every other refusal; the usage text is
    one `--help` away."""

    def error(self, message: str) -> NoReturn:
        # What was typed is quoted back, so a control character in it must not break the line.
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(EXIT_USAGE, f"error: {self.prog}: {shown} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str,
                config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if config:
            p.add_argument("--config", default="config.toml", help="TOML config file")
        p.set_defaults(func=func)
        return p

    command("run", cmd_run, "run the service")
    command("check-config", cmd_check_config, "load the config and report problems")
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    up = db.add_parser("upgrade", help="apply migrations")
    up.add_argument("--config", default="config.toml")
    up.set_defaults(func=cmd_db_upgrade)
    copy = db.add_parser("copy", help="copy every row to another (empty) database")
    copy.add_argument("--to", required=True, metavar="URL",
                      help="e.g. postgresql+asyncpg://triage@db.example.org/triage")
    copy.add_argument("--config", default="config.toml")
    copy.set_defaults(func=cmd_db_copy)
    staff = sub.add_parser("staff", help="staff accounts").add_subparsers(dest="staff",
                                                                          required=True)
    add = staff.add_parser("add", help="add a staff member; the password is read from stdin")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=[r.value for r in StaffRole])
    add.add_argument("--phone", help="E.164 number for pages, e.g. +13145550123")
    add.add_argument("--telegram-chat-id", help="Telegram chat id for pages")
    add.add_argument("--config", default="config.toml")
    add.set_defaults(func=cmd_staff_add)
    oncall = sub.add_parser("oncall", help="on-call overrides").add_subparsers(dest="oncall",
                                                                              required=True)
    put = oncall.add_parser("set", help="put USERNAME on call now, until --until or further notice")
    put.add_argument("username")
    put.add_argument("--until", help="ISO date-time, e.g. 2026-12-01T09:00-06:00")
    put.add_argument("--config", default="config.toml")
    put.set_defaults(func=cmd_oncall_set)
    command("purge", cmd_purge, "delete closed conversations past retention now")
    test = command("page-test", cmd_page_test,
                   "send USERNAME a test page through the running service, and wait for ACK")
    test.add_argument("username")
    test.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                      help="how long to wait for delivery and the ACK (default 120)")
    rekey = command("rekey", cmd_rekey,
                    "encrypt everything again with the newest key, so old keys can go")
    rekey.add_argument("--batch", type=int, default=500, help="rows per transaction")
    rekey.add_argument("--pause", type=float, default=0.0, metavar="SECONDS",
                       help="wait between batches, to leave a busy live service room")
    command("keygen", cmd_keygen, "print a fresh encryption key", config=False)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, os.environ)


def cmd_keygen(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    Cipher.from_env_value(settings.encryption_key.reveal())
    for warning in config_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"ok: {args.config}")
    print(hours_in_words(settings, utc_now()))
    return 0


def hours_in_words(settings: Settings, now: datetime) -> str:
    """What the hours config means for the coming week, so an admin can see it says what
    they meant: each day, holidays marked, and the next daylight-saving change."""
    zone = settings.hours.zone
    lines = [f"Hours in {zone.key}, the coming week:"]
    lines += [f"  {line}" for line in describe_week(settings.hours, now)]
    change = next_offset_change(zone, now)
    if change is None:
        lines.append("  No daylight-saving change in the coming year.")
    else:
        moment, shift = change
        way = "forward" if shift > timedelta(0) else "back"
        wall = moment.replace(tzinfo=None)
        lines.append(f"  Next daylight-saving change: {wall:%a %d %b %Y}, at "
                     f"{wall - shift:%H:%M} the clocks go {way} to {wall:%H:%M}.")
    return "\n".join(lines)


def config_warnings(settings: Settings) -> list[str]:
    warnings = [*_rota_warnings(settings)]
    if not settings.sms.enabled and not settings.telegram.enabled:
        warnings.append("no channel is enabled: [sms] and [telegram] are both off")
    if not settings.session_secret:
        warnings.append("TRIAGE_SESSION_SECRET is not set (needed by the staff console)")
    if settings.server.public_url.startswith("http://") and settings.sms.enabled:
        warnings.append("[server] public_url is not https: Twilio webhooks should use https")
    return warnings + _metrics_warnings(settings)


def _metrics_warnings(settings: Settings) -> list[str]:
    metrics = settings.metrics
    if not metrics.enabled:
        return []
    if not metrics.allow and not metrics.token:
        return ["[metrics] allow is empty and TRIAGE_METRICS_TOKEN is not set: nothing can "
                "read /metrics (set enabled = false to turn it off)"]
    if any(network.prefixlen == 0 for network in metrics.allow):
        return ["[metrics] allow lets every address read /metrics; list the scrapers' "
                "networks, or use TRIAGE_METRICS_TOKEN"]
    return []


def _rota_warnings(settings: Settings) -> list[str]:
    """Rota gaps, checked against the staff table when the database exists."""
    empty = empty_rota_problem(settings.oncall)
    url = make_url(settings.database.url)
    if is_sqlite(url) and not Path(url.database or "").exists():
        return [*empty, "the database does not exist yet: rota members not checked"]

    async def go() -> list[str]:
        engine = make_engine(settings.database.url)
        try:
            return await run_in_transaction(engine, lambda s: rota_problems(s, settings.oncall))
        finally:
            await engine.dispose()

    try:
        return [*empty, *asyncio.run(go())]
    except SQLAlchemyError as exc:
        return [*empty, f"cannot check the rota against the database: {type(exc).__name__}"]


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def go() -> None:
        engine = make_engine(settings.database.url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(go())
    print("database is up to date")
    return 0


def cmd_db_copy(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if "://" not in args.to:
        raise CommandError("--to must be an SQLAlchemy URL, e.g. postgresql+asyncpg://host/db")
    if make_url(args.to) == make_url(settings.database.url):
        raise CommandError("--to is the database this config already uses")

    async def go() -> list[Copied]:
        source = make_engine(settings.database.url)
        target = make_engine(args.to)
        try:
            return await copy_database(source, target)
        finally:
            await source.dispose()
            await target.dispose()

    try:
        copied = asyncio.run(go())
    except TargetNotEmpty as exc:
        raise CommandError(str(exc)) from None
    rows = sum(c.rows for c in copied)
    print(f"copied {rows} rows in {len(copied)} tables; point [database] url at the new one")
    return 0


def _writes(engine: AsyncEngine) -> AsyncEngine:
    """The engine for a transaction that writes while the service may be running. On SQLite
    it takes the write lock at BEGIN and waits its turn (busy_timeout): begun as a reader, it
    would fail at its first write whenever the service committed since its first read
    ("database is locked" at once, which no busy timeout waits out)."""
    return engine.execution_options(sqlite_immediate=True)


def _with_session(settings: Settings, work: Callable[[Session], T]) -> T:
    """Run `work` in one transaction against the configured database."""

    async def go() -> T:
        engine = make_engine(settings.database.url)
        try:
            await ensure_schema(engine)
            return await run_in_transaction(_writes(engine), work)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def cmd_staff_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    cipher = Cipher.from_env_value(settings.encryption_key.reveal())
    new = staff_admin.check_new_staff(args.username, args.role, args.phone,
                                      args.telegram_chat_id)
    password_hash = staff_admin.new_password_hash(sys.stdin.readline().rstrip("\r\n"))
    now = utc_now()
    try:
        _with_session(settings, lambda s: staff_admin.add_staff(
            s, cipher, new, password_hash, staff_admin.CLI, now))
    except IntegrityError:  # registered meanwhile by someone else
        raise CommandError("that username, phone or Telegram chat id is already registered") \
            from None
    print(f"added {new.username} ({new.role})")
    return 0


def cmd_oncall_set(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = utc_now()
    until = staff_admin.parse_until(args.until, settings.hours.timezone, now)
    deps = paging_deps(settings, Cipher.from_env_value(settings.encryption_key.reveal()))

    def put_on_call(session: Session) -> None:
        staff_admin.set_override(session, args.username, until, staff_admin.CLI, now)
        # They are texted to confirm; the running service sends it.
        handed = record_handover(session, deps, now, announce_first=True,
                                 actor=staff_admin.CLI.name)
        if handed is not None and handed.announced:
            wake_outbox(session)

    _with_session(settings, put_on_call)
    print(f"{args.username} is on call" + (f" until {until.isoformat()}" if until else ""))
    return 0


PAGE_TEST_POLL_SECONDS = 0.5
# What an outbox row's status means to whoever runs page-test.
SEND_STATUS = {
    "pending": "queued, not sent yet",
    "sending": "being sent",
    "sent": "accepted by the provider, not yet reported delivered",
    "delivered": "delivered",
    "failed": "failed",
    "refused": "refused: that address opted out (it sent STOP)",
    "cancelled": "cancelled",
}


def cmd_page_test(args: argparse.Namespace) -> int:
    """Queue a test page, then read the database until it is acknowledged or --wait runs
    out. The running service (any process on this database) sends it and records delivery
    and the ACK, so this works beside one or many processes, on SQLite and PostgreSQL."""
    settings = _settings(args)
    if not 1 <= args.wait <= 3600:
        raise CommandError("--wait must be between 1 and 3600 seconds")
    deps = paging_deps(settings, Cipher.from_env_value(settings.encryption_key.reveal()))

    def queue(session: Session) -> page_tests.QueuedTest:
        queued = page_tests.queue_test_page(session, deps, args.username, staff_admin.CLI.name,
                                            utc_now())
        wake_outbox(session)
        return queued

    async def go() -> tuple[page_tests.QueuedTest, page_tests.Progress, float]:
        engine = make_engine(settings.database.url)
        try:
            await ensure_schema(engine)
            writes = _writes(engine)
            try:
                queued = await run_in_transaction(writes, queue)
            except page_tests.PageTestError as exc:
                raise CommandError(str(exc)) from None
            print(f"test page #{queued.test_id} queued for {args.username}: "
                  + ", ".join(channel for channel, _ in queued.outbox))
            started = time.monotonic()
            shown: dict[str, str] = {}
            while True:
                seen = await run_in_transaction(engine,
                                                lambda s: page_tests.progress(s, queued))
                for channel, status, error in seen.statuses:
                    said = _send_status(channel, status, error)
                    if shown.get(channel) != said:
                        print(f"{channel}: {said}", flush=True)
                        shown[channel] = said
                waited = time.monotonic() - started
                if seen.acked_at is not None or waited >= args.wait:
                    break
                await asyncio.sleep(PAGE_TEST_POLL_SECONDS)
            outcome = " ".join(f"{channel}={status}" for channel, status, _ in seen.statuses)
            outcome += f" acked={seen.acked_channel if seen.acked_at else 'no'}"
            await run_in_transaction(
                writes, lambda s: page_tests.finish(s, queued, outcome, utc_now()))
            return queued, seen, waited
        finally:
            await engine.dispose()

    queued, progress, waited = asyncio.run(go())
    if progress.acked_at is None:
        hint = ""
        if all(status == "pending" for _, status, _ in progress.statuses):
            hint = " (nothing was sent: is the service running?)"
        raise PageTestFailed(f"test page #{queued.test_id} was not acknowledged within "
                             f"{args.wait:g} s{hint}")
    print(f"acknowledged by {progress.acked_channel} after {waited:.0f} s")
    return 0


def _send_status(channel: str, status: str, error: str | None) -> str:
    said = SEND_STATUS.get(status, status)
    if status == "sent" and channel != "sms":
        said = "sent (Telegram does not report delivery)"
    return f"{said} ({error})" if status == "failed" and error else said


def wake_outbox(session: Session) -> None:
    """On PostgreSQL, tell the running service at commit that the outbox has work (it also
    looks every second, and on SQLite that is the only way)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, 'o')"), {"channel": NOTIFY_CHANNEL})


def cmd_rekey(args: argparse.Namespace) -> int:
    settings = _settings(args)
    cipher = Cipher.from_env_value(settings.encryption_key.reveal())
    if args.batch < 1:
        raise CommandError("--batch must be at least 1")
    if not 0 <= args.pause <= 60:
        raise CommandError("--pause must be between 0 and 60 seconds")
    batch, pause = args.batch, args.pause

    async def go() -> dict[str, int]:
        engine = make_engine(settings.database.url)
        try:
            await ensure_schema(engine)
            writes = _writes(engine)  # a live service writes meanwhile
            await run_in_transaction(engine, lambda s: rekey.load_retired(s, cipher))
            now = utc_now()
            kept = await run_in_transaction(writes,
                                            lambda s: rekey.keep_lookup_keys(s, cipher, now))
            for kid in kept:
                print(f"kept the lookup key of {kid}, for what cannot be hashed again")
            for table in rekey.ENCRYPTED:
                total, after = 0, 0
                while True:
                    done = await run_in_transaction(
                        writes, lambda s, t=table, a=after: rekey.rekey_batch(s, cipher, t, a,
                                                                              batch))
                    total += done.reencrypted
                    if done.last_id is None:
                        break
                    after = done.last_id
                    await asyncio.sleep(pause)
                print(f"{table.name}: {total} values encrypted again")
            rehashed, after = 0, 0
            while True:
                done = await run_in_transaction(
                    writes, lambda s, a=after: rekey.rehash_contacts(s, cipher, a, batch))
                rehashed += done.rehashed
                if done.last_id is None:
                    break
                after = done.last_id
                await asyncio.sleep(pause)
            rehashed += await run_in_transaction(writes,
                                                 lambda s: rekey.rehash_staff(s, cipher))
            print(f"addresses hashed again: {rehashed}")
            return await run_in_transaction(engine, lambda s: rekey.remaining(s, cipher))
        finally:
            await engine.dispose()

    left = asyncio.run(go())
    spooled = Spool(settings.database.spool_dir, cipher).reencrypt()
    if spooled:
        print(f"spooled messages encrypted again: {spooled}")
    if any(left.values()):
        raise CommandError("some values are still under an old key (written while this "
                           "ran?): run rekey again")
    others = [kid for kid in cipher.older_lookup_keys()]
    tail = (f"; you can now remove {', '.join(others)} from TRIAGE_ENCRYPTION_KEY"
            if others else "")
    print(f"done: everything is under key {cipher.current_key_id}{tail}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = utc_now()

    def work(session: Session) -> Purged:
        return purge_expired(session, now, settings.privacy.retention_days)

    result = _with_session(settings, work)
    print(f"purged {result.conversations} conversations, {result.contacts} contacts")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(os.environ.get("TRIAGE_LOG_LEVEL", "INFO"))
    asyncio.run(_serve(settings))
    return 0


async def _serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
    tune_gc()
    logging.getLogger("bot").info(
        "listening", extra={"host": settings.server.host, "port": settings.server.port}
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()

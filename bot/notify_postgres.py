"""The commit fan-out between processes on one PostgreSQL database: LISTEN/NOTIFY.

Each process keeps one connection of its own (outside the pool) that LISTENs on a channel.
What a process commits it tells its own listeners at once (bot.notify) and the others by a
NOTIFY on that connection; what the others say arrives by the LISTEN and is told to this
process's listeners. Outbox wake-ups are coalesced (one NOTIFY however many commits), and
changes are sent in batches, so a burst of inbound messages costs a few NOTIFYs, not one
each.

A NOTIFY can be missed (the connection dropped, or was being re-opened): the outbox worker
polls on its own every second anyway, and a RESYNC every `SAFETY_NET_SECONDS` tells open
console pages to read everything again. So a lost notification delays, never loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable

import asyncpg
from sqlalchemy.engine import make_url

from bot.notify import RESYNC, Change, Notifier

log = logging.getLogger(__name__)
CHANNEL = "triage_events"
SAFETY_NET_SECONDS = 30.0
MAX_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes
RECONNECT_MAX_SECONDS = 30.0
MAX_IDENTIFIER = 63  # bytes in a PostgreSQL name, a channel's included


def listen_dsn(url: str) -> str:
    """asyncpg's form of the service's SQLAlchemy URL."""
    parsed = make_url(url).set(drivername="postgresql").difference_update_query(["search_path"])
    return parsed.render_as_string(hide_password=False)


def channel_for(url: str) -> str:
    """The channel of the service's database and schema: services in other schemas of the
    same database (another install, another test run) neither hear nor wake these."""
    schema = make_url(url).query.get("search_path")
    if not schema:
        return CHANNEL
    name = f"{CHANNEL}_{schema}"
    if len(name.encode()) > MAX_IDENTIFIER:  # PostgreSQL would cut the name short
        name = f"{CHANNEL}_{hashlib.sha256(str(schema).encode()).hexdigest()[:32]}"
    return name


def encode(outbox: bool, changes: Iterable[Change]) -> list[str]:
    """Payloads for one flush: "o" wakes outboxes; "c:12", "e:4", "w:7" are changes (a
    conversation, an escalation, a web chat)."""
    items = (["o"] if outbox else []) + [f"{c.kind[0]}:{c.id}" for c in changes
                                         if c.kind in ("conversation", "escalation", "web")]
    payloads, current = [], ""
    for item in items:
        if current and len(current) + len(item) + 1 > MAX_PAYLOAD:
            payloads.append(current)
            current = ""
        current = f"{current},{item}" if current else item
    if current:
        payloads.append(current)
    return payloads


def decode(payload: str) -> tuple[bool, list[Change]]:
    outbox, changes = False, []
    kinds = {"c": "conversation", "e": "escalation", "w": "web"}
    for item in payload.split(","):
        if item == "o":
            outbox = True
            continue
        kind, _, number = item.partition(":")
        if kind in kinds and number.isdigit():
            changes.append(Change(kinds[kind], int(number)))
    return outbox, changes


class PostgresRelay:
    """Set as `notifier.relay`; `run()` is a task for the life of the process."""

    def __init__(self, notifier: Notifier, dsn: str, channel: str = CHANNEL) -> None:
        self._notifier = notifier
        self._dsn = dsn
        self._channel = channel
        self._outbox = False
        self._changes: dict[Change, None] = {}  # ordered, without repeats
        self._pending = asyncio.Event()
        self._connection: asyncpg.Connection | None = None
        self.connected = False

    # Called by the Notifier after a local commit (sync: it only marks what to send).
    def outbox(self) -> None:
        self._outbox = True
        self._pending.set()

    def changed(self, change: Change) -> None:
        self._changes[change] = None
        self._pending.set()

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._connect()
                backoff = 1.0
                await self._send_forever()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("notify_relay_down", extra={"error": type(exc).__name__})
            finally:
                await self._close()
            # Whatever was said while the connection was down may be lost: read again.
            self._notifier.changed(RESYNC, relay=False)
            self._notifier.outbox(relay=False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    async def _connect(self) -> None:
        # Kept before LISTEN is sent, so that run()'s _close() closes it even if the task is
        # cancelled (the process stopping) while it is being sent.
        self._connection = await asyncpg.connect(self._dsn, timeout=10)
        await self._connection.add_listener(self._channel, self._heard)
        self.connected = True
        log.info("notify_relay_listening")

    async def _send_forever(self) -> None:
        conn = self._connection
        assert conn is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SAFETY_NET_SECONDS):
                    await self._pending.wait()
            if conn.is_closed():
                raise asyncpg.InterfaceError("listen connection closed")
            if not self._pending.is_set():
                self._notifier.changed(RESYNC, relay=False)
                continue
            self._pending.clear()
            outbox, changes = self._outbox, list(self._changes)
            self._outbox, self._changes = False, {}
            for payload in encode(outbox, changes):
                await conn.execute("SELECT pg_notify($1, $2)", self._channel, payload)

    def _heard(self, conn: object, pid: int, channel: str, payload: str) -> None:
        own = self._connection
        if own is not None and pid == own.get_server_pid():
            return  # our own, already told in this process
        outbox, changes = decode(payload)
        if outbox:
            self._notifier.outbox(relay=False)
        if changes:
            self._notifier.changed(*changes, relay=False)

    async def _close(self) -> None:
        self.connected = False
        conn, self._connection = self._connection, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

"""Benchmark of GET /metrics against a database holding N conversations.

Run from the repository root with the project's virtualenv:

    .venv/bin/python -m bench.metrics                      # 100,000 conversations, SQLite
    .venv/bin/python -m bench.metrics --quick              # 10,000, a few seconds
    .venv/bin/python -m bench.metrics --open-share 1       # every conversation waiting
    .venv/bin/python -m bench.metrics --without-index      # ix_conversations_waiting dropped
    .venv/bin/python -m bench.metrics --database-url postgresql+asyncpg://.../db

It seeds the database (`seed`, plain bulk inserts: contacts, conversations, their first
replies in the outbox, escalations with their pages, and a small backlog), starts
`python -m bot run` on it in a subprocess, and times --scrapes sequential scrapes from
loopback after a warm-up: p50, p95 and max, against the target p95 <= 50 ms. Every scrape
reads the database's figures afresh, so each one pays the full price.

On PostgreSQL the database given is emptied first (every table truncated): give it one of
its own. The exit status is 0 whether the target passes or fails; non-zero only if
something crashed. A JSON summary is the last line of stdout, or goes to --json PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
if str(ROOT) not in sys.path:  # `python bench/metrics.py` puts bench/ first instead
    sys.path.insert(0, str(ROOT))

from bench.escalation import stop, wait_healthy  # noqa: E402
from bench.inbound import json_safe, load_average, machine, percentile, relay_log  # noqa: E402
from bot.crypto import generate_key  # noqa: E402
from bot.domain import (  # noqa: E402
    Channel,
    ConversationStatus,
    EscalationStatus,
    IntakeState,
    OutboxKind,
    OutboxStatus,
)
from bot.storage.database import ensure_schema  # noqa: E402
from bot.storage.models import Base, Contact, Conversation, Escalation, Outbox  # noqa: E402
from tests.fixtures import set_config_keys  # noqa: E402
from tests.subprocesses import free_port, service_env  # noqa: E402

P95_TARGET_MS = 50.0
CHUNK = 5000  # rows per INSERT batch
CHANNELS = (Channel.SMS, Channel.TELEGRAM, Channel.WEB)
ESCALATION_EVERY = 50  # one conversation in 50 was an emergency
BACKLOG = 25  # SMS replies queued (SMS is off in the bench service, so they stay queued)
WARMUP = 10


# --- the data ------------------------------------------------------------------------------


async def seed(engine: AsyncEngine, conversations: int, open_share: float) -> dict[str, int]:
    """N conversations over the past 90 days, each with its contact and its first reply
    (sent); `open_share` of them open and waiting for staff, the rest closed and answered;
    one in ESCALATION_EVERY an emergency with one page, the newest few still open; and a
    small backlog of queued replies. Bodies and addresses are placeholders: /metrics reads
    neither. Swap for bench/seed.py when it lands: only the row counts matter here."""
    now = datetime.now(UTC)
    opened = [now - timedelta(minutes=(conversations - i) * 90 * 24 * 60 / conversations)
              for i in range(conversations)]
    first_open = conversations - int(conversations * open_share)
    async with engine.begin() as conn:
        for start in range(0, conversations, CHUNK):
            ids = range(start + 1, min(start + CHUNK, conversations) + 1)
            await conn.execute(insert(Contact), [
                {"id": i, "channel": CHANNELS[i % 3], "address_enc": "x", "language": "en",
                 "address_hash": hashlib.sha256(b"%d" % i).hexdigest(), "opted_out": False,
                 "created_at": opened[i - 1]} for i in ids])
            await conn.execute(insert(Conversation), [_conversation(i, opened[i - 1],
                                                                    i > first_open)
                                                      for i in ids])
            await conn.execute(insert(Outbox), [
                _outbox(i, CHANNELS[i % 3], OutboxKind.REPLY, OutboxStatus.SENT, opened[i - 1],
                        conversation_id=i) for i in ids])
        emergencies = list(range(ESCALATION_EVERY, conversations + 1, ESCALATION_EVERY))
        for start in range(0, len(emergencies), CHUNK):
            batch = emergencies[start:start + CHUNK]
            await conn.execute(insert(Escalation), [
                _escalation(n, i, opened[i - 1], i > first_open) for n, i in
                enumerate(batch, start=start + 1)])
            await conn.execute(insert(Outbox), [
                _outbox(conversations + n, CHANNELS[0], OutboxKind.PAGE, OutboxStatus.DELIVERED,
                        opened[i - 1], escalation_id=n)
                for n, i in enumerate(batch, start=start + 1)])
        queued = conversations + len(emergencies)
        await conn.execute(insert(Outbox), [
            _outbox(queued + j, Channel.SMS, OutboxKind.REPLY, OutboxStatus.PENDING, now,
                    conversation_id=conversations - j) for j in range(1, BACKLOG + 1)])
    return {"conversations": conversations, "open": conversations - first_open,
            "escalations": len(emergencies), "outbox": queued + BACKLOG}


def _conversation(i: int, opened: datetime, waiting: bool) -> dict[str, Any]:
    return {
        "id": i, "contact_id": i, "channel": CHANNELS[i % 3],
        "status": ConversationStatus.OPEN if waiting else ConversationStatus.CLOSED,
        "intake_state": IntakeState.DONE, "emergency": i % ESCALATION_EVERY == 0,
        "priority": 0, "opened_at": opened, "last_inbound_at": opened,
        "awaiting_since": opened if waiting else None,
        "first_staff_reply_at": None if waiting else opened + timedelta(minutes=20),
        "closed_at": None if waiting else opened + timedelta(hours=1),
        "outcome": None if waiting else "information_given",
    }


def _outbox(row_id: int, channel: str, kind: str, status: str, at: datetime,
            **links: int) -> dict[str, Any]:
    sent = status != OutboxStatus.PENDING
    return {"id": row_id, "channel": channel, "kind": kind, "status": status, "attempts": 1,
            "address_hash": hashlib.sha256(b"o%d" % row_id).hexdigest(),
            "address_enc": None if sent else "x", "body_enc": None if sent else "x",
            "next_attempt_at": at, "created_at": at, "updated_at": at,
            "sent_at": at if sent else None, "provider_id": f"SM{row_id:032x}" if sent else None,
            **links}


def _escalation(n: int, conversation: int, opened: datetime, live: bool) -> dict[str, Any]:
    # A live one has paged its whole ladder (no next step), so no sweep pages anyone here.
    return {"id": n, "conversation_id": conversation, "channel": CHANNELS[conversation % 3],
            "trigger": "keyword", "step": 3, "opened_at": opened, "next_step_at": None,
            "status": EscalationStatus.OPEN if live else EscalationStatus.RESOLVED,
            "acked_at": None if live else opened + timedelta(minutes=3),
            "resolved_at": None if live else opened + timedelta(minutes=30)}


async def prepare(url: str, conversations: int, open_share: float,
                  without_index: bool) -> dict[str, int]:
    engine = create_async_engine(url)
    try:
        await ensure_schema(engine)
        if not url.startswith("sqlite"):
            async with engine.begin() as conn:
                tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
                await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        counts = await seed(engine, conversations, open_share)
        async with engine.begin() as conn:
            if without_index:
                await conn.execute(text("DROP INDEX ix_conversations_waiting"))
        # As autovacuum would have by now; on PostgreSQL it also sets the visibility map,
        # without which an index-only scan visits every row anyway.
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE" if url.startswith("sqlite") else "VACUUM ANALYZE"))
        return counts
    finally:
        await engine.dispose()


# --- the service and the scrapes ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def service(session: aiohttp.ClientSession, folder: Path,
                  url: str) -> AsyncIterator[str]:
    port = free_port()
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    config = folder / "config.toml"
    config.write_text(set_config_keys(example, {
        "server": {"port": port, "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": url},
    }), encoding="utf-8")
    log_path = folder / "service.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--config", str(config), cwd=folder,
            env=service_env(generate_key(), log_level="WARNING"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(session, base, proc)
        yield base
    finally:
        await stop(proc)
        relay_log("service", log_path)


async def scrape_times(session: aiohttp.ClientSession, base: str, scrapes: int) -> list[float]:
    times = []
    for i in range(WARMUP + scrapes):
        started = time.perf_counter()
        async with session.get(f"{base}/metrics") as response:
            body = await response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200 or b"triage_contacts_waiting{" not in body:
            raise RuntimeError(f"scrape {i} answered {response.status}: {body[:200]!r}")
        if i >= WARMUP:
            times.append(elapsed * 1000)
    return times


async def bench(opts: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        folder = Path(tmp)
        url = opts.database_url or f"sqlite+aiosqlite:///{folder / 'triage.db'}"
        started = time.perf_counter()
        counts = await prepare(url, opts.conversations, opts.open_share, opts.without_index)
        seeded = time.perf_counter() - started
        async with aiohttp.ClientSession() as session, service(session, folder, url) as base:
            times = await scrape_times(session, base, opts.scrapes)
    p95 = percentile(times, 95)
    return {
        "database": "sqlite" if url.startswith("sqlite") else "postgresql",
        "seeded": counts, "seed_seconds": round(seeded, 1), "index": not opts.without_index,
        "scrapes": len(times), "p50_ms": percentile(times, 50), "p95_ms": p95,
        "max_ms": max(times), "target_p95_ms": P95_TARGET_MS, "ok": p95 <= P95_TARGET_MS,
        "load_before": load_before, "load_after": load_average(), "machine": machine(),
    }


def report(result: dict[str, Any]) -> str:
    seeded = result["seeded"]
    return "\n".join([
        f"GET /metrics on {result['database']}: {seeded['conversations']:,} conversations "
        f"({seeded['open']:,} waiting), {seeded['escalations']:,} escalations, "
        f"{seeded['outbox']:,} outbox rows; index ix_conversations_waiting "
        f"{'present' if result['index'] else 'dropped'}",
        f"  {result['scrapes']} scrapes: p50 {result['p50_ms']:.1f} ms, "
        f"p95 {result['p95_ms']:.1f} ms, max {result['max_ms']:.1f} ms "
        f"(target p95 <= {result['target_p95_ms']:.0f} ms: "
        f"{'ok' if result['ok'] else 'MISSED'})",
        f"  load average {result['load_before']} before, {result['load_after']} after; "
        f"seeding took {result['seed_seconds']} s",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--open-share", type=float, default=0.05,
                        help="share of conversations open and waiting (default 0.05)")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--without-index", action="store_true",
                        help="drop ix_conversations_waiting, to see what it is for")
    parser.add_argument("--database-url", help="PostgreSQL (emptied first!); default SQLite")
    parser.add_argument("--quick", action="store_true", help="10,000 conversations, 50 scrapes")
    parser.add_argument("--json", type=Path, help="write the JSON summary here")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.conversations, opts.scrapes = 10_000, 50
    if not 0 <= opts.open_share <= 1 or opts.conversations < ESCALATION_EVERY:
        parser.error("--open-share is 0..1 and --conversations at least 50")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    result = asyncio.run(bench(opts))
    print(report(result))
    summary = json.dumps(json_safe(result))
    if opts.json:
        opts.json.write_text(summary + "\n")
    else:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

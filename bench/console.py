"""Benchmark of the staff console on a full database: page render times, and how fast a new
conversation reaches staff who have the queue open.

Run from the repository root with the project's virtualenv:

    .venv/bin/python -m bench.console            # 100,000 conversations, 1,000,000 messages
    .venv/bin/python -m bench.console --quick    # 5,000 and 50,000, fewer requests

The seeded database (bench/seed.py) is kept in --seeded (default: the temp folder, named
for its size) with its key beside it, and reused by later runs; each run works on a copy.

One run measures, against the real service in a subprocess (`--serve`, as bench/inbound.py
does) on that SQLite copy, with a staff account made by `python -m bot staff add`:

1. server-side render time of queue pages (every tab, deep pages of the long ones, the
   fragments the live page fetches) and of conversation pages (numbers drawn at random;
   the longest conversations reported apart), one request at a time. Server-side is the
   console's `Server-Timing: app;dur=` header: from the session lookup to the rendered
   page, network excluded. Targets: p95 <= 50 ms each;
2. live updates: --browsers staff signed in, each with its own session, holding the live
   stream (/console/events) open; then --arrivals first contacts by signed Twilio webhook,
   one at a time. For each browser and arrival: when the stream announced the new
   conversation ("event"), and when the browser, doing what static/console.js does
   (wait its 250 ms debounce, fetch the waiting tab's rows), had it on screen ("shown").
   Both from just before the webhook was posted. Target: p99 <= 1 s.

The server's clock starts at the seed's `now`, Monday 10:00 in Chicago (inside business
hours), and runs on in real time. Everything stays on 127.0.0.1. The exit status is 0
whether the targets pass or fail; a JSON summary is printed last (or written to --json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import text

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.inbound import (  # noqa: E402
    CLOCKS,
    INBOUND_PATH,
    PUBLIC_URL,
    MovingClock,
    WebhookFactory,
    example_config,
    json_safe,
    load_average,
    machine,
    percentile,
    process_cpu_seconds,
    relay_log,
    stop_process,
    verdict,
    wait_for_stop,
)
from bench.seed import fresh_numbers, seed  # noqa: E402
from bot.app import create_app  # noqa: E402
from bot.config import parse_settings  # noqa: E402
from bot.crypto import Cipher, generate_key  # noqa: E402
from bot.storage.database import make_engine, run_in_transaction  # noqa: E402
from handlers import staff_admin  # noqa: E402
from tests.fakes.twilio_api import FakeTwilio  # noqa: E402
from tests.fixtures import ACCOUNT_SID, AUTH_TOKEN, OUR_NUMBER, deep_merge  # noqa: E402

START_NOW = CLOCKS["open"].start  # Monday 10:00 in Chicago, inside office hours

PASSWORD = "bench console password 01"  # a bench account on a throwaway copy
READER = "bench-reader"
RENDER_P95_TARGET_MS = 50.0
LIVE_P99_TARGET_MS = 1000.0
DEBOUNCE = 0.25  # static/console.js waits this long after a change before it fetches
START_TIMEOUT = 120.0
REQUEST_TIMEOUT = 30.0
ARRIVAL_TIMEOUT = 10.0  # a browser that has not seen an arrival by then counts as missed
CLAIMED_BY_READER = 15  # the reader's own conversations, so "Mine" is not empty
NUMBERS = re.compile(r'data-numbers="([^"]*)"')
SERVER_TIMING = re.compile(r"app;dur=([0-9.]+)")


# --- the server under test (a subprocess) -----------------------------------------------------


def server_raw_settings(workdir: Path, twilio_url: str) -> dict[str, Any]:
    return deep_merge(example_config(), {
        "server": {"public_url": PUBLIC_URL},
        "database": {"url": f"sqlite+aiosqlite:///{workdir / 'triage.db'}"},
        "sms": {"enabled": True, "account_sid": ACCOUNT_SID, "from_number": OUR_NUMBER,
                "api_base_url": twilio_url, "max_per_second": 1000},
        "telegram": {"enabled": False},
        # The seeded on-call accounts take turns, so no page shows the rota-gap banner.
        "oncall": {"rotation": [f"seed-oncall-{i:02d}" for i in range(1, 9)]},
    })


def secrets_env(key: str) -> dict[str, str]:
    return {"TRIAGE_ENCRYPTION_KEY": key, "TRIAGE_SESSION_SECRET": "bench-session-secret",
            "TRIAGE_SMS_AUTH_TOKEN": AUTH_TOKEN}


async def serve(workdir: Path, twilio_url: str, now: datetime) -> None:
    raw = server_raw_settings(workdir, twilio_url)
    environ = {name: os.environ[name] for name in secrets_env("")}
    settings = parse_settings(raw, environ, base_dir=workdir)
    app = create_app(settings, MovingClock(now))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"READY {runner.addresses[0][1]}", flush=True)
        await wait_for_stop()
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Server:
    pid: int
    origin: str


@contextlib.asynccontextmanager
async def server_process(workdir: Path, twilio_url: str, key: str,
                         now: datetime) -> AsyncIterator[Server]:
    log_path = workdir / "server.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(THIS_FILE), "--serve", "--workdir", str(workdir),
            "--twilio-url", twilio_url, "--now", now.isoformat(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_file,
            cwd=ROOT, env={**os.environ, **secrets_env(key)},
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        if not line.startswith(b"READY "):
            raise RuntimeError(f"console server did not start: {line!r}")
        yield Server(proc.pid, f"http://127.0.0.1:{int(line.split()[1])}")
    finally:
        await stop_process(proc)
        relay_log("console server", log_path)
        if log_path.stat().st_size:  # the work folder goes: keep the whole log
            kept = Path(tempfile.gettempdir()) / "bench-console-server.log"
            shutil.copyfile(log_path, kept)
            print(f"[console server] whole log: {kept}", file=sys.stderr)


# --- the seeded database ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    path: Path
    key: str
    now: datetime
    conversations: int
    messages: int


def _kept(path: Path, conversations: int, messages: int) -> Seeded | None:
    """The database seeded earlier at `path`, if it is there and of this size; else
    whatever is left of it is removed."""
    meta_path = path.with_suffix(".json")
    with contextlib.suppress(OSError, ValueError, KeyError):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if path.exists() and (meta["conversations"], meta["messages"]) == (conversations,
                                                                          messages):
            return Seeded(path, meta["key"], datetime.fromisoformat(meta["now"]),
                          conversations, messages)
    for stale in (path, meta_path, *path.parent.glob(path.name + "-*")):
        stale.unlink(missing_ok=True)
    return None


async def seeded(path: Path, conversations: int, messages: int) -> Seeded:
    """The seeded database at `path`, made first if it is not there (or not this size)."""
    kept = _kept(path, conversations, messages)
    if kept is not None:
        return kept
    meta_path = path.with_suffix(".json")
    key = generate_key()  # a throwaway key for fictional data, kept beside the file
    print(f"seeding {conversations} conversations, {messages} messages into {path} ...",
          file=sys.stderr, flush=True)
    done = await seed(f"sqlite+aiosqlite:///{path}", key, conversations, messages, START_NOW)
    print(f"seeded in {done.seconds:.0f} s", file=sys.stderr, flush=True)
    meta_path.write_text(json.dumps({"key": key, "now": START_NOW.isoformat(),
                                     "conversations": conversations, "messages": messages}),
                         encoding="utf-8")
    return Seeded(path, key, START_NOW, conversations, messages)


def working_copy(source: Seeded, workdir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        origin = Path(str(source.path) + suffix)
        if origin.exists():
            shutil.copyfile(origin, workdir / f"triage.db{suffix}")


async def cli(key: str, stdin: str, *args: str) -> None:
    """`python -m bot ARGS`, with `stdin` as its input."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
        env={**os.environ, **secrets_env(key)},
    )
    out, _ = await proc.communicate(stdin.encode())
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {out.decode(errors='replace')}")


async def add_accounts(workdir: Path, key: str, browsers: int) -> None:
    """The reader through the command line, as an admin would; the browsers' accounts with
    the same handler the command line calls, in one transaction (one process start, not 50).
    """
    config = workdir / "config.toml"  # the example, pointed at the copy
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    database = f'url = "sqlite+aiosqlite:///{workdir / "triage.db"}"'
    config.write_text(re.sub(r"^url = .*$", database, example, count=1, flags=re.MULTILINE),
                      encoding="utf-8")
    # A database seeded by an older checkout is brought up to date, as an operator would.
    await cli(key, "", "db", "upgrade", "--config", str(config))
    await cli(key, PASSWORD + "\n", "staff", "add", READER, "--role", "staff",
              "--config", str(config))
    cipher = Cipher.from_env_value(key)
    password_hash = staff_admin.new_password_hash(PASSWORD)
    now = START_NOW

    def unit(session: Any) -> None:
        for i in range(browsers):
            new = staff_admin.check_new_staff(f"bench-browser-{i + 1:02d}", "staff")
            staff_admin.add_staff(session, cipher, new, password_hash, staff_admin.CLI, now)

    engine = make_engine(f"sqlite+aiosqlite:///{workdir / 'triage.db'}")
    try:
        await run_in_transaction(engine, unit)
    finally:
        await engine.dispose()


# --- a browser --------------------------------------------------------------------------------


@dataclass
class Browser:
    """One staff member's browser: its own connections and cookies. The console's cookies
    are Secure (public_url is https) and the bench speaks plain http on loopback, so they
    are kept by hand, as tests/console_helpers.py does."""

    origin: str
    http: aiohttp.ClientSession
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""

    def headers(self) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {"Accept": "text/html", "Cookie": cookie,
                "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}

    def remember(self, response: aiohttp.ClientResponse) -> None:
        for header in response.headers.getall("Set-Cookie", []):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                self.cookies[name] = morsel.value

    async def get(self, path: str) -> tuple[int, str, float | None]:
        """Status, body and the server's own time for the request (ms)."""
        async with self.http.get(self.origin + path, headers=self.headers(),
                                 allow_redirects=False) as response:
            self.remember(response)
            body = await response.text()
            found = SERVER_TIMING.search(response.headers.get("Server-Timing", ""))
            return response.status, body, float(found.group(1)) if found else None

    async def post(self, path: str, form: dict[str, str]) -> int:
        async with self.http.post(self.origin + path, data={**form, "csrf_token": self.csrf},
                                  headers=self.headers(), allow_redirects=False) as response:
            self.remember(response)
            await response.read()
            return response.status

    async def sign_in(self, username: str) -> None:
        _, page, _ = await self.get("/console/login")
        self.csrf = _csrf(page)
        status = await self.post("/console/login", {"username": username,
                                                    "password": PASSWORD, "next": "/console"})
        if status != 303:
            raise RuntimeError(f"sign-in as {username} answered {status}")
        status, page, _ = await self.get("/console")
        if status != 200:
            raise RuntimeError(f"queue after sign-in answered {status}")
        self.csrf = _csrf(page)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if not found:
        raise RuntimeError("no CSRF token on the page")
    return found.group(1)


def _numbers(rows: str) -> list[int]:
    found = NUMBERS.search(rows)
    return [int(n.rstrip("!")) for n in found.group(1).split()] if found else []


# --- 1. render times --------------------------------------------------------------------------


@dataclass
class Timings:
    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    errors: int = 0
    by_path: dict[str, list[float]] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0  # the server process's, over the timed requests

    def summary(self) -> dict[str, Any]:
        paths = sorted(((percentile(v, 50), max(v), k) for k, v in self.by_path.items()),
                       reverse=True)
        return {
            "requests": len(self.server_ms) + self.errors,
            "errors": self.errors,
            "p50_ms": round(percentile(self.server_ms, 50), 2),
            "p95_ms": round(percentile(self.server_ms, 95), 2),
            "max_ms": round(max(self.server_ms, default=math.nan), 2),
            "client_p95_ms": round(percentile(self.client_ms, 95), 2),
            # One request at a time, so this is each request's own CPU (and the service's
            # background work), which other load on the machine skews least.
            "server_cpu_ms_per_request": round(
                1000 * self.server_cpu_seconds / max(1, len(self.server_ms)), 2),
            "slowest_p50": [(k, round(p50, 1), round(top, 1)) for p50, top, k in paths[:6]],
        }


@contextlib.contextmanager
def server_cpu(pid: int, out: Timings) -> Iterator[None]:
    before = process_cpu_seconds(pid)
    try:
        yield
    finally:
        out.server_cpu_seconds += process_cpu_seconds(pid) - before


async def timed(browser: Browser, path: str, out: Timings, label: str | None = None) -> str:
    started = time.perf_counter()
    status, body, server = await browser.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200 or server is None:
        out.errors += 1
        return body
    out.server_ms.append(server)
    out.client_ms.append(elapsed)
    out.by_path.setdefault(label or path, []).append(server)
    return body


async def queue_paths(browser: Browser) -> list[str]:
    """Every tab, the fragments the live page fetches, and pages deep into the long tabs
    (followed through each page's own "older" link, as a person would)."""
    paths = [f"{base}?tab={tab}" for base in ("/console", "/console/queue/rows")
             for tab in ("waiting", "mine", "open", "emergencies", "closed")]
    for tab, depth in (("open", 10), ("closed", 60)):
        path = f"/console?tab={tab}"
        for page in range(depth):
            _, body, _ = await browser.get(path)
            found = re.search(r'href="(/console\?tab=[a-z]+&amp;after=[^"]+)"', body)
            if not found:
                break
            path = found.group(1).replace("&amp;", "&")
            if page in (1, 4, 9, 29, 59):
                paths.append(path)
    return paths


async def measure_renders(browser: Browser, pid: int, seeded_db: Seeded, requests: int,
                          rng: random.Random) -> dict[str, Any]:
    queue = Timings()
    paths = await queue_paths(browser)
    closed = [f"/console?tab=closed&number={rng.randint(1, seeded_db.conversations)}"
              for _ in range(10)]
    paths += closed
    for path in paths:  # warm: the first request of each kind builds its statements
        await browser.get(path)
    with server_cpu(pid, queue):
        for i in range(requests):
            path = paths[i % len(paths)]
            await timed(browser, path, queue, label=re.sub(r"number=\d+", "number=N", path))
    conversations = Timings()
    numbers = [rng.randint(1, seeded_db.conversations) for _ in range(requests)]
    for number in numbers[:10]:
        await browser.get(f"/console/conversations/{number}")
    with server_cpu(pid, conversations):
        for number in numbers:
            await timed(browser, f"/console/conversations/{number}", conversations,
                        label="/console/conversations/N")
    return {"queue": queue.summary(), "queue_paths": len(paths),
            "conversation": conversations.summary()}


async def measure_longest(browser: Browser, pid: int, workdir: Path,
                          count: int) -> dict[str, Any]:
    """The longest conversations, apart: a random draw rarely hits one."""
    engine = make_engine(f"sqlite+aiosqlite:///{workdir / 'triage.db'}")
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT conversation_id, count(*) FROM messages GROUP BY conversation_id "
                "ORDER BY count(*) DESC LIMIT :n"), {"n": count})).all()
    finally:
        await engine.dispose()
    out = Timings()
    for number, _ in rows:
        await browser.get(f"/console/conversations/{number}")
        with server_cpu(pid, out):
            await timed(browser, f"/console/conversations/{number}", out)
    return {**out.summary(), "messages": [n for _, n in rows]}


# --- 2. live updates --------------------------------------------------------------------------


@dataclass
class Watcher:
    """A browser with the queue open: its live stream, and what it saw of each arrival."""

    browser: Browser
    stream: aiohttp.ClientResponse | None = None
    event_at: dict[int, float] = field(default_factory=dict)  # conversation -> when
    shown_at: dict[int, float] = field(default_factory=dict)
    gave_up: set[int] = field(default_factory=set)
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # shared: one is done
    fetches: set[asyncio.Task[None]] = field(default_factory=set)

    async def open(self) -> None:
        self.stream = await self.browser.http.get(
            self.browser.origin + "/console/events",
            headers={**self.browser.headers(), "Accept": "text/event-stream"},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        if self.stream.status != 200:
            raise RuntimeError(f"events answered {self.stream.status}")
        async for kind, _ in self.events():
            if kind == "ready":
                return

    async def events(self) -> AsyncIterator[tuple[str, str]]:
        assert self.stream is not None
        kind, data = "message", ""
        async for raw in self.stream.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                yield kind, data
                kind, data = "message", ""
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()

    async def listen(self, first_new: int) -> None:
        async for kind, data in self.events():
            if kind != "change":
                continue
            change = json.loads(data)
            number = change.get("id")
            if change.get("kind") == "conversation" and isinstance(number, int) \
                    and number >= first_new and number not in self.event_at:
                self.event_at[number] = time.monotonic()
                task = asyncio.create_task(self.show(number))
                self.fetches.add(task)
                task.add_done_callback(self.fetches.discard)

    async def show(self, number: int) -> None:
        """What the queue page does on a change: wait out its debounce, fetch the rows.
        The change is announced after the commit, so the rows hold it or it is missed."""
        await asyncio.sleep(DEBOUNCE)
        status, rows, _ = await self.browser.get("/console/queue/rows?tab=waiting")
        if status == 200 and number in _numbers(rows):
            self.shown_at[number] = time.monotonic()
        else:
            self.gave_up.add(number)
        self.progress.set()

    def done(self, number: int) -> bool:
        return number in self.shown_at or number in self.gave_up


@dataclass
class Live:
    event_ms: list[float] = field(default_factory=list)
    shown_ms: list[float] = field(default_factory=list)
    missed_events: int = 0
    missed_shown: int = 0
    webhook_errors: int = 0
    server_cpu_seconds: float = 0.0
    seconds: float = 0.0

    def summary(self, browsers: int, arrivals: int) -> dict[str, Any]:
        return {
            "browsers": browsers, "arrivals": arrivals,
            "samples": len(self.shown_ms), "missed_events": self.missed_events,
            "missed_shown": self.missed_shown, "webhook_errors": self.webhook_errors,
            "event_p50_ms": round(percentile(self.event_ms, 50), 1),
            "event_p99_ms": round(percentile(self.event_ms, 99), 1),
            "event_max_ms": round(max(self.event_ms, default=math.nan), 1),
            "shown_p50_ms": round(percentile(self.shown_ms, 50), 1),
            "shown_p99_ms": round(percentile(self.shown_ms, 99), 1),
            "shown_max_ms": round(max(self.shown_ms, default=math.nan), 1),
            "server_cpu_ms_per_arrival": round(1000 * self.server_cpu_seconds / max(1, arrivals),
                                               1),
        }


async def measure_live(server: Server, browsers: int, arrivals: int, first_new: int,
                       sessions: list[aiohttp.ClientSession]) -> Live:
    progress = asyncio.Event()
    watchers = [Watcher(Browser(server.origin, http), progress=progress) for http in sessions]
    for w, i in zip(watchers, range(browsers), strict=True):
        await w.browser.sign_in(f"bench-browser-{i + 1:02d}")
    await asyncio.gather(*(w.open() for w in watchers))
    listeners = [asyncio.create_task(w.listen(first_new)) for w in watchers]
    out = Live()
    factory = WebhookFactory()
    hook_url = server.origin + INBOUND_PATH
    cpu = process_cpu_seconds(server.pid)
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as twilio:
            for k, number in enumerate(fresh_numbers(arrivals)):
                expected = first_new + k
                hook = factory.make(number)
                sent = time.monotonic()
                async with twilio.post(hook_url, data=hook.body, headers=hook.headers) as r:
                    await r.read()
                    if r.status != 200:
                        out.webhook_errors += 1
                # The watchers time themselves; this only waits for them all to be done.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ARRIVAL_TIMEOUT):
                        while not all(w.done(expected) for w in watchers):
                            progress.clear()
                            await progress.wait()
                for w in watchers:
                    if expected in w.event_at:
                        out.event_ms.append((w.event_at[expected] - sent) * 1000)
                    else:
                        out.missed_events += 1
                    if expected in w.shown_at:
                        out.shown_ms.append((w.shown_at[expected] - sent) * 1000)
                    else:
                        out.missed_shown += 1
                await asyncio.sleep(0.5)  # let the bot's reply and its receipts settle
    finally:
        out.seconds = time.monotonic() - started
        out.server_cpu_seconds = process_cpu_seconds(server.pid) - cpu
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for w in watchers:
            if w.stream is not None:
                w.stream.close()
    return out


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    conversations: int
    messages: int
    seeded: Path
    requests: int
    browsers: int
    arrivals: int
    longest: int


async def claim_some(reader: Browser, count: int) -> None:
    _, rows, _ = await reader.get("/console/queue/rows?tab=waiting")
    for number in _numbers(rows)[:count]:
        await reader.post(f"/console/conversations/{number}/claim", {})


async def bench(opts: Options) -> dict[str, Any]:
    load_before = load_average()
    seeded_db = await seeded(opts.seeded, opts.conversations, opts.messages)
    rng = random.Random(7)
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp_name:
            workdir = Path(tmp_name)
            working_copy(seeded_db, workdir)
            await add_accounts(workdir, seeded_db.key, opts.browsers)
            server_cm = server_process(workdir, fake.base_url, seeded_db.key, seeded_db.now)
            async with server_cm as server, contextlib.AsyncExitStack() as stack:
                timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
                sessions = [await stack.enter_async_context(aiohttp.ClientSession(
                    timeout=timeout)) for _ in range(opts.browsers + 1)]
                reader = Browser(server.origin, sessions[0])
                await reader.sign_in(READER)
                await claim_some(reader, CLAIMED_BY_READER)
                renders = await measure_renders(reader, server.pid, seeded_db, opts.requests,
                                                rng)
                longest = await measure_longest(reader, server.pid, workdir, opts.longest)
                live = await measure_live(server, opts.browsers, opts.arrivals,
                                          seeded_db.conversations + 1, sessions[1:])
    finally:
        await fake.close()
    live_summary = live.summary(opts.browsers, opts.arrivals)
    return {
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "data": {"conversations": opts.conversations, "messages": opts.messages},
        **renders,
        "longest_conversations": longest,
        "live": live_summary,
        "render_p95_target_ms": RENDER_P95_TARGET_MS,
        "queue_pass": renders["queue"]["p95_ms"] <= RENDER_P95_TARGET_MS
        and renders["queue"]["errors"] == 0,
        "conversation_pass": renders["conversation"]["p95_ms"] <= RENDER_P95_TARGET_MS
        and renders["conversation"]["errors"] == 0,
        "live_p99_target_ms": LIVE_P99_TARGET_MS,
        "live_pass": live_summary["shown_p99_ms"] <= LIVE_P99_TARGET_MS
        and live.missed_shown == 0 and live.webhook_errors == 0,
    }


def report(result: Mapping[str, Any]) -> str:
    m, q, c, big, live = (result["machine"], result["queue"], result["conversation"],
                          result["longest_conversations"], result["live"])

    def render_line(label: str, s: Mapping[str, Any], ok: bool | None) -> str:
        tail = f"  (target p95 <= {result['render_p95_target_ms']:g} ms)  {verdict(ok)}" \
            if ok is not None else ""
        return (f"{label}: p50 {s['p50_ms']:.1f} ms  p95 {s['p95_ms']:.1f} ms  "
                f"max {s['max_ms']:.1f} ms server-side  ({s['requests']} requests, "
                f"{s['errors']} errors; {s['server_cpu_ms_per_request']:.1f} ms server CPU "
                f"each; client-side p95 {s['client_p95_ms']:.1f} ms)" + tail)

    lines = [
        f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['date']}  "
        f"(load average {m['load_before']} before, {m['load_after']} after)",
        f"data: {result['data']['conversations']} conversations, "
        f"{result['data']['messages']} messages (bench/seed.py)",
        render_line("queue pages       ", q, result["queue_pass"]),
        "    slowest by p50 (path, p50, max): "
        + ", ".join(f"{k} {p50:g} {top:g}" for k, p50, top in q["slowest_p50"]),
        render_line("conversation pages", c, result["conversation_pass"]),
        render_line(f"{len(big['messages'])} longest convs  ", big, None)
        + f"  ({min(big['messages'], default=0)}-{max(big['messages'], default=0)} messages)",
        f"live: {live['browsers']} browsers, {live['arrivals']} new conversations: "
        f"stream event p50 {live['event_p50_ms']:.0f} ms p99 {live['event_p99_ms']:.0f} ms; "
        f"on screen (250 ms debounce + rows fetch) p50 {live['shown_p50_ms']:.0f} ms "
        f"p99 {live['shown_p99_ms']:.0f} ms max {live['shown_max_ms']:.0f} ms  "
        f"({live['samples']} samples, {live['missed_shown']} missed, "
        f"{live['server_cpu_ms_per_arrival']:.0f} ms server CPU per arrival)  "
        f"(target p99 <= {result['live_p99_target_ms']:g} ms)  {verdict(result['live_pass'])}",
    ]
    busiest = max(m["load_before"] or 0, m["load_after"] or 0)
    if m["cores"] and busiest > m["cores"]:
        lines.append(f"warning: load average {busiest} on {m['cores']} cores: other processes "
                     "took CPU from the server; the times are pessimistic")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.console",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int)
    parser.add_argument("--messages", type=int)
    parser.add_argument("--seeded", type=Path, help="the seeded database to use or make")
    parser.add_argument("--requests", type=int, help="timed requests per kind of page (300)")
    parser.add_argument("--browsers", type=int, default=50)
    parser.add_argument("--arrivals", type=int, help="new conversations while watched (50)")
    parser.add_argument("--longest", type=int, default=10, help="longest conversations timed")
    parser.add_argument("--quick", action="store_true",
                        help="5,000 conversations, 50,000 messages, 60 requests, 10 arrivals")
    parser.add_argument("--json", type=Path, help="write the JSON summary here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--twilio-url", help=argparse.SUPPRESS)
    parser.add_argument("--now", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = (5_000, 50_000, 60, 10)
    full = (100_000, 1_000_000, 300, 50)
    for name, default in zip(("conversations", "messages", "requests", "arrivals"),
                             quick if args.quick else full, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.seeded is None:
        args.seeded = Path(tempfile.gettempdir()) / (
            f"triage-bench-{args.conversations}c-{args.messages}m.db")
    if min(args.requests, args.browsers, args.arrivals, args.conversations) < 1:
        parser.error("--requests, --browsers, --arrivals and --conversations must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.serve:
        asyncio.run(serve(args.workdir, args.twilio_url, datetime.fromisoformat(args.now)))
        return 0
    opts = Options(args.conversations, args.messages, args.seeded, args.requests,
                   args.browsers, args.arrivals, args.longest)
    result = asyncio.run(bench(opts))
    print(report(result), flush=True)
    summary = json.dumps(json_safe(result))
    if args.json:
        args.json.write_text(summary + "\n", encoding="utf-8")
    else:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())


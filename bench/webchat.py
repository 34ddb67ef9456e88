"""Benchmark of the web chat: chat pages, as its script talks to the real service.

Run from the repository root with the project's virtualenv:

    .venv/bin/python -m bench.webchat            # full run, about two minutes
    .venv/bin/python -m bench.webchat --quick    # smoke check: 50 chats, 200 streams
    .venv/bin/python -m bench.webchat --json /tmp/webchat.json

One run measures, each phase on a fresh service and database:

1. chats at once: --chats chat pages (200) open a chat and its live stream
   (`GET /chat/api/stream`, server-sent events, as the page reads them), then each sends
   --messages messages (5), the next one --think seconds after the last reply arrived
   (5 s: quicker than people read a reply and type one; 200 chats then send about 40
   messages a second). Each message is one the bot answers ("hello", the intake answer
   "2", SAFE, ES, EN), and each answer shown is acknowledged with `/chat/api/read`, as
   the page does. Measured: from sending a message to the first reply
   arriving on that page's stream (target p99 <= 100 ms), and errors (target none);
2. open streams: --streams chats (1,000), each with a conversation and its stream open.
   Measured: the server's resident memory (VmRSS in /proc) before the chats opened and
   once all streams are open, divided by the number of streams (target <= 100 KB each);
   then, with all of them still open, a staff member signed in to the console sends
   --staff-replies replies (300) at --staff-rate per second (20) through the console's
   reply form, each to another chat: from posting the form to the reply arriving on that
   chat's stream (target p99 <= 200 ms), checked to reach the right page.

The service runs in a subprocess (`--serve`, started by this script) with config.example.toml
on SQLite in a temp dir, its clock starting on a Monday at 10:00 in Chicago (inside hours) and
running on from there. Only what a benchmark must change is changed: `[webchat]
max_sessions` (500 by default) is raised above --streams, and the server trusts X-Forwarded-For
from loopback (`[server] trusted_proxies`, as behind nginx), so each simulated browser can
give its own address (from the documentation range 2001:db8::/32) and the per-browser limits
count each one, as they would in production. A staff account is added in the serving process
once it has started. All traffic stays on 127.0.0.1.

The exit status is 0 whether the targets pass or fail (this is a measurement, not a test);
it is non-zero only if something crashed. A JSON summary is written to --json PATH, or else
printed as the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import re
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
# `python bench/webchat.py` puts bench/ first on sys.path rather than the repository root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.inbound import (  # noqa: E402
    PUBLIC_URL,
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
from bot.app import SERVICES, create_app  # noqa: E402
from bot.config import Settings, parse_settings  # noqa: E402
from bot.crypto import generate_key  # noqa: E402
from bot.storage.models import Staff  # noqa: E402
from handlers.staff_auth import hash_password  # noqa: E402
from tests.fixtures import deep_merge  # noqa: E402

# Each answered by the bot with exactly one reply, in this order, in a new conversation.
MESSAGES = ("hello", "2", "SAFE", "ES", "EN")
STAFF_USER = "dana"
STAFF_PASSWORD = "bench staff password 0123"  # a bench password, not a secret
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CHAT_P99_TARGET_MS = 100.0
STAFF_P99_TARGET_MS = 200.0
KB_PER_STREAM_TARGET = 100.0
START_TIMEOUT = 60.0
REPLY_TIMEOUT = 10.0  # a reply later than this counts as an error, not a sample
REQUEST_TIMEOUT = 30.0
IDLE_SECONDS = 5.0


# Monday 2026-11-30 10:00 in America/Chicago: inside the example config's business hours.
START_NOW = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)


# --- the service under test (run in a subprocess) ----------------------------------------------


class MondayClock:
    """The service's clock: Monday 10:00 in Chicago when it starts, then moving with real
    time, so the replies do not depend on when the bench runs."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def __call__(self) -> datetime:
        return START_NOW + timedelta(seconds=time.monotonic() - self._started)


def settings_for(db_dir: Path, max_sessions: int) -> Settings:
    overrides = {
        "server": {"public_url": PUBLIC_URL, "trusted_proxies": ["127.0.0.1/32"]},
        "database": {"url": f"sqlite+aiosqlite:///{db_dir / 'triage.db'}"},
        "sms": {"enabled": False},
        "telegram": {"enabled": False},
        "webchat": {"max_sessions": max_sessions},
    }
    environ = {"TRIAGE_ENCRYPTION_KEY": generate_key(),
               "TRIAGE_SESSION_SECRET": "bench-session-secret"}
    return parse_settings(deep_merge(example_config(), overrides), environ, base_dir=db_dir)


async def serve(db_dir: Path, max_sessions: int) -> None:
    clock = MondayClock()
    app = create_app(settings_for(db_dir, max_sessions), clock)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        services = app[SERVICES]
        password_hash = hash_password(STAFF_PASSWORD)

        def add_staff(session: Any) -> None:
            session.add(Staff(username=STAFF_USER, role="staff", password_hash=password_hash,
                              disabled=False, created_at=clock()))

        await services.writer.run(add_staff)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"READY {runner.addresses[0][1]}", flush=True)
        await wait_for_stop()
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Server:
    pid: int
    base: str


@contextlib.asynccontextmanager
async def server_process(workdir: Path, max_sessions: int) -> AsyncIterator[Server]:
    log_path = workdir / "server.log"
    with new_log(log_path) as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(THIS_FILE), "--serve", "--db-dir", str(workdir),
            "--max-sessions", str(max_sessions),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_file,
            cwd=ROOT,
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        if not line.startswith(b"READY "):
            raise RuntimeError(f"the service did not start: {line!r}")
        yield Server(proc.pid, f"http://127.0.0.1:{int(line.split()[1])}")
    finally:
        await stop_process(proc)
        relay_log(f"service in {workdir.name}", log_path)


def new_log(path: Path) -> IO[bytes]:
    path.parent.mkdir()
    return path.open("wb")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# --- a chat page, as its script talks to the service ---------------------------------------------


@dataclass
class Errors:
    count: int = 0
    first: str | None = None

    def add(self, what: str) -> None:
        self.count += 1
        self.first = self.first or what


class Chat:
    """One page: its token in memory, its stream read by a task, replies handed to whoever
    waits for the next one."""

    def __init__(self, http: aiohttp.ClientSession, base: str, n: int, errors: Errors) -> None:
        self.http = http
        self.base = base
        self.errors = errors
        # Its own address, as a proxy in front would pass it on (documentation range).
        self.headers = {"X-Forwarded-For": f"2001:db8::{n + 1:x}"}
        self.sent = 0
        self.replies: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.reading: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.acks: set[asyncio.Task[None]] = set()

    async def post(self, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        async with self.http.post(self.base + path, json=body, headers=self.headers) as r:
            return r.status, await r.json()

    async def open(self) -> None:
        status, data = await self.post("/chat/api/session", {"lang": "en"})
        if status != 200:
            raise RuntimeError(f"opening a chat: HTTP {status} {data}")
        self.headers["X-Chat-Token"] = data["token"]
        self.reading = asyncio.create_task(self._read())
        await asyncio.wait_for(self.ready.wait(), REQUEST_TIMEOUT)

    async def _read(self) -> None:
        try:
            async with self.http.get(self.base + "/chat/api/stream?after=0",
                                     headers={**self.headers, "Accept": "text/event-stream"},
                                     timeout=aiohttp.ClientTimeout(total=None)) as r:
                if r.status != 200:
                    self.errors.add(f"stream HTTP {r.status}")
                    return
                while True:
                    raw = await r.content.readuntil(b"\n\n")
                    if not raw:
                        return
                    arrived = time.perf_counter()
                    name, data = event(raw)
                    if name == "ready":
                        self.ready.set()
                    elif name == "reply":
                        self.replies.put_nowait((arrived, json.loads(data)))
                        self._ack(json.loads(data)["id"])
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            self.errors.add(f"stream {type(exc).__name__}")

    def _ack(self, message_id: int) -> None:
        """The page tells the service it has shown the reply (it is then delivered)."""
        async def ack() -> None:
            status, _ = await self.post("/chat/api/read", {"ids": [message_id]})
            if status != 200:
                self.errors.add(f"read HTTP {status}")

        task = asyncio.create_task(ack())
        self.acks.add(task)
        task.add_done_callback(self.acks.discard)

    async def say(self, text: str) -> float | None:
        """Send one message; the time to the first reply on the stream, in ms."""
        self.sent += 1
        started = time.perf_counter()
        status, data = await self.post("/chat/api/messages", {
            "id": f"bench{self.sent:08d}", "text": text, "lang": "en"})
        if status != 200 or data.get("fallback"):
            self.errors.add(f"message HTTP {status} {data}")
            return None
        try:
            arrived, _ = await asyncio.wait_for(self.replies.get(), REPLY_TIMEOUT)
        except TimeoutError:
            self.errors.add("no reply in time")
            return None
        return (arrived - started) * 1000

    async def close(self) -> None:
        if self.reading is not None:
            self.reading.cancel()
            await asyncio.gather(self.reading, return_exceptions=True)
        await asyncio.gather(*self.acks, return_exceptions=True)


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def event(raw: bytes) -> tuple[str, str]:
    name, data = "message", ""
    for line in raw.decode().split("\n"):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
    return name, data


WARM_UP = 1 << 20  # the warm-up chats' addresses start here, apart from the measured ones


async def open_chats(http: aiohttp.ClientSession, base: str, count: int, errors: Errors,
                     first: int = 0, at_once: int = 50) -> list[Chat]:
    chats = [Chat(http, base, first + n, errors) for n in range(count)]
    for i in range(0, count, at_once):
        await asyncio.gather(*(chat.open() for chat in chats[i:i + at_once]))
    return chats


# --- phase 1: chats at once ----------------------------------------------------------------------


@dataclass
class Timings:
    ms: list[float] = field(default_factory=list)
    errors: Errors = field(default_factory=Errors)
    seconds: float = 0.0
    server_cpu_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        ms = sorted(self.ms)
        return {
            "samples": len(ms),
            "errors": self.errors.count,
            "first_error": self.errors.first,
            "seconds": round(self.seconds, 2),
            "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(max(ms, default=math.nan), 2),
            "server_cpu_pct": round(100 * self.server_cpu_seconds / self.seconds, 1)
            if self.seconds else None,
            # What other load on the machine skews least: the service's CPU for each reply.
            "server_cpu_ms_per_reply": round(
                1000 * self.server_cpu_seconds / max(1, len(ms)), 2),
        }


async def chats_at_once(tmp: Path, opts: Options) -> Timings:
    out = Timings()
    async with server_process(tmp / "chats", opts.chats + 100) as server, client() as http:
        # Warm the service (its first statements compiled, caches filled), untimed.
        warm = await open_chats(http, server.base, 10, out.errors, WARM_UP)
        for chat in warm:
            for text in MESSAGES[:opts.messages]:
                await chat.say(text)
        await asyncio.gather(*(chat.close() for chat in warm))
        chats = await open_chats(http, server.base, opts.chats, out.errors)

        async def person(chat: Chat, start_in: float) -> None:
            await asyncio.sleep(start_in)
            for text in MESSAGES[:opts.messages]:
                ms = await chat.say(text)
                if ms is not None:
                    out.ms.append(ms)
                await asyncio.sleep(opts.think)

        progress(f"{opts.chats} chats, {opts.messages} messages each")
        cpu = process_cpu_seconds(server.pid)
        started = time.perf_counter()
        # Everyone starts within one think time, so the load is even from the first second.
        await asyncio.gather(*(person(chat, opts.think * i / len(chats))
                               for i, chat in enumerate(chats)))
        out.seconds = time.perf_counter() - started
        out.server_cpu_seconds = process_cpu_seconds(server.pid) - cpu
        await asyncio.gather(*(chat.close() for chat in chats))
    return out


# --- phase 2: open streams, and staff replies while they are open -----------------------------


class StaffMember:
    """A signed-in console session, its cookies kept by hand: they are Secure, as behind https,
    and the loopback server is plain http, so no cookie jar would send them."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def headers(self) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {"Accept": "text/html", "Cookie": cookie, "X-Forwarded-For": "2001:db8:ffff::1"}

    async def request(self, method: str, path: str,
                      form: dict[str, str] | None = None) -> tuple[int, str]:
        async with self.http.request(method, self.base + path, data=form,
                                     headers=self.headers(), allow_redirects=False) as r:
            for name, morsel in r.cookies.items():
                self.cookies[name] = morsel.value
            text = await r.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return r.status, text

    async def sign_in(self) -> None:
        await self.request("GET", "/console/login")
        status, text = await self.request("POST", "/console/login", {
            "username": STAFF_USER, "password": STAFF_PASSWORD, "next": "/console",
            "csrf_token": self.csrf})
        if status != 303:
            raise RuntimeError(f"staff sign-in: HTTP {status} {text[:200]}")
        status, _ = await self.request("GET", "/console")  # the session's own CSRF token
        if status != 200:
            raise RuntimeError(f"console: HTTP {status}")

    async def reply(self, number: int, text: str) -> int:
        status, _ = await self.request("POST", f"/console/conversations/{number}/reply",
                                       {"text": text, "csrf_token": self.csrf})
        return status


@dataclass
class Streams:
    streams: int = 0
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    open_seconds: float = 0.0
    idle_cpu_pct: float = 0.0
    replies: Timings = field(default_factory=Timings)

    def summary(self, rate: float) -> dict[str, Any]:
        per = (self.rss_after_kb - self.rss_before_kb) / self.streams if self.streams else 0
        return {
            "streams": self.streams,
            "rss_before_mb": round(self.rss_before_kb / 1024, 1),
            "rss_after_mb": round(self.rss_after_kb / 1024, 1),
            "kb_per_stream": round(per, 1),
            "open_seconds": round(self.open_seconds, 1),
            "idle_cpu_pct": round(self.idle_cpu_pct, 1),
            "staff_replies": {**self.replies.summary(), "rate_per_second": rate},
        }


async def open_streams(tmp: Path, opts: Options) -> Streams:
    out = Streams()
    errors = out.replies.errors
    async with server_process(tmp / "streams", opts.streams + 100) as server, client() as http:
        staff = StaffMember(http, server.base)
        await staff.sign_in()
        # Warm the service (imports, caches, the first conversations) before the baseline.
        warm = await open_chats(http, server.base, 20, errors, WARM_UP)
        for chat in warm:
            await chat.say("hello")
        await asyncio.gather(*(chat.close() for chat in warm))
        await asyncio.sleep(1.0)  # let the closed streams' handlers finish
        out.rss_before_kb = rss_kb(server.pid)

        progress(f"opening {opts.streams} chats and their streams")
        started = time.perf_counter()
        chats = await open_chats(http, server.base, opts.streams, errors)
        # One by one, so chat i has conversation i + 21 (after the warm-up's 20).
        for chat in chats:
            await chat.say("hello")
        out.open_seconds = time.perf_counter() - started
        await asyncio.sleep(1.0)
        out.rss_after_kb = rss_kb(server.pid)
        out.streams = sum(1 for chat in chats if chat.reading and not chat.reading.done())
        first_conversation = len(warm) + 1
        # What the open streams cost with nothing happening (their pings).
        cpu = process_cpu_seconds(server.pid)
        await asyncio.sleep(IDLE_SECONDS)
        out.idle_cpu_pct = 100 * (process_cpu_seconds(server.pid) - cpu) / IDLE_SECONDS

        async def one(k: int, chat_index: int) -> None:
            chat = chats[chat_index]
            text = f"Hi, this is {STAFF_USER}. Reply {k} to you."
            started = time.perf_counter()
            status = await staff.reply(first_conversation + chat_index, text)
            if status != 303:
                errors.add(f"staff reply HTTP {status}")
                return
            try:
                arrived, reply = await asyncio.wait_for(chat.replies.get(), REPLY_TIMEOUT)
            except TimeoutError:
                errors.add("staff reply did not arrive")
                return
            if reply["text"] != text or not reply["staff"]:
                errors.add("a staff reply reached the wrong page")
                return
            out.replies.ms.append((arrived - started) * 1000)

        progress(f"{opts.staff_replies} staff replies, {out.streams} streams open")
        cpu = process_cpu_seconds(server.pid)
        started = time.perf_counter()
        tasks = []
        for k in range(opts.staff_replies):
            await asyncio.sleep(max(0.0, started + k / opts.staff_rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(k, k % len(chats))))
        await asyncio.gather(*tasks)
        out.replies.seconds = time.perf_counter() - started
        out.replies.server_cpu_seconds = process_cpu_seconds(server.pid) - cpu
        await asyncio.gather(*(chat.close() for chat in chats))
    return out


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)  # one connection per open stream, as browsers
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
                                     ) as http:
        yield http


# --- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    chats: int
    messages: int
    think: float
    streams: int
    staff_replies: int
    staff_rate: float


def enough_files(needed: int) -> None:
    """Each open stream is a socket at both ends; the service inherits this limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def bench(opts: Options) -> dict[str, Any]:
    load_before = load_average()
    enough_files(2 * opts.streams + 1000)
    with tempfile.TemporaryDirectory(prefix="bench-webchat-") as tmp_name:
        tmp = Path(tmp_name)
        chats = await chats_at_once(tmp, opts)
        streams = await open_streams(tmp, opts)
    c, s = chats.summary(), streams.summary(opts.staff_rate)
    r = s["staff_replies"]
    return {
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "chats": {**c, "chats": opts.chats, "messages_each": opts.messages,
                  "think_seconds": opts.think},
        "chats_pass": c["errors"] == 0 and c["p99_ms"] <= CHAT_P99_TARGET_MS,
        "streams": s,
        "memory_pass": s["streams"] == opts.streams and
        s["kb_per_stream"] <= KB_PER_STREAM_TARGET,
        "staff_pass": r["errors"] == 0 and r["p99_ms"] <= STAFF_P99_TARGET_MS,
    }


def report(result: Mapping[str, Any]) -> str:
    m, c, s = result["machine"], result["chats"], result["streams"]
    r = s["staff_replies"]
    lines = [
        f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['date']}  "
        f"(aiohttp {m['aiohttp']}; load average {m['load_before']} before, "
        f"{m['load_after']} after)",
        f"{c['chats']} chats at once, {c['messages_each']} messages each, {c['think_seconds']:g} s "
        f"apart: send -> first reply on the stream p50 {c['p50_ms']:.1f} ms  p99 "
        f"{c['p99_ms']:.1f} ms  max {c['max_ms']:.1f} ms  ({c['samples']} replies, "
        f"{c['errors']} errors; {c['seconds']:.1f} s, server CPU {c['server_cpu_pct']}%, "
        f"{c['server_cpu_ms_per_reply']} ms a message)  "
        f"(target p99 <= {CHAT_P99_TARGET_MS:g} ms, no error)  {verdict(result['chats_pass'])}",
        f"{s['streams']} open streams: RSS {s['rss_before_mb']} MB -> {s['rss_after_mb']} MB, "
        f"{s['kb_per_stream']:.1f} KB each (opened in {s['open_seconds']:.1f} s; server CPU "
        f"{s['idle_cpu_pct']}% with all open and nothing happening)  "
        f"(target <= {KB_PER_STREAM_TARGET:g} KB)  {verdict(result['memory_pass'])}",
        f"staff reply -> its page, {s['streams']} streams open: p50 {r['p50_ms']:.1f} ms  "
        f"p99 {r['p99_ms']:.1f} ms  max {r['max_ms']:.1f} ms  ({r['samples']} replies at "
        f"{r['rate_per_second']:g}/s, {r['errors']} errors; server CPU {r['server_cpu_pct']}%, "
        f"{r['server_cpu_ms_per_reply']} ms a reply)  "
        f"(target p99 <= {STAFF_P99_TARGET_MS:g} ms)  {verdict(result['staff_pass'])}",
    ]
    for name, part in (("chats", c), ("staff replies", r)):
        if part["first_error"]:
            lines.append(f"{name}: first error: {part['first_error']}")
    busiest = max(m["load_before"] or 0, m["load_after"] or 0)
    if m["cores"] and busiest > m["cores"]:
        lines.append(f"warning: load average {busiest} on {m['cores']} cores: other processes "
                     "took CPU from the service; latencies are pessimistic")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, help="phase 1 chats at once (200)")
    parser.add_argument("--messages", type=int, default=len(MESSAGES),
                        help=f"messages per chat, at most {len(MESSAGES)}")
    parser.add_argument("--think", type=float, default=5.0,
                        help="seconds between a reply and the chat's next message")
    parser.add_argument("--streams", type=int, help="phase 2 open streams (1000)")
    parser.add_argument("--staff-replies", type=int, help="phase 2 staff replies (300)")
    parser.add_argument("--staff-rate", type=float, default=20.0, help="staff replies a second")
    parser.add_argument("--quick", action="store_true",
                        help="small smoke run: 50 chats, 200 streams, 50 staff replies")
    parser.add_argument("--json", type=Path, help="write the JSON summary here")
    # Internal: how this script starts the service under test.
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-sessions", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = (50, 200, 50) if args.quick else (200, 1000, 300)
    for name, default in zip(("chats", "streams", "staff_replies"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not 1 <= args.messages <= len(MESSAGES):
        parser.error(f"--messages must be 1 to {len(MESSAGES)}")
    if min(args.chats, args.streams, args.staff_replies) < 1 or args.staff_rate <= 0 \
            or args.think < 0:
        parser.error("counts and --staff-rate must be positive, --think not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.serve:
        asyncio.run(serve(args.db_dir, args.max_sessions))
        return 0
    opts = Options(args.chats, args.messages, args.think, args.streams, args.staff_replies,
                   args.staff_rate)
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

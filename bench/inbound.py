"""Benchmark of the inbound SMS path: signed Twilio webhooks through the real service.

Run from the repository root with the project's virtualenv:

    .venv/bin/python -m bench.inbound                  # full run, about a minute
    .venv/bin/python -m bench.inbound --quick          # smoke check, a few seconds
    .venv/bin/python -m bench.inbound --requests 5000 --json /tmp/inbound.json

(`.venv/bin/python bench/inbound.py ...` works as well.)

One run measures:

1. full path: `POST /webhooks/twilio/sms` through `create_app()` on SQLite in a temp dir
   (verify the signature, dedupe, store encrypted, enqueue the reply, group commit), with
   32 connections, for --requests webhooks after a warm-up. The outbox sends at
   config.example.toml's `[sms] max_per_second`, as the service would behind Twilio's own
   rate limit, so the replies queued here wait their turn as they would in production;
2. the same again with the outbox sending as fast as it can, in the same process, so the
   cost of sending shows too (reported, not held to the target);
3. bare: an aiohttp app that only parses the same form and answers an empty TwiML, driven
   by the same client code, concurrency and count;
4. the ratio full/bare requests per second (target >= 0.15), for 1 and for 2;
5. webhook->reply: from sending a first-contact webhook to the fake Twilio accepting the
   bot's reply, at a steady rate, each request from a number new to its database, with the
   outbox unpaced: this is the service's own latency, not the provider's rate limit
   (target p99 <= 100 ms).

Each server runs in its own subprocess (`--serve full|bare`, started by this script), so the
load generator never shares the server's event loop; on a 2-core machine each gets a core.
The fake Twilio runs here, in the client process, like the real Twilio would run elsewhere.
All traffic stays on 127.0.0.1, on ports the OS picks. The server's clock starts on a
Monday at 10:00 in Chicago (inside business hours) and runs on from there, so results do
not depend on when the benchmark runs.

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
import os
import platform
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import sqlalchemy
from aiohttp import web

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
# `python bench/inbound.py` puts bench/ first on sys.path rather than the repository root,
# and the server subprocesses are started that way; `tests` is not an installed package.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.app import create_app  # noqa: E402
from bot.config import Settings, parse_settings  # noqa: E402
from bot.crypto import generate_key  # noqa: E402
from tests.fakes.twilio_api import FakeTwilio  # noqa: E402
from tests.fixtures import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    OUR_NUMBER,
    deep_merge,
    encode_form,
    load_twilio_form,
    twilio_signature,
)

INBOUND_PATH = "/webhooks/twilio/sms"
PUBLIC_URL = "https://triage.example.org"
# Monday 2026-11-30 10:00 in America/Chicago: inside the example config's business hours.
START_NOW = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'
# Fictional contacts: 555-0100..0199 is reserved for fiction in every area code, so
# +1 NXX 555 01XX gives tens of thousands of distinct contacts (never +1 314 555 0100, the
# service's own number). Every webhook comes from a new number: a first contact, which is
# the path that stores the message AND enqueues a reply.
ALL_NUMBERS = tuple(
    f"+1{area}5550{n}" for area in range(201, 1000) for n in range(100, 200)
    if (area, n) != (314, 100)
)
CONTACT_NUMBERS = ALL_NUMBERS[:40_000]
# Phase 4 warms its fresh server with first contacts from these numbers and measures with
# the rest, so no number ever writes twice to the same database.
REPLY_WARMUP_NUMBERS = ALL_NUMBERS[-20:]
REPLY_NUMBERS = ALL_NUMBERS[40_000:-20]

RATIO_TARGET = 0.15
REPLY_P99_TARGET_MS = 100.0
START_TIMEOUT = 60.0  # imports and migrations on a cold, slow machine
STOP_TIMEOUT = 15.0
REQUEST_TIMEOUT = 30.0
REPLY_WAIT = 10.0  # how long to wait for replies still in flight after the last webhook
UNPACED_PER_SECOND = 1000  # high enough that the send rate limit never shapes a measurement


# --- the servers under test (run in a subprocess) ----------------------------------------------


class MondayClock:
    """The server's clock: Monday 10:00 in Chicago when the server starts, then moving with
    real time. Results do not depend on when the bench runs (a run stays well inside the
    09:00-17:00 hours), yet timestamps still differ between messages as in production; a
    frozen clock would let SQLAlchemy skip the per-message UPDATE of last_inbound_at."""

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._started = time.monotonic()

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._started)


def example_config() -> dict[str, Any]:
    return tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))


def full_settings(db_dir: Path, twilio_url: str, paced: bool) -> Settings:
    """The example config pointed at a temp SQLite file and the fake Twilio, as the tests do.
    Unless `paced`, the SMS rate limit is lifted so that it never holds a reply back."""
    sms: dict[str, Any] = {
        "enabled": True,
        "account_sid": ACCOUNT_SID,
        "from_number": OUR_NUMBER,
        "api_base_url": twilio_url,
    }
    if not paced:
        sms["max_per_second"] = UNPACED_PER_SECOND
    overrides = {
        "server": {"public_url": PUBLIC_URL},
        "database": {"url": f"sqlite+aiosqlite:///{db_dir / 'triage.db'}"},
        "sms": sms,
        "telegram": {"enabled": False},
    }
    # Secrets come from this dict, never from the environment of whoever runs the bench.
    environ = {
        "TRIAGE_ENCRYPTION_KEY": generate_key(),
        "TRIAGE_SESSION_SECRET": "bench-session-secret",
        "TRIAGE_SMS_AUTH_TOKEN": AUTH_TOKEN,
    }
    return parse_settings(deep_merge(example_config(), overrides), environ, base_dir=db_dir)


async def bare_inbound(request: web.Request) -> web.Response:
    await request.post()
    return web.Response(text=EMPTY_TWIML, content_type="application/xml")


def bare_app() -> web.Application:
    app = web.Application(client_max_size=65536)  # the service's default body limit
    app.router.add_post(INBOUND_PATH, bare_inbound)
    return app


async def wait_for_stop() -> None:
    """Return on SIGTERM/SIGINT or when stdin closes, so a dead parent never leaves us."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    waits = {asyncio.create_task(reader.read()), asyncio.create_task(stop.wait())}
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def serve(kind: str, db_dir: Path | None, twilio_url: str | None, paced: bool) -> None:
    if kind == "full":
        if db_dir is None or twilio_url is None:
            raise SystemExit("--serve full needs --db-dir and --twilio-url")
        app = create_app(full_settings(db_dir, twilio_url, paced), MondayClock(START_NOW))
    else:
        app = bare_app()
    # As in `python -m bot run`: no access log.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"READY {runner.addresses[0][1]}", flush=True)
        await wait_for_stop()
    finally:
        await runner.cleanup()


# --- the load generator ----------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    number: str
    body: bytes
    headers: Mapping[str, str]


class WebhookFactory:
    """Signed inbound-SMS webhooks, each with a MessageSid not used before in this run.

    Everything is signed up front so the client's HMAC cost is never inside a timing.
    """

    def __init__(self) -> None:
        self._form = load_twilio_form("inbound_sms")
        self._sid = 0

    def make(self, number: str) -> Webhook:
        self._sid += 1
        sid = f"SM{self._sid:032x}"
        # Overridden fields keep their place in the fixture's order, as Twilio would send.
        form = {
            **self._form,
            "From": number,
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "SmsSid": sid,
        }
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(AUTH_TOKEN, PUBLIC_URL + INBOUND_PATH, form),
        }
        return Webhook(number, encode_form(form).encode(), headers)

    def cycle(self, count: int, numbers: Sequence[str]) -> list[Webhook]:
        return [self.make(numbers[i % len(numbers)]) for i in range(count)]


@dataclass
class Run:
    """What one timed batch of webhooks came to."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0

    def record(self, started: float, error: str | None) -> None:
        if error is None:
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
        else:
            self.errors += 1
            self.first_error = self.first_error or error

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def summary(self, concurrency: int) -> dict[str, Any]:
        return {
            "requests": len(self.latencies_ms) + self.errors,
            "ok": len(self.latencies_ms),
            "errors": self.errors,
            "first_error": self.first_error,
            "concurrency": concurrency,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(percentile(self.latencies_ms, 50), 2),
            "p99_ms": round(percentile(self.latencies_ms, 99), 2),
            "max_ms": round(max(self.latencies_ms, default=math.nan), 2),
            # Near 100% for the client means the bench, not the server, set the pace.
            "client_cpu_pct": round(100 * self.client_cpu_seconds / self.seconds, 1),
            "server_cpu_pct": round(100 * self.server_cpu_seconds / self.seconds, 1),
            # CPU per request is what other load on the machine skews least.
            "server_cpu_ms_per_request": round(
                1000 * self.server_cpu_seconds / max(1, len(self.latencies_ms)), 3
            ),
            "client_cpu_ms_per_request": round(
                1000 * self.client_cpu_seconds / max(1, len(self.latencies_ms)), 3
            ),
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of another process, from /proc (Linux only; 0 elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the ")" that closes the command name; utime and stime are fields 14, 15.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def post(session: aiohttp.ClientSession, url: str, hook: Webhook) -> str | None:
    """Send one webhook; None if it was answered 200, else what went wrong."""
    try:
        async with session.post(url, data=hook.body, headers=hook.headers) as response:
            await response.read()
            return None if response.status == 200 else f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def drive(
    session: aiohttp.ClientSession,
    url: str,
    hooks: Sequence[Webhook],
    concurrency: int,
    time_limit: float,
    server_pid: int,
) -> Run:
    """Send `hooks` through `concurrency` workers, each posting as soon as its last answer
    came; stop taking new ones after `time_limit` seconds."""
    run = Run()
    queue: Iterator[Webhook] = iter(hooks)  # shared: each webhook goes to exactly one worker
    deadline = time.perf_counter() + time_limit

    async def worker() -> None:
        for hook in queue:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            run.record(started, await post(session, url, hook))

    cpu = time.process_time()
    server_cpu = process_cpu_seconds(server_pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - started
    run.client_cpu_seconds = time.process_time() - cpu
    run.server_cpu_seconds = process_cpu_seconds(server_pid) - server_cpu
    return run


@dataclass(frozen=True)
class Server:
    pid: int
    url: str


@contextlib.asynccontextmanager
async def server_process(kind: str, workdir: Path, *extra: str) -> AsyncIterator[Server]:
    """Start `--serve kind` in a subprocess, wait for its READY line, stop it afterwards.

    The server's stderr goes to workdir/server.log and is relayed, labelled, once it stopped,
    so its warnings are neither lost nor mixed into the results table.
    """
    log_path = workdir / "server.log"
    with open_log(log_path) as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(THIS_FILE),
            "--serve",
            kind,
            *extra,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            cwd=ROOT,
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        if not line.startswith(b"READY "):
            raise RuntimeError(f"{kind} server did not start: {line!r}")
        port = int(line.split()[1])
        yield Server(proc.pid, f"http://127.0.0.1:{port}{INBOUND_PATH}")
    finally:
        await stop_process(proc)
        relay_log(f"{kind} server in {workdir.name}", log_path)


def open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


def relay_log(label: str, path: Path, most: int = 12) -> None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    for line in lines[:most]:
        print(f"[{label}] {line}", file=sys.stderr)
    if len(lines) > most:
        print(f"[{label}] ... {len(lines) - most} more lines", file=sys.stderr)


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None and proc.stdin is not None:
        proc.stdin.close()  # the server's signal to shut down cleanly
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def full_server(
    tmp: Path, name: str, fake: FakeTwilio, paced: bool = False
) -> contextlib.AbstractAsyncContextManager[Server]:
    """The real service on a fresh SQLite database in tmp/name, sending to `fake`."""
    db_dir = tmp / name
    db_dir.mkdir()
    pacing = ("--paced",) if paced else ()
    return server_process(
        "full", db_dir, "--db-dir", str(db_dir), "--twilio-url", fake.base_url, *pacing
    )


async def wait_for_replies(fake: FakeTwilio, total: int) -> None:
    """Wait until the fake holds `total` messages; a shortfall is reported by the caller."""
    with contextlib.suppress(AssertionError):
        await fake.wait_for_messages(total, timeout=REPLY_WAIT)


@dataclass(frozen=True)
class Options:
    requests: int
    warmup: int
    concurrency: int
    replies: int
    reply_rate: float
    time_limit: float


async def measure_full(
    session: aiohttp.ClientSession,
    fake: FakeTwilio,
    tmp: Path,
    factory: WebhookFactory,
    opts: Options,
    paced: bool,
) -> tuple[Run, int]:
    """Phase 1 (paced) or 2; also returns how many replies went out during the timed part."""
    warmup = factory.cycle(opts.warmup, CONTACT_NUMBERS)
    hooks = factory.cycle(opts.requests, CONTACT_NUMBERS[opts.warmup:])
    name = "full-paced" if paced else "full-unpaced"
    async with full_server(tmp, name, fake, paced) as server:
        first_replies = len(fake.sent) + len({hook.number for hook in warmup})
        await drive(session, server.url, warmup, opts.concurrency, opts.time_limit, server.pid)
        if not paced:
            # The warm-up's first contacts are replied to now, not inside the timed run.
            # Paced, they trickle out during it, as a queue behind the rate limit would.
            await wait_for_replies(fake, first_replies)
        before = len(fake.sent)
        run = await drive(session, server.url, hooks, opts.concurrency, opts.time_limit, server.pid)
        return run, len(fake.sent) - before


async def measure_bare(
    session: aiohttp.ClientSession, tmp: Path, factory: WebhookFactory, opts: Options
) -> Run:
    warmup = factory.cycle(opts.warmup, CONTACT_NUMBERS)
    hooks = factory.cycle(opts.requests, CONTACT_NUMBERS)
    workdir = tmp / "bare"
    workdir.mkdir()
    async with server_process("bare", workdir) as server:
        await drive(session, server.url, warmup, opts.concurrency, opts.time_limit, server.pid)
        return await drive(
            session, server.url, hooks, opts.concurrency, opts.time_limit, server.pid
        )


@dataclass
class Replies:
    """Phase 4: webhook->reply latencies and what went missing."""

    latencies_ms: list[float] = field(default_factory=list)
    webhook_ms: list[float] = field(default_factory=list)
    errors: int = 0
    missing: int = 0
    servers: int = 0

    def summary(self, rate: float) -> dict[str, Any]:
        return {
            "first_contacts": len(self.latencies_ms) + self.missing,
            "replied": len(self.latencies_ms),
            "missing": self.missing,
            "webhook_errors": self.errors,
            "rate_per_second": rate,
            "fresh_databases": self.servers,
            "p50_ms": round(percentile(self.latencies_ms, 50), 2),
            "p99_ms": round(percentile(self.latencies_ms, 99), 2),
            "max_ms": round(max(self.latencies_ms, default=math.nan), 2),
            "webhook_p50_ms": round(percentile(self.webhook_ms, 50), 2),
            "webhook_p99_ms": round(percentile(self.webhook_ms, 99), 2),
        }


async def steady(
    session: aiohttp.ClientSession,
    fake: FakeTwilio,
    url: str,
    hooks: Sequence[Webhook],
    rate: float,
    out: Replies,
) -> None:
    """Post `hooks` at a steady `rate` (not waiting for answers) and match each reply to its
    webhook by the `to` number, which is unique within the batch.

    Both timestamps come from time.monotonic in this process (the fake Twilio runs here).
    Had the fake run elsewhere on this machine the comparison would still hold: on Linux
    time.monotonic is CLOCK_MONOTONIC, one clock for the whole system.
    """
    already = len(fake.sent)
    sent_at: dict[str, float] = {}

    async def send(hook: Webhook) -> None:
        sent_at[hook.number] = time.monotonic()
        started = time.perf_counter()
        error = await post(session, url, hook)
        if error is None:
            out.webhook_ms.append((time.perf_counter() - started) * 1000)
        else:
            out.errors += 1

    start = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    for i, hook in enumerate(hooks):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(send(hook)))
    await asyncio.gather(*tasks)
    await wait_for_replies(fake, already + len(hooks))
    for sms in fake.sent[already:]:
        at = sent_at.pop(sms.to, None)  # pop: a second reply to one number would not count
        if at is not None:
            out.latencies_ms.append((sms.accepted_at_monotonic - at) * 1000)
    out.missing += len(sent_at)


def batch_sizes(total: int, most: int) -> list[int]:
    """Split `total` into as few near-equal batches of at most `most` as possible."""
    count = math.ceil(total / most)
    size, extra = divmod(total, count) if count else (0, 0)
    return [size + (1 if i < extra else 0) for i in range(count)]


async def measure_replies(
    session: aiohttp.ClientSession,
    fake: FakeTwilio,
    tmp: Path,
    factory: WebhookFactory,
    opts: Options,
) -> Replies:
    """Phase 4: a fresh database per batch, so every webhook is a contact's first message
    (only a first message gets an automatic reply during business hours)."""
    out = Replies()
    for i, size in enumerate(batch_sizes(opts.replies, len(REPLY_NUMBERS))):
        warmup = [factory.make(n) for n in REPLY_WARMUP_NUMBERS]
        hooks = [factory.make(n) for n in REPLY_NUMBERS[:size]]
        async with full_server(tmp, f"replies-{i}", fake) as server:
            # Warm the fresh process so its first, cold request is not a sample.
            await steady(session, fake, server.url, warmup, opts.reply_rate, Replies())
            await steady(session, fake, server.url, hooks, opts.reply_rate, out)
        out.servers += 1
    return out


def load_average() -> float | None:
    """The 1-minute load average: other busy processes on the machine skew every number."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "date": date.today().isoformat(),
    }


async def bench(opts: Options) -> dict[str, Any]:
    load_before = load_average()
    factory = WebhookFactory()
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    connector = aiohttp.TCPConnector(limit=opts.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            with tempfile.TemporaryDirectory(prefix="bench-inbound-") as tmp_name:
                tmp = Path(tmp_name)
                full, full_replies = await measure_full(session, fake, tmp, factory, opts, True)
                unpaced, unpaced_replies = await measure_full(
                    session, fake, tmp, factory, opts, False
                )
                bare = await measure_bare(session, tmp, factory, opts)
                replies = await measure_replies(session, fake, tmp, factory, opts)
    finally:
        await fake.close()
    ratio = full.rps / bare.rps if bare.rps else 0.0
    reply = replies.summary(opts.reply_rate)
    return {
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "full": {
            **full.summary(opts.concurrency),
            "replies_sent": full_replies,
            "sms_per_second": example_config()["sms"]["max_per_second"],
        },
        "full_unpaced": {
            **unpaced.summary(opts.concurrency),
            "replies_sent": unpaced_replies,
            "sms_per_second": UNPACED_PER_SECOND,
        },
        "bare": bare.summary(opts.concurrency),
        "ratio": round(ratio, 3),
        "ratio_unpaced": round(unpaced.rps / bare.rps if bare.rps else 0.0, 3),
        "ratio_target": RATIO_TARGET,
        "ratio_pass": ratio >= RATIO_TARGET and full.errors == 0,
        "reply": reply,
        "reply_p99_target_ms": REPLY_P99_TARGET_MS,
        "reply_pass": replies.missing == 0 and reply["p99_ms"] <= REPLY_P99_TARGET_MS,
    }


def json_safe(value: Any) -> Any:
    """NaN (no samples) becomes null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    return value


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(result: Mapping[str, Any]) -> str:
    m, bare, reply = result["machine"], result["bare"], result["reply"]
    lines = [
        f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['date']}"
        f"  (aiohttp {m['aiohttp']}, SQLAlchemy {m['sqlalchemy']}; "
        f"load average {m['load_before']} before, {m['load_after']} after)",
        full_line("full path   ", result["full"]),
        full_line("  unpaced   ", result["full_unpaced"]),
        f"bare aiohttp: {bare['rps']:6.0f} req/s  p50 {bare['p50_ms']:5.1f} ms  "
        f"p99 {bare['p99_ms']:5.1f} ms  ({bare['requests']} requests, "
        f"{bare['errors']} errors; "
        f"CPU server {bare['server_cpu_pct']:.0f}% client {bare['client_cpu_pct']:.0f}%, "
        f"server {bare['server_cpu_ms_per_request']:.2f} ms CPU/request)",
        f"ratio       : {result['ratio']:.3f}  (target >= {result['ratio_target']})  "
        f"{verdict(result['ratio_pass'])};  unpaced {result['ratio_unpaced']:.3f}",
        f"webhook->reply: p50 {reply['p50_ms']:.1f} ms  p99 {reply['p99_ms']:.1f} ms  "
        f"({reply['replied']} first contacts at {reply['rate_per_second']:g}/s, "
        f"{reply['missing']} missing; webhook answered p50 {reply['webhook_p50_ms']:.1f} ms "
        f"p99 {reply['webhook_p99_ms']:.1f} ms)  "
        f"(target p99 <= {result['reply_p99_target_ms']:g} ms)  {verdict(result['reply_pass'])}",
    ]
    for name in ("full", "full_unpaced", "bare"):
        if result[name]["first_error"]:
            lines.append(f"{name}: first error: {result[name]['first_error']}")
    busiest = max(m["load_before"] or 0, m["load_after"] or 0)
    if m["cores"] and busiest > m["cores"]:
        lines.append(
            f"warning: load average {busiest} on {m['cores']} cores: other processes took CPU "
            "from the servers; req/s and latencies are pessimistic, CPU/request less so"
        )
    return "\n".join(lines)


def full_line(label: str, full: Mapping[str, Any]) -> str:
    return (
        f"{label}: {full['rps']:6.0f} req/s  p50 {full['p50_ms']:5.1f} ms  "
        f"p99 {full['p99_ms']:5.1f} ms  ({full['requests']} requests, "
        f"{full['concurrency']} connections, {full['errors']} errors, "
        f"{full['replies_sent']} replies sent at <= {full['sms_per_second']:g}/s; "
        f"CPU server {full['server_cpu_pct']:.0f}% client {full['client_cpu_pct']:.0f}%, "
        f"server {full['server_cpu_ms_per_request']:.2f} ms CPU/request)"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, help="timed webhooks per server (3000)")
    parser.add_argument("--warmup", type=int, help="untimed webhooks first (200)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections and workers")
    parser.add_argument("--replies", type=int, help="phase 4 first contacts (500)")
    parser.add_argument("--reply-rate", type=float, default=50.0, help="phase 4 webhooks/s")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=300.0,
        help="seconds after which a timed run stops sending",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small smoke run: 300 requests, 50 warm-up, 100 replies, unless given",
    )
    parser.add_argument("--json", type=Path, help="write the JSON summary here")
    # Internal: how this script starts the servers under test.
    parser.add_argument("--serve", choices=("full", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--db-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--twilio-url", help=argparse.SUPPRESS)
    parser.add_argument("--paced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = (300, 50, 100) if args.quick else (3000, 200, 500)
    for name, default in zip(("requests", "warmup", "replies"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.requests, args.concurrency, args.replies) < 1 or args.reply_rate <= 0:
        parser.error("--requests, --concurrency, --replies and --reply-rate must be positive")
    if args.warmup < 0 or args.time_limit <= 0:
        parser.error("--warmup must not be negative and --time-limit must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Only warnings from the service: per-request INFO logs would be the thing measured.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.serve:
        asyncio.run(serve(args.serve, args.db_dir, args.twilio_url, args.paced))
        return 0
    opts = Options(
        args.requests, args.warmup, args.concurrency, args.replies, args.reply_rate, args.time_limit
    )
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

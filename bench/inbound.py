"""Benchmark of the inbound SMS path: signed Twilio webhooks through the real service.

Run from the repository root with the project's virtualenv:

    .venv/bin/python -m bench.inbound                  # full run, a few minutes
    .venv/bin/python -m bench.inbound --quick          # smoke check
    .venv/bin/python -m bench.inbound --setups sqlite --clocks closed --json /tmp/in.json
    .venv/bin/python -m bench.inbound --profile /tmp/prof   # py-spy stacks of each service

(`.venv/bin/python bench/inbound.py ...` works as well.)

The load generator is wrk (Debian's package) when it is installed, else a Python aiohttp
client; the first line printed says which. wrk runs with 1 thread and 32 connections. It
cannot sign requests (signing needs HMAC-SHA1, which its LuaJIT lacks), so every webhook is
signed here beforehand and written to a file, which bench/webhooks.lua sends through once:
a run is a count of webhooks, each with a MessageSid of its own, from 400 fictional numbers
in turn. The Python client sends the same webhooks with 32 workers. The bare endpoint gets
the same generator, so the ratio compares like with like.

For each setup and clock, the service runs `create_app()` with the example config, the fake
Twilio (here, in this process) and a fresh database, and takes --warmup webhooks (every one
of the 400 numbers writes first, so these hold the first contacts) and then --requests timed
ones (--postgres-requests on PostgreSQL, which is far slower here, after 1,000 of the
warm-up), which are messages in an open conversation, as most traffic is:

- setups: `sqlite` (a file in a temp dir), `sqlite-no-metrics` (the same with `[metrics]
  enabled = false`, for what the metrics cost); `postgres` (one process) and `postgres-2` (two
  processes on one database), on --postgres-url in a schema of their own (`?search_path=`),
  dropped afterwards. With two processes, two wrk processes run side by side, one per
  service process, with 16 connections each (32 in all), and their latencies are merged;
- clocks: `open` (Monday 10:00 in Chicago, inside the example hours), `holiday` (Friday 25
  December 10:00: weekday office hours, today a holiday, next opening Monday 09:00) and
  `closed` (every day closed: there is no next opening at all). The clock starts there and
  moves on with real time.

Printed for each: requests per second, p50 and p99 (wrk's own percentiles), the service's
CPU per request split by thread (the event loop, the SQLite writer thread, the rest, from
/proc/PID/task/*/stat), on PostgreSQL the database server's CPU-seconds per 1,000 requests
(the service's own backends, found from its sockets), the ratio to the bare endpoint, and
how many webhooks were stored and spooled. Then the bare endpoint (an aiohttp app that only
parses the same form and answers an empty TwiML) and webhook->reply: from sending a
first-contact webhook at a steady rate to the fake Twilio accepting the reply, each from a
number new to its database, with the outbox unpaced (target p99 <= 100 ms).

Each server runs in its own subprocess (`--serve full|bare`, started by this script), with
no access log and warnings only. All traffic stays on 127.0.0.1, on ports the OS picks. The
exit status is 0 whether the targets pass or fail (this is a measurement, not a test); it
is non-zero only if something crashed. A JSON summary is written to --json PATH, or else
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
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
import sqlalchemy
from aiohttp import web
from sqlalchemy.engine import make_url

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
WRK_SCRIPT = THIS_FILE.parent / "webhooks.lua"
# `python bench/inbound.py` puts bench/ first on sys.path rather than the repository root,
# and the server subprocesses are started that way; `tests` is not an installed package.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.app import create_app, tune_gc  # noqa: E402
from bot.config import Settings, parse_settings  # noqa: E402
from bot.crypto import generate_key  # noqa: E402
from bot.logs import configure_logging  # noqa: E402
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
BENCH_KEY = generate_key()  # made at import: the key of the servers this process starts
THREADS_PATH = "/_bench/threads"  # the served process's thread names, for the CPU split
PUBLIC_URL = "https://triage.example.org"
POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
POSTGRES_PORT = 5432
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'
# Fictional contacts: 555-0100..0199 is reserved for fiction in every area code, so
# +1 NXX 555 01XX gives tens of thousands of distinct contacts (never +1 314 555 0100, the
# service's own number).
ALL_NUMBERS = tuple(
    f"+1{area}5550{n}" for area in range(201, 1000) for n in range(100, 200)
    if (area, n) != (314, 100)
)
LOAD_NUMBERS = ALL_NUMBERS[:400]  # the throughput runs rotate through these
# Webhook->reply warms its fresh server with first contacts from these numbers and measures
# with the rest, so no number ever writes twice to the same database.
REPLY_WARMUP_NUMBERS = ALL_NUMBERS[-20:]
REPLY_NUMBERS = ALL_NUMBERS[1000:-20]

RATIO_TARGET = 0.25
P99_TARGET_MS = 20.0
CPU_TARGET_US = 225.0
REPLY_P99_TARGET_MS = 100.0
CONNECTIONS = 32
PG_WARMUP = 1000  # webhooks before a PostgreSQL setup's timed ones
START_TIMEOUT = 60.0  # imports and migrations on a cold, slow machine
STOP_TIMEOUT = 15.0
REQUEST_TIMEOUT = 30.0
WRK_TIMEOUT = "10s"  # an answer slower than this counts as a timeout, not a latency
REPLY_WAIT = 10.0  # how long to wait for replies still in flight after the last webhook
KEY_VARIABLE = "BENCH_ENCRYPTION_KEY"  # how the bench hands its servers their key
UNPACED_PER_SECOND = 1000  # high enough that the send rate limit never shapes a measurement
GRID = 1000  # latency percentiles kept per run: 0.1, 0.2, ... 100


# --- the servers under test (run in a subprocess) ----------------------------------------------


@dataclass(frozen=True)
class ClockMode:
    start: datetime
    hours: Mapping[str, Any] | None  # replaces [hours]; None keeps the example's
    about: str


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CLOCKS = {
    # Monday 2026-11-30 10:00 in America/Chicago.
    "open": ClockMode(datetime(2026, 11, 30, 16, 0, tzinfo=UTC), None,
                      "Monday 10:00, inside office hours"),
    # Friday 2026-12-25 10:00: the example's holiday; the next opening is Monday 09:00.
    "holiday": ClockMode(datetime(2026, 12, 25, 16, 0, tzinfo=UTC), None,
                         "weekday office hours, today a holiday, next opening days away"),
    "closed": ClockMode(datetime(2026, 11, 30, 16, 0, tzinfo=UTC),
                        {"timezone": "America/Chicago", "holidays": {},
                         **{day: [] for day in WEEKDAYS}},
                        "every day closed: no next opening at all"),
}


class MovingClock:
    """The server's clock: `start` when the server starts, then moving with real time, so
    results do not depend on when the bench runs, yet timestamps still differ between
    messages as in production."""

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._started = time.monotonic()

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._started)


def example_config() -> dict[str, Any]:
    return tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))


def full_settings(
    db_url: str, db_dir: Path, twilio_url: str, paced: bool, clock: ClockMode,
    metrics: bool = True,
) -> Settings:
    """The example config pointed at a database and the fake Twilio, as the tests do.
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
        "database": {"url": db_url},
        "sms": sms,
        "telegram": {"enabled": False},
        "metrics": {"enabled": metrics},
    }
    config = deep_merge(example_config(), overrides)
    if clock.hours is not None:
        config["hours"] = dict(clock.hours)
    # Secrets come from this dict, never from the environment of whoever runs the bench; the
    # key from the bench itself, one for all processes of a setup (they share a database).
    environ = {
        "TRIAGE_ENCRYPTION_KEY": os.environ[KEY_VARIABLE],
        "TRIAGE_SESSION_SECRET": "bench-session-secret",
        "TRIAGE_SMS_AUTH_TOKEN": AUTH_TOKEN,
    }
    return parse_settings(config, environ, base_dir=db_dir)


async def bare_inbound(request: web.Request) -> web.Response:
    await request.post()
    return web.Response(text=EMPTY_TWIML, content_type="application/xml")


def bare_app() -> web.Application:
    app = web.Application(client_max_size=65536)  # the service's default body limit
    app.router.add_post(INBOUND_PATH, bare_inbound)
    return app


async def thread_names(request: web.Request) -> web.Response:
    return web.json_response({str(t.native_id): t.name for t in threading.enumerate()})


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


async def serve(args: argparse.Namespace) -> None:
    if args.serve == "full":
        clock = CLOCKS[args.clock]
        settings = full_settings(args.db_url, args.db_dir, args.twilio_url, args.paced, clock,
                                 metrics=args.metrics)
        app = create_app(settings, MovingClock(clock.start))
    else:
        app = bare_app()
    app.router.add_get(THREADS_PATH, thread_names)
    # As in `python -m bot run`: no access log.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        if args.serve == "full" and args.tune_gc:
            tune_gc()  # as `python -m bot run` does once started
        print(f"READY {runner.addresses[0][1]}", flush=True)
        await wait_for_stop()
    finally:
        await runner.cleanup()


# --- webhooks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    number: str
    body: bytes
    headers: Mapping[str, str]

    def raw(self) -> bytes:
        """The whole HTTP request, as wrk sends it."""
        head = [f"POST {INBOUND_PATH} HTTP/1.1", "Host: 127.0.0.1",
                *(f"{name}: {value}" for name, value in self.headers.items()),
                f"Content-Length: {len(self.body)}", "", ""]
        return "\r\n".join(head).encode() + self.body


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


class Batch:
    """Webhooks sent in one go, split between the service processes; for wrk also written
    to one request file per process (once, and kept for the next setup: every setup has a
    database of its own, so the same MessageSids are new to each)."""

    def __init__(self, name: str, hooks: list[Webhook], folder: Path) -> None:
        self.name = name
        self.hooks = hooks
        self._folder = folder
        self._files: dict[int, list[Path]] = {}

    def parts(self, count: int) -> list[list[Webhook]]:
        return [self.hooks[i::count] for i in range(count)]

    def files(self, count: int) -> list[Path]:
        if count not in self._files:
            paths = [self._folder / f"{self.name}-{count}-{i}.requests" for i in range(count)]
            for path, part in zip(paths, self.parts(count), strict=True):
                with path.open("wb") as out:
                    for hook in part:
                        raw = hook.raw()
                        out.write(b"%08d" % len(raw))
                        out.write(raw)
            self._files[count] = paths
        return self._files[count]


# --- load generators -------------------------------------------------------------------------


@dataclass
class Load:
    """What one timed batch came to. `grid_ms[i]` is the (i+1)/10 percentile of latency."""

    ok: int
    errors: int
    seconds: float
    grid_ms: list[float]
    max_ms: float
    first_error: str | None = None
    exhausted: bool = True  # every webhook was sent (wrk: the file ran out, not the time)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        return self.grid_ms[499] if self.grid_ms else math.nan

    @property
    def p99_ms(self) -> float:
        return self.grid_ms[989] if self.grid_ms else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "all_sent": self.exhausted,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "max_ms": round(self.max_ms, 2),
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values. It sorts them itself: bench.metrics once
    passed its scrape times in the order they were taken and printed a p95 below its p50."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def merged(loads: Sequence[Load]) -> Load:
    """Loads run side by side, as one: their counts added, over the longest duration, and
    their latency percentiles merged (each grid point stands for 1/GRID of its run's
    requests; exact to the grid's 0.1 percentile)."""
    if len(loads) == 1:
        return loads[0]
    points = sorted(
        (value, load.ok / GRID) for load in loads if load.grid_ms for value in load.grid_ms
    )
    total = sum(weight for _, weight in points)
    grid: list[float] = []
    seen, i = 0.0, 0
    for step in range(1, GRID + 1) if points else ():
        while i < len(points) - 1 and seen + points[i][1] < total * step / GRID - 1e-9:
            seen += points[i][1]
            i += 1
        grid.append(points[i][0])
    return Load(
        ok=sum(load.ok for load in loads),
        errors=sum(load.errors for load in loads),
        seconds=max(load.seconds for load in loads),
        grid_ms=grid,
        max_ms=max(load.max_ms for load in loads),
        first_error=next((load.first_error for load in loads if load.first_error), None),
        exhausted=all(load.exhausted for load in loads),
    )


def wrk_version(path: str) -> str:
    out = subprocess.run(  # noqa: S603 - the wrk found on PATH, no shell
        [path, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).split("Copyright")[0].strip()


async def wrk_run(wrk: str, url: str, requests: Path, connections: int, limit: float) -> Load:
    proc = await asyncio.create_subprocess_exec(
        wrk, "-t1", f"-c{connections}", f"-d{math.ceil(limit)}s", "--timeout", WRK_TIMEOUT,
        "-s", str(WRK_SCRIPT), url, "--", str(requests),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    async for raw in proc.stdout:
        line = raw.decode()
        if line.startswith("BENCH_EXHAUSTED"):
            proc.send_signal(signal.SIGINT)  # wrk's main thread sleeps out -d otherwise
        lines.append(line)
    err = await proc.stderr.read()
    await proc.wait()
    result = next((x for x in lines if x.startswith("BENCH_JSON ")), None)
    if result is None:
        raise RuntimeError(f"wrk gave no result: {err.decode().strip() or ''.join(lines)[-500:]}")
    data = json.loads(result.removeprefix("BENCH_JSON "))
    e = data["errors"]
    failed = e["connect"] + e["read"] + e["write"] + e["timeout"]
    first = next((f"{k} errors" for k in ("status", "timeout", "connect", "read", "write")
                  if e[k]), None)
    return Load(
        ok=data["requests"] - e["status"],
        errors=e["status"] + failed,
        seconds=data["duration_us"] / 1e6,
        grid_ms=[us / 1000 for us in data["grid_us"]],
        max_ms=data["max_us"] / 1000,
        first_error=first,
        exhausted=data["exhausted"],
    )


async def post(session: aiohttp.ClientSession, url: str, hook: Webhook) -> str | None:
    """Send one webhook; None if it was answered 200, else what went wrong."""
    try:
        async with session.post(url, data=hook.body, headers=hook.headers) as response:
            await response.read()
            return None if response.status == 200 else f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def python_run(
    session: aiohttp.ClientSession, url: str, hooks: Sequence[Webhook], workers: int,
    limit: float,
) -> Load:
    """Send `hooks` through `workers` workers, each posting as soon as its last answer came;
    stop taking new ones after `limit` seconds."""
    latencies: list[float] = []
    errors: list[str] = []
    queue: Iterator[Webhook] = iter(hooks)  # shared: each webhook goes to exactly one worker
    deadline = time.perf_counter() + limit

    async def worker() -> None:
        for hook in queue:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            error = await post(session, url, hook)
            if error is None:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors.append(error)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return Load(
        ok=len(latencies), errors=len(errors), seconds=seconds,
        grid_ms=[percentile(latencies, (i + 1) / 10) for i in range(GRID)] if latencies else [],
        max_ms=latencies[-1] if latencies else math.nan,
        first_error=errors[0] if errors else None,
        exhausted=len(latencies) + len(errors) == len(hooks),
    )


@dataclass
class Generator:
    """wrk if installed, else the Python client; the same for the service and the bare app."""

    session: aiohttp.ClientSession
    wrk: str | None
    connections: int
    limit: float

    @property
    def name(self) -> str:
        if self.wrk is None:
            return f"Python aiohttp client ({self.connections} workers; wrk is not installed)"
        return (f"{wrk_version(self.wrk)} (1 thread, {self.connections} connections; "
                "with 2 processes, one wrk per process side by side, "
                f"{self.connections // 2} connections each)")

    async def send(self, servers: Sequence[Server], batch: Batch) -> Load:
        count = len(servers)
        connections = max(1, self.connections // count)
        if self.wrk is not None:
            wrk = self.wrk
            runs = [wrk_run(wrk, s.origin + "/", path, connections, self.limit)
                    for s, path in zip(servers, batch.files(count), strict=True)]
        else:
            runs = [python_run(self.session, s.url, part, connections, self.limit)
                    for s, part in zip(servers, batch.parts(count), strict=True)]
        return merged(await asyncio.gather(*runs))


# --- servers and what they cost ----------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    db_dir: Path | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + INBOUND_PATH


def clock_ticks(stat_path: Path) -> float:
    """User plus system CPU seconds from a /proc stat file (0 if it is gone)."""
    try:
        stat = stat_path.read_text()
    except OSError:
        return 0.0
    # Fields after the ")" that closes the command name; utime and stime are fields 14, 15.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of another process, all its threads together."""
    return clock_ticks(Path(f"/proc/{pid}/stat"))


def thread_cpu(pid: int) -> dict[int, float]:
    tasks = Path(f"/proc/{pid}/task")
    with contextlib.suppress(OSError):
        return {int(t.name): clock_ticks(t / "stat") for t in tasks.iterdir()}
    return {}


def client_ports(pid: int, remote_port: int) -> list[int]:
    """Local ports of `pid`'s TCP connections to `remote_port`: its database connections."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[9] in inodes and int(cols[2].rpartition(":")[2], 16) == remote_port:
                    ports.append(int(cols[1].rpartition(":")[2], 16))
    return ports


async def postgres_backends(
    admin: asyncpg.Connection | None, servers: Sequence[Server]
) -> list[int]:
    """The PostgreSQL backends serving `servers`, matched by the client ports of their
    sockets, so that other users of the same server are not counted."""
    if admin is None:
        return []
    ports = [port for s in servers for port in client_ports(s.pid, POSTGRES_PORT)]
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", ports
    )
    return [row["pid"] for row in rows]


@dataclass
class CpuSample:
    threads: dict[tuple[int, int], float]  # (server pid, thread id) -> CPU seconds
    database: dict[int, float]  # PostgreSQL backend pid -> CPU seconds


async def cpu_sample(servers: Sequence[Server], admin: asyncpg.Connection | None) -> CpuSample:
    threads = {(s.pid, tid): cpu for s in servers for tid, cpu in thread_cpu(s.pid).items()}
    backends = await postgres_backends(admin, servers)
    return CpuSample(threads, {b: clock_ticks(Path(f"/proc/{b}/stat")) for b in backends})


async def thread_roles(session: aiohttp.ClientSession, servers: Sequence[Server]) -> dict[
        tuple[int, int], str]:
    """Each thread's part: the event loop (the main thread), the SQLite writer, or other."""
    roles: dict[tuple[int, int], str] = {}
    for s in servers:
        async with session.get(s.origin + THREADS_PATH) as response:
            names = await response.json()
        for tid, name in names.items():
            role = "loop" if int(tid) == s.pid else (
                "writer" if name.startswith("db-writer") else "other")
            roles[(s.pid, int(tid))] = role
    return roles


def cpu_split(before: CpuSample, after: CpuSample, roles: Mapping[tuple[int, int], str],
              requests: int) -> dict[str, Any]:
    """Service CPU microseconds per request by thread role, and database CPU-seconds per
    1,000 requests. A thread or backend that appeared during the run counts from zero."""
    per: dict[str, float] = {"loop": 0.0, "writer": 0.0, "other": 0.0}
    for key, cpu in after.threads.items():
        per[roles.get(key, "other")] += cpu - before.threads.get(key, 0.0)
    n = max(1, requests)
    out: dict[str, Any] = {f"cpu_us_{role}": round(1e6 * s / n, 1) for role, s in per.items()}
    out["cpu_us"] = round(1e6 * sum(per.values()) / n, 1)
    db = sum(cpu - before.database.get(b, 0.0) for b, cpu in after.database.items())
    out["db_cpu_s_per_1000"] = round(1000 * db / n, 3) if after.database else None
    return out


@contextlib.asynccontextmanager
async def server_process(kind: str, workdir: Path, *extra: str) -> AsyncIterator[Server]:
    """Start `--serve kind` in a subprocess, wait for its READY line, stop it afterwards.

    The server's stderr goes to workdir/server.log and is relayed, labelled, once it stopped,
    so its warnings are neither lost nor mixed into the results table.
    """
    log_path = workdir / "server.log"
    with open_log(log_path) as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(THIS_FILE), "--serve", kind, *extra,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_file,
            cwd=ROOT, env={**os.environ, KEY_VARIABLE: BENCH_KEY},
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        if not line.startswith(b"READY "):
            raise RuntimeError(f"{kind} server did not start: {line!r}; see {log_path}")
        yield Server(proc.pid, int(line.split()[1]), workdir)
    finally:
        await stop_process(proc)
        relay_log(f"{kind} server in {workdir.name}", log_path)


def open_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("wb")


def relay_log(label: str, path: Path, most: int = 12) -> None:
    """The server's warnings and errors (its per-message INFO lines are left in the file)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    lines = [line for line in lines if '"level": "info"' not in line]
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


@contextlib.asynccontextmanager
async def services(
    db_url: str, workdir: Path, count: int, fake: FakeTwilio, clock: str,
    service_flags: Sequence[str], paced: bool = True,
) -> AsyncIterator[list[Server]]:
    """`count` service processes on one database, each with its own folder (and spool)."""
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for i in range(count):  # one after the other: the first migrates an empty database
            extra = ["--db-url", db_url, "--db-dir", str(workdir / f"p{i}"),
                     "--twilio-url", fake.base_url, "--clock", clock, *service_flags]
            server = await stack.enter_async_context(
                server_process("full", workdir / f"p{i}", *extra, *(["--paced"] * paced)))
            servers.append(server)
        yield servers


def py_spy_path(folder: Path | None) -> str | None:
    """py-spy on PATH or beside this Python (the venv), and `folder` made; None without."""
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if folder is not None and exe is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return exe


@contextlib.asynccontextmanager
async def py_spy(folder: Path | None, rate: int, name: str,
                 servers: Sequence[Server]) -> AsyncIterator[None]:
    """With --profile: py-spy records each server while the timed batch runs (collapsed
    stacks, one file per process; `python -m bench.where_time_goes FILE` sums them)."""
    exe = py_spy_path(folder)
    if folder is None or exe is None:
        yield
        return
    procs = [
        await asyncio.create_subprocess_exec(
            exe, "record", "--pid", str(s.pid), "--rate", str(rate), "--format", "raw",
            "--threads", "--nonblocking", "--output", str(folder / f"{name}-p{i}.txt"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        for i, s in enumerate(servers)
    ]
    await asyncio.sleep(1.0)  # attached before the load starts
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        await asyncio.gather(*(proc.wait() for proc in procs))


# --- the databases -------------------------------------------------------------------------------


def _dsn(url: str) -> str:
    """asyncpg's own form of an SQLAlchemy URL (no driver name, no search_path)."""
    parsed = make_url(url).set(drivername="postgresql").difference_update_query(["search_path"])
    return parsed.render_as_string(hide_password=False)


@dataclass
class Database:
    url: str
    admin: asyncpg.Connection | None = None  # PostgreSQL: reads the backends and the counts
    schema: str | None = None

    def stored(self) -> int:
        """Inbound webhooks taken in (one provider event each), on SQLite."""
        path = make_url(self.url).database
        assert path is not None
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("SELECT count(*) FROM provider_events").fetchone()[0])

    async def count_stored(self) -> int:
        if self.admin is None:
            return self.stored()
        query = f'SELECT count(*) FROM "{self.schema}".provider_events'  # noqa: S608 - ours
        return int(await self.admin.fetchval(query))


def sqlite_url(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{folder / 'triage.db'}"


@contextlib.asynccontextmanager
async def database(setup: str, workdir: Path, postgres_url: str) -> AsyncIterator[Database]:
    """A fresh SQLite file, or a fresh PostgreSQL schema, dropped afterwards."""
    if setup.startswith("sqlite"):
        yield Database(sqlite_url(workdir))
        return
    schema = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(_dsn(postgres_url), timeout=10)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        url = make_url(postgres_url).update_query_dict({"search_path": schema})
        yield Database(url.render_as_string(hide_password=False), admin, schema)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def spooled(workdir: Path) -> int:
    return sum(1 for _ in workdir.glob("p*/spool/*.msg"))


# --- the measurements ----------------------------------------------------------------------------


# name -> service processes; `sqlite-no-metrics` is `sqlite` with [metrics] enabled = false,
# so that what the metrics cost shows in the same run.
SETUPS = {"sqlite": 1, "sqlite-no-metrics": 1, "postgres": 1, "postgres-2": 2}
NO_METRICS = "-no-metrics"


@dataclass(frozen=True)
class Options:
    requests: int
    warmup: int
    bare_requests: int
    postgres_requests: int
    connections: int
    replies: int
    reply_rate: float
    time_limit: float
    setups: tuple[str, ...]
    clocks: tuple[str, ...]
    postgres_url: str
    profile: Path | None
    profile_rate: int  # py-spy samples per second
    service_flags: tuple[str, ...]  # handed to each `--serve full`: logs and gc


async def measure_service(
    gen: Generator, fake: FakeTwilio, tmp: Path, setup: str, clock: str,
    warmup: Batch, timed: Batch, opts: Options,
) -> dict[str, Any]:
    # A folder of its own for each run: a setup given twice must not find the first's
    # database (its contacts, its WAL) and measure something else.
    workdir = Path(tempfile.mkdtemp(prefix=f"{setup}-{clock}-", dir=tmp))
    async with database(setup, workdir, opts.postgres_url) as db, \
            services(db.url, workdir, SETUPS[setup], fake, clock,
                     (*opts.service_flags, *(["--no-metrics"] if NO_METRICS in setup else []))
                     ) as servers:
        warm = await gen.send(servers, warmup)
        roles = await thread_roles(gen.session, servers)
        before = await cpu_sample(servers, db.admin)
        async with py_spy(opts.profile, opts.profile_rate, f"{setup}-{clock}", servers):
            load = await gen.send(servers, timed)
        after = await cpu_sample(servers, db.admin)
        roles.update(await thread_roles(gen.session, servers))
        stored = await db.count_stored()
    return {
        "setup": setup,
        "clock": clock,
        "processes": len(servers),
        **load.summary(),
        **cpu_split(before, after, roles, load.ok),
        "answered": warm.ok + load.ok,
        "stored": stored,
        "spooled": spooled(workdir),
    }


async def measure_bare(gen: Generator, tmp: Path, warmup: Batch, timed: Batch) -> dict[str, Any]:
    async with server_process("bare", tmp / "bare") as server:
        await gen.send([server], warmup)
        before = thread_cpu(server.pid)
        load = await gen.send([server], timed)
        cpu = sum(thread_cpu(server.pid).values()) - sum(before.values())
    return {**load.summary(), "cpu_us": round(1e6 * cpu / max(1, load.ok), 1)}


@dataclass
class Replies:
    """Webhook->reply latencies and what went missing."""

    latencies_ms: list[float] = field(default_factory=list)
    webhook_ms: list[float] = field(default_factory=list)
    errors: int = 0
    missing: int = 0
    servers: int = 0

    def summary(self, rate: float) -> dict[str, Any]:
        self.latencies_ms.sort()
        self.webhook_ms.sort()
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


async def wait_for_replies(fake: FakeTwilio, total: int) -> None:
    """Wait until the fake holds `total` messages; a shortfall is reported by the caller."""
    with contextlib.suppress(AssertionError):
        await fake.wait_for_messages(total, timeout=REPLY_WAIT)


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
    session: aiohttp.ClientSession, fake: FakeTwilio, tmp: Path, factory: WebhookFactory,
    opts: Options,
) -> Replies:
    """A fresh SQLite database per batch, so every webhook is a contact's first message
    (only a first message gets an automatic reply during business hours)."""
    out = Replies()
    for i, size in enumerate(batch_sizes(opts.replies, len(REPLY_NUMBERS))):
        warmup = [factory.make(n) for n in REPLY_WARMUP_NUMBERS]
        hooks = [factory.make(n) for n in REPLY_NUMBERS[:size]]
        workdir = tmp / f"replies-{i}"
        async with services(sqlite_url(workdir), workdir, 1, fake, "open",
                            opts.service_flags, paced=False) as (server,):
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


async def postgres_reachable(url: str) -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        conn = await asyncpg.connect(_dsn(url), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def bench(opts: Options, wrk: str | None) -> dict[str, Any]:
    load_before = load_average()
    factory = WebhookFactory()
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    connector = aiohttp.TCPConnector(limit=opts.connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    setups = list(opts.setups)
    skipped = None
    if any(not s.startswith("sqlite") for s in setups):
        skipped = await postgres_reachable(opts.postgres_url)
        if skipped:
            setups = [s for s in setups if s.startswith("sqlite")]
    runs = []
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            gen = Generator(session, wrk, opts.connections, opts.time_limit)
            print(f"generator: {gen.name}", flush=True)
            if skipped:
                print(f"PostgreSQL at {opts.postgres_url} unreachable ({skipped}): "
                      "PostgreSQL setups skipped", flush=True)
            with tempfile.TemporaryDirectory(prefix="bench-inbound-") as tmp_name:
                tmp = Path(tmp_name)
                warmup = Batch("warmup", factory.cycle(opts.warmup, LOAD_NUMBERS), tmp)
                timed = Batch("timed", factory.cycle(opts.requests, LOAD_NUMBERS), tmp)
                bare_warmup = Batch("bare-warmup", factory.cycle(opts.warmup, ALL_NUMBERS), tmp)
                bare_timed = Batch("bare", factory.cycle(opts.bare_requests, ALL_NUMBERS), tmp)
                # PostgreSQL takes a fraction of SQLite's rate here: fewer webhooks keep the
                # run short (the warm-up still covers all 400 numbers).
                pg_warmup = Batch("pg-warmup", warmup.hooks[:PG_WARMUP], tmp)
                pg_timed = Batch("pg-timed", timed.hooks[:opts.postgres_requests], tmp)
                bare = await measure_bare(gen, tmp, bare_warmup, bare_timed)
                for setup in setups:
                    batches = ((warmup, timed) if setup.startswith("sqlite")
                               else (pg_warmup, pg_timed))
                    for clock in opts.clocks:
                        run = await measure_service(
                            gen, fake, tmp, setup, clock, *batches, opts)
                        runs.append(run)
                        print(service_line(run, bare), flush=True)
                replies = await measure_replies(session, fake, tmp, factory, opts)
    finally:
        await fake.close()
    for run in runs:
        run["ratio"] = round(run["rps"] / bare["rps"], 3) if bare["rps"] else 0.0
    metrics_cost = metrics_ratios(runs)
    for clock, ratios in metrics_cost.items():
        # Runs of one setup differ by more than the metrics cost: the median of many
        # alternating pairs is the figure, and each pair is shown.
        print(f"metrics on / off, sqlite, {clock}: median {statistics.median(ratios):.3f} of "
              f"{', '.join(f'{r:.3f}' for r in ratios)} (target >= {METRICS_RATIO_TARGET})",
              flush=True)
    reply = replies.summary(opts.reply_rate)
    return {
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "generator": gen.name,
        "postgres_skipped": skipped,
        "clocks": {name: CLOCKS[name].about for name in opts.clocks},
        "bare": bare,
        "runs": runs,
        "targets": {"ratio": RATIO_TARGET, "p99_ms": P99_TARGET_MS, "cpu_us": CPU_TARGET_US,
                    "p99_within_p50_times": 3, "reply_p99_ms": REPLY_P99_TARGET_MS},
        "metrics_on_over_off": metrics_cost,
        "reply": reply,
        "reply_pass": replies.missing == 0 and reply["p99_ms"] <= REPLY_P99_TARGET_MS,
    }


METRICS_RATIO_TARGET = 0.95


def metrics_ratios(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per clock, SQLite's throughput with metrics on over that with them off, a ratio for
    each pair of runs in the order they ran (`--setups sqlite,sqlite-no-metrics` repeated)."""
    ratios: dict[str, list[float]] = {}
    for clock in dict.fromkeys(run["clock"] for run in runs):
        on = [r["rps"] for r in runs if r["setup"] == "sqlite" and r["clock"] == clock]
        off = [r["rps"] for r in runs if r["setup"] == "sqlite-no-metrics" and r["clock"] == clock]
        if pairs := [round(a / b, 3) for a, b in zip(on, off, strict=False) if b]:
            ratios[clock] = pairs
    return ratios


def json_safe(value: Any) -> Any:
    """NaN (no samples) becomes null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def service_line(run: Mapping[str, Any], bare: Mapping[str, Any]) -> str:
    ratio = run["rps"] / bare["rps"] if bare["rps"] else 0.0
    db = run["db_cpu_s_per_1000"]
    passed = (ratio >= RATIO_TARGET and run["p99_ms"] <= P99_TARGET_MS
              and run["cpu_us"] <= CPU_TARGET_US and run["p99_ms"] <= 3 * run["p50_ms"]
              and run["errors"] == 0 and run["spooled"] == 0)
    return (
        f"{run['setup']:<10} {run['clock']:<7} {run['rps']:6.0f} req/s  "
        f"p50 {run['p50_ms']:5.1f} ms  p99 {run['p99_ms']:6.1f} ms  ratio {ratio:.3f}  "
        f"CPU {run['cpu_us']:4.0f} us/req (loop {run['cpu_us_loop']:.0f}, writer "
        f"{run['cpu_us_writer']:.0f}, other {run['cpu_us_other']:.0f})"
        + (f"  DB {db:.3f} CPU-s/1000" if db is not None else "")
        + f"  [{run['ok']} ok, {run['errors']} errors, {run['stored']} stored of "
        f"{run['answered']} answered, {run['spooled']} spooled"
        + ("" if run["all_sent"] else ", TIME LIMIT before all were sent")
        + f"]  {verdict(passed)}"
    )


def report(result: Mapping[str, Any]) -> str:
    m, bare, reply = result["machine"], result["bare"], result["reply"]
    lines = [
        f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['date']}"
        f"  (aiohttp {m['aiohttp']}, SQLAlchemy {m['sqlalchemy']}; "
        f"load average {m['load_before']} before, {m['load_after']} after)",
        f"generator: {result['generator']}",
        *(f"clock {name}: {about}" for name, about in result["clocks"].items()),
        f"targets: ratio >= {RATIO_TARGET}, p99 <= {P99_TARGET_MS:g} ms and <= 3x p50, "
        f"CPU <= {CPU_TARGET_US:g} us/request",
        f"bare aiohttp      {bare['rps']:6.0f} req/s  p50 {bare['p50_ms']:5.1f} ms  "
        f"p99 {bare['p99_ms']:6.1f} ms  CPU {bare['cpu_us']:.0f} us/req  "
        f"[{bare['ok']} ok, {bare['errors']} errors]",
        *(service_line(run, bare) for run in result["runs"]),
        f"webhook->reply: p50 {reply['p50_ms']:.1f} ms  p99 {reply['p99_ms']:.1f} ms  "
        f"({reply['replied']} first contacts at {reply['rate_per_second']:g}/s, "
        f"{reply['missing']} missing; webhook answered p50 {reply['webhook_p50_ms']:.1f} ms "
        f"p99 {reply['webhook_p99_ms']:.1f} ms)  "
        f"(target p99 <= {REPLY_P99_TARGET_MS:g} ms)  {verdict(result['reply_pass'])}",
    ]
    for run in [bare, *result["runs"]]:
        if run["first_error"]:
            lines.append(f"{run.get('setup', 'bare')} {run.get('clock', '')}: "
                         f"first error: {run['first_error']}")
    busiest = max(m["load_before"] or 0, m["load_after"] or 0)
    if m["cores"] and busiest > m["cores"]:
        lines.append(
            f"warning: load average {busiest} on {m['cores']} cores: other processes took CPU "
            "from the servers; req/s and latencies are pessimistic, CPU/request less so"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, help="timed webhooks per setup (20000)")
    parser.add_argument("--warmup", type=int, help="untimed webhooks first (2000)")
    parser.add_argument("--bare-requests", type=int,
                        help="timed webhooks for the bare endpoint (100000)")
    parser.add_argument("--postgres-requests", type=int,
                        help="timed webhooks per PostgreSQL setup, at most --requests (5000); "
                             f"their warm-up is the first {PG_WARMUP} of --warmup")
    parser.add_argument("--connections", type=int, default=CONNECTIONS,
                        help="connections (wrk) or workers (Python client)")
    parser.add_argument("--setups", default=",".join(SETUPS),
                        help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--clocks", default=",".join(CLOCKS),
                        help=f"comma-separated, of {', '.join(CLOCKS)}")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="wrk when installed (auto), or the Python client")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--replies", type=int, help="webhook->reply first contacts (500)")
    parser.add_argument("--reply-rate", type=float, default=50.0, help="webhook->reply per s")
    parser.add_argument("--time-limit", type=float, default=300.0,
                        help="seconds after which a timed batch stops sending")
    parser.add_argument("--profile", type=Path,
                        help="record each timed batch with py-spy into this folder")
    parser.add_argument("--profile-rate", type=int, default=200,
                        help="py-spy samples per second with --profile (200)")
    parser.add_argument("--quick", action="store_true",
                        help="small smoke run: 3000 requests (1000 on PostgreSQL), 500 warm-up, "
                             "15000 bare, 100 replies, unless given")
    parser.add_argument("--log-level", default="INFO",
                        help="the services' log level (INFO, as `python -m bot run` logs)")
    parser.add_argument("--no-gc-tuning", dest="tune_gc", action="store_false",
                        help="leave the services' garbage collector as Python sets it")
    parser.add_argument("--json", type=Path, help="write the JSON summary here")
    # Internal: how this script starts the servers under test.
    parser.add_argument("--serve", choices=("full", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--db-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--twilio-url", help=argparse.SUPPRESS)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="open", help=argparse.SUPPRESS)
    parser.add_argument("--paced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-metrics", dest="metrics", action="store_false",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = ("requests", "warmup", "bare_requests", "postgres_requests", "replies")
    defaults = (3000, 500, 15000, 1000, 100) if args.quick else (20000, 2000, 100000, 5000, 500)
    for name, default in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.setups = tuple(s for s in args.setups.split(",") if s)
    args.clocks = tuple(c for c in args.clocks.split(",") if c)
    if not set(args.setups) <= set(SETUPS) or not set(args.clocks) <= set(CLOCKS):
        parser.error(f"--setups takes {', '.join(SETUPS)}; --clocks takes {', '.join(CLOCKS)}")
    if min(args.requests, args.bare_requests, args.connections, args.replies,
           args.profile_rate) < 1 or args.reply_rate <= 0:
        parser.error("--requests, --bare-requests, --connections, --replies, --reply-rate "
                     "and --profile-rate must be positive")
    if args.warmup < 0 or args.time_limit <= 0:
        parser.error("--warmup must not be negative and --time-limit must be positive")
    if args.serve == "full" and (args.db_url is None or args.db_dir is None
                                 or args.twilio_url is None):
        parser.error("--serve full needs --db-url, --db-dir and --twilio-url")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        # As `python -m bot run` logs: JSON lines on stderr (here a file), INFO by default,
        # so the per-message lines are part of what is measured.
        configure_logging(args.log_level)
        asyncio.run(serve(args))
        return 0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    wrk = shutil.which("wrk") if args.generator != "python" else None
    if args.generator == "wrk" and wrk is None:
        raise SystemExit("--generator wrk: wrk is not installed (apt-get install wrk)")
    opts = Options(
        args.requests, args.warmup, args.bare_requests,
        min(args.postgres_requests, args.requests), args.connections, args.replies,
        args.reply_rate, args.time_limit, args.setups, args.clocks, args.postgres_url,
        args.profile, args.profile_rate,
        ("--log-level", args.log_level, *(() if args.tune_gc else ("--no-gc-tuning",))),
    )
    result = asyncio.run(bench(opts, wrk))
    print(report(result), flush=True)
    summary = json.dumps(json_safe(result))
    if args.json:
        args.json.write_text(summary + "\n", encoding="utf-8")
    else:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

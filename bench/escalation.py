"""Benchmark of on-call paging: signed emergency webhooks through `python -m bot run`.

Run from the repository root with the project's virtualenv:

    .venv/bin/python -m bench.escalation            # full run, about 40 seconds
    .venv/bin/python -m bench.escalation --quick    # smoke check, about 30 seconds
    .venv/bin/python -m bench.escalation --json /tmp/escalation.json

One run measures:

1. webhook->first page: --emergencies signed inbound SMS "he has a gun", each from a distinct
   fictional number (so each opens its own escalation, which pages at once, at step 0),
   sent at a steady --rate: from sending the webhook to the fake Twilio accepting the page
   to the on-call number (target p99 <= 250 ms);
2. step due->re-page: --repages emergencies with repage_after_seconds = 5 and
   sweep_interval_seconds = 1: from each escalation's due moment to the fake accepting its
   re-page (target max <= sweep interval + 1 s). It also counts escalations re-paged twice.

The service is the real command, `python -m bot run --config FILE`, in a subprocess on a
fresh SQLite database per phase, with one on-call member added first by
`python -m bot staff add`. Its clock is real time (business hours do not matter to pages).
The fake Twilio runs here, in the client process, like the real Twilio would run elsewhere,
so both ends of every timing are time.monotonic in this process. All traffic stays on
127.0.0.1, on ports the OS picks.

Pages are matched to webhooks without relying on timing order: after a phase the service is
stopped and its database read, escalation id -> contact's address hash -> the number that
sent the webhook, and each page is read for its "EMERGENCY #n".

The exit status is 0 whether the targets pass or fail (this is a measurement, not a test);
it is non-zero only if something crashed. A JSON summary is written to --json PATH, or else
printed as the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
# `python bench/escalation.py` puts bench/ first on sys.path rather than the repository root;
# `tests` is not an installed package.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.inbound import (  # noqa: E402
    json_safe,
    load_average,
    machine,
    percentile,
    relay_log,
    verdict,
)
from bot.crypto import Cipher, generate_key  # noqa: E402
from bot.domain import Channel  # noqa: E402
from tests.fakes.twilio_api import FakeTwilio, SentSms  # noqa: E402
from tests.fixtures import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    OUR_NUMBER,
    encode_form,
    load_twilio_form,
    set_config_keys,
    twilio_signature,
)
from tests.subprocesses import (  # noqa: E402
    ONCALL_PHONE,
    ONCALL_USER,
    add_oncall_staff,
    free_port,
    service_env,
)

INBOUND_PATH = "/webhooks/twilio/sms"
EMERGENCY_TEXT = "he has a gun"
# 555-0100..0199 is fictional in every area code. Area 314 is left out entirely: it holds the
# service's own number (+13145550100) and the on-call phone. N11 codes are not area codes.
AREA_CODES = tuple(a for a in range(201, 1000) if a != 314 and a % 100 != 11)
PAGE_NUMBER = re.compile(r"^EMERGENCY #(\d+) ")
WARMUP = 5  # emergencies sent first, so a fresh process's cold first request is no sample

FIRST_PAGE_P99_TARGET_MS = 250.0
REPAGE_AFTER_SECONDS = 5
SWEEP_INTERVAL_SECONDS = 1
REPAGE_MAX_TARGET_SECONDS = SWEEP_INTERVAL_SECONDS + 1.0
NO_REPAGE_SECONDS = 3600  # phase 1 pages only once
START_TIMEOUT = 60.0  # imports and migrations on a cold, slow machine
STOP_TIMEOUT = 15.0
REQUEST_TIMEOUT = 30.0
PAGE_WAIT = 30.0  # how long pages may still come after the last expected moment
SETTLE_SECONDS = 3 * SWEEP_INTERVAL_SECONDS + 0.5  # sweeps that must re-page nobody again
POLL_SECONDS = 0.02
def contact_number(i: int) -> str:
    """The i-th fictional contact: consecutive contacts differ in area code."""
    area = AREA_CODES[i % len(AREA_CODES)]
    return f"+1{area}5550{100 + i // len(AREA_CODES)}"


# --- the service under test ------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    repage_after_seconds: int
    sweep_interval_seconds: int


def write_config(folder: Path, port: int, twilio_url: str, policy: Policy,
                 sms_rate: float) -> Path:
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text = set_config_keys(example, {
        "server": {"port": port, "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": f"sqlite+aiosqlite:///{folder / 'triage.db'}"},
        "sms": {"enabled": True, "account_sid": ACCOUNT_SID, "from_number": OUR_NUMBER,
                "api_base_url": twilio_url, "max_per_second": sms_rate},
        "oncall": {"rotation": [ONCALL_USER]},
        "escalation": {"repage_after_seconds": policy.repage_after_seconds,
                       "everyone_after_seconds": NO_REPAGE_SECONDS, "repeats": 0,
                       "sweep_interval_seconds": policy.sweep_interval_seconds},
    })
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class Service:
    url: str  # the public URL, which webhooks are signed against
    db: Path
    cipher: Cipher


async def wait_healthy(session: aiohttp.ClientSession, url: str,
                       proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while proc.returncode is None and time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the service at {url} never became healthy (exit {proc.returncode})")


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, as an operator stops it; SIGKILL if it does not stop in time."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def service(session: aiohttp.ClientSession, folder: Path, fake: FakeTwilio,
                  policy: Policy, sms_rate: float) -> AsyncIterator[Service]:
    """`python -m bot run` on a fresh database in `folder`, with the on-call member added.

    Its stderr goes to folder/service.log and is relayed, labelled, once it stopped, so its
    warnings are neither lost nor mixed into the results table.
    """
    port = free_port()
    key = generate_key()
    env = service_env(key, log_level="WARNING")  # per-request logs would be measured
    config = write_config(folder, port, fake.base_url, policy, sms_rate)
    await add_oncall_staff(folder, config, env, START_TIMEOUT)
    log_path = folder / "service.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--config", str(config),
            cwd=folder, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(session, url, proc)
        yield Service(url, folder / "triage.db", Cipher.from_env_value(key))
    finally:
        await stop(proc)
        relay_log(f"service in {folder.name}", log_path)


# --- the load generator ----------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    number: str
    body: bytes
    headers: Mapping[str, str]


class WebhookFactory:
    """Signed "he has a gun" webhooks, each with a MessageSid not used before in this run.
    Everything is signed up front so the client's HMAC cost is never inside a timing."""

    def __init__(self) -> None:
        self._form = load_twilio_form("inbound_sms", Body=EMERGENCY_TEXT)
        self._sid = 0

    def make(self, url: str, number: str) -> Webhook:
        self._sid += 1
        sid = f"SM{self._sid:032x}"
        form = {**self._form, "From": number, "MessageSid": sid, "SmsMessageSid": sid,
                "SmsSid": sid}
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url + INBOUND_PATH, form),
        }
        return Webhook(number, encode_form(form).encode(), headers)


@dataclass
class Sent:
    """When each webhook left, by number, and what went wrong."""

    at: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    first_error: str | None = None


async def post(session: aiohttp.ClientSession, url: str, hook: Webhook) -> str | None:
    """Send one webhook; None if it was answered 200, else what went wrong."""
    try:
        async with session.post(url + INBOUND_PATH, data=hook.body,
                                headers=hook.headers) as response:
            await response.read()
            return None if response.status == 200 else f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def steady(session: aiohttp.ClientSession, url: str, hooks: Sequence[Webhook],
                 rate: float) -> Sent:
    """Post `hooks` at a steady `rate`, not waiting for answers before the next one."""
    sent = Sent()

    async def send(hook: Webhook) -> None:
        sent.at[hook.number] = time.monotonic()
        error = await post(session, url, hook)
        if error is not None:
            sent.errors += 1
            sent.first_error = sent.first_error or error

    start = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    for i, hook in enumerate(hooks):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(send(hook)))
    await asyncio.gather(*tasks)
    return sent


def pages(fake: FakeTwilio) -> list[SentSms]:
    """What went to the on-call phone; the contacts' emergency replies are not pages."""
    return [sms for sms in fake.sent if sms.to == ONCALL_PHONE]


async def wait_for_pages(fake: FakeTwilio, total: int, seconds: float) -> None:
    """Wait until `total` pages arrived or `seconds` passed; the caller counts shortfalls."""
    deadline = time.monotonic() + seconds
    while len(pages(fake)) < total:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(POLL_SECONDS)


def escalation_numbers(db: Path, cipher: Cipher, numbers: Sequence[str]) -> dict[int, str]:
    """Escalation id -> the number whose webhook opened it, read from the stopped service's
    database: its contacts hold only a keyed hash of their number."""
    by_hash = {cipher.address_hash(Channel.SMS, number): number for number in numbers}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT e.id, c.address_hash FROM escalations e"
            " JOIN conversations v ON v.id = e.conversation_id"
            " JOIN contacts c ON c.id = v.contact_id"
        ).fetchall()
    return {escalation: by_hash[digest] for escalation, digest in rows if digest in by_hash}


def pages_by_number(found: Sequence[SentSms], owners: Mapping[int, str]) -> dict[str, list[float]]:
    """Acceptance times of the pages for each number's escalation, in order."""
    times: dict[str, list[float]] = {}
    for sms in found:
        match = PAGE_NUMBER.match(sms.body)
        owner = owners.get(int(match[1])) if match else None
        if owner is not None:
            times.setdefault(owner, []).append(sms.accepted_at_monotonic)
    return {number: sorted(at) for number, at in times.items()}


@dataclass(frozen=True)
class Options:
    emergencies: int
    rate: float
    repages: int
    repage_rate: float
    sms_rate: float


async def warm_up(session: aiohttp.ClientSession, fake: FakeTwilio, svc: Service,
                  factory: WebhookFactory, first: int) -> list[str]:
    """A few emergencies from their own numbers; returns them so they can be left out."""
    numbers = [contact_number(first + i) for i in range(WARMUP)]
    before = len(pages(fake))
    await steady(session, svc.url, [factory.make(svc.url, n) for n in numbers], 10.0)
    await wait_for_pages(fake, before + WARMUP, PAGE_WAIT)
    return numbers


async def measure_first_page(session: aiohttp.ClientSession, fake: FakeTwilio, tmp: Path,
                             factory: WebhookFactory, opts: Options) -> dict[str, Any]:
    numbers = [contact_number(WARMUP + i) for i in range(opts.emergencies)]
    folder = tmp / "first-page"
    folder.mkdir()
    policy = Policy(NO_REPAGE_SECONDS, SWEEP_INTERVAL_SECONDS)
    async with service(session, folder, fake, policy, opts.sms_rate) as svc:
        await warm_up(session, fake, svc, factory, 0)
        hooks = [factory.make(svc.url, n) for n in numbers]
        before = pages(fake)
        sent = await steady(session, svc.url, hooks, opts.rate)
        await wait_for_pages(fake, len(before) + len(numbers), PAGE_WAIT)
        found = pages(fake)[len(before):]
    by_number = pages_by_number(found, escalation_numbers(svc.db, svc.cipher, numbers))
    latencies = [(at[0] - sent.at[n]) * 1000 for n, at in by_number.items() if n in sent.at]
    return {
        "emergencies": len(numbers),
        "rate_per_second": opts.rate,
        "sms_max_per_second": opts.sms_rate,
        "paged": len(latencies),
        "missing": len(numbers) - len(latencies),
        "webhook_errors": sent.errors,
        "first_error": sent.first_error,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies, default=math.nan), 2),
    }


async def measure_repage(session: aiohttp.ClientSession, fake: FakeTwilio, tmp: Path,
                         factory: WebhookFactory, opts: Options) -> dict[str, Any]:
    """Each escalation's step is due REPAGE_AFTER_SECONDS after the service opened it, a
    moment inside the service. It lies between the webhook's sending and the first page's
    acceptance, so lateness is reported from both: `late` (from the webhook, never less
    than the truth, the one judged) and `late_from_first_page` (never more)."""
    first = 2 * WARMUP + opts.emergencies  # numbers not used by phase 1
    numbers = [contact_number(first + WARMUP + i) for i in range(opts.repages)]
    folder = tmp / "repage"
    folder.mkdir()
    policy = Policy(REPAGE_AFTER_SECONDS, SWEEP_INTERVAL_SECONDS)
    async with service(session, folder, fake, policy, opts.sms_rate) as svc:
        before = len(pages(fake))
        warmup = await warm_up(session, fake, svc, factory, first)
        hooks = [factory.make(svc.url, n) for n in numbers]
        sent = await steady(session, svc.url, hooks, opts.repage_rate)
        expected = before + 2 * (len(warmup) + len(numbers))
        await wait_for_pages(fake, expected, REPAGE_AFTER_SECONDS + PAGE_WAIT)
        await asyncio.sleep(SETTLE_SECONDS)  # a doubled re-page would land in here
        found = pages(fake)[before:]
    by_number = pages_by_number(found, escalation_numbers(svc.db, svc.cipher, numbers))
    late, late_from_first = [], []
    for number, at in by_number.items():
        if len(at) >= 2 and number in sent.at:
            late.append(at[1] - (sent.at[number] + REPAGE_AFTER_SECONDS))
            late_from_first.append(at[1] - (at[0] + REPAGE_AFTER_SECONDS))
    return {
        "escalations": len(numbers),
        "rate_per_second": opts.repage_rate,
        "repage_after_seconds": REPAGE_AFTER_SECONDS,
        "sweep_interval_seconds": SWEEP_INTERVAL_SECONDS,
        "repaged": len(late),
        "missing": len(numbers) - len(late),
        "doubled": sum(1 for at in by_number.values() if len(at) > 2),
        "webhook_errors": sent.errors,
        "first_error": sent.first_error,
        "p50_s": round(percentile(late, 50), 3),
        "p99_s": round(percentile(late, 99), 3),
        "max_s": round(max(late, default=math.nan), 3),
        "from_first_page_p99_s": round(percentile(late_from_first, 99), 3),
        "from_first_page_max_s": round(max(late_from_first, default=math.nan), 3),
    }


async def bench(opts: Options) -> dict[str, Any]:
    load_before = load_average()
    factory = WebhookFactory()
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with tempfile.TemporaryDirectory(prefix="bench-escalation-") as tmp_name:
                tmp = Path(tmp_name)
                first = await measure_first_page(session, fake, tmp, factory, opts)
                repage = await measure_repage(session, fake, tmp, factory, opts)
    finally:
        await fake.close()
    first_ok = (first["missing"] == 0 and first["webhook_errors"] == 0
                and first["p99_ms"] <= FIRST_PAGE_P99_TARGET_MS)
    repage_ok = (repage["missing"] == 0 and repage["doubled"] == 0
                 and repage["webhook_errors"] == 0
                 and repage["max_s"] <= REPAGE_MAX_TARGET_SECONDS)
    return {
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "first_page": first,
        "first_page_p99_target_ms": FIRST_PAGE_P99_TARGET_MS,
        "first_page_pass": first_ok,
        "repage": repage,
        "repage_max_target_s": REPAGE_MAX_TARGET_SECONDS,
        "repage_pass": repage_ok,
    }


def report(result: Mapping[str, Any]) -> str:
    m, first, repage = result["machine"], result["first_page"], result["repage"]
    lines = [
        f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['date']}"
        f"  (aiohttp {m['aiohttp']}, SQLAlchemy {m['sqlalchemy']}; "
        f"load average {m['load_before']} before, {m['load_after']} after)",
        f"webhook->first page: p50 {first['p50_ms']:.1f} ms  p99 {first['p99_ms']:.1f} ms  "
        f"max {first['max_ms']:.1f} ms  ({first['paged']} emergencies at "
        f"{first['rate_per_second']:g}/s, {first['missing']} missing, "
        f"{first['webhook_errors']} webhook errors; SMS limit "
        f"{first['sms_max_per_second']:g}/s)  "
        f"(target p99 <= {result['first_page_p99_target_ms']:g} ms)  "
        f"{verdict(result['first_page_pass'])}",
        f"step due->re-page  : p50 {repage['p50_s']:.3f} s  p99 {repage['p99_s']:.3f} s  "
        f"max {repage['max_s']:.3f} s  (due from the webhook; from the first page: "
        f"p99 {repage['from_first_page_p99_s']:.3f} s max "
        f"{repage['from_first_page_max_s']:.3f} s)  ({repage['repaged']} escalations, "
        f"re-page after {repage['repage_after_seconds']} s, sweep every "
        f"{repage['sweep_interval_seconds']} s, {repage['missing']} missing, "
        f"{repage['doubled']} doubled)  "
        f"(target max <= {result['repage_max_target_s']:g} s)  "
        f"{verdict(result['repage_pass'])}",
    ]
    for name in ("first_page", "repage"):
        if result[name]["first_error"]:
            lines.append(f"{name}: first webhook error: {result[name]['first_error']}")
    busiest = max(m["load_before"] or 0, m["load_after"] or 0)
    if m["cores"] and busiest > m["cores"]:
        lines.append(
            f"warning: load average {busiest} on {m['cores']} cores: other processes took CPU "
            "from the service; latencies are pessimistic"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emergencies", type=int, help="phase 1 emergencies (200)")
    parser.add_argument("--rate", type=float, default=20.0, help="phase 1 webhooks/s")
    parser.add_argument("--repages", type=int, help="phase 2 emergencies (30)")
    parser.add_argument("--repage-rate", type=float, default=10.0, help="phase 2 webhooks/s")
    parser.add_argument(
        "--sms-rate", type=float, default=1000.0,
        help="the service's [sms] max_per_second; high so the limit does not shape the "
        "latency (the example config's 10 makes pages queue behind contact replies)",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small smoke run: 60 and 10 emergencies, unless given")
    parser.add_argument("--json", type=Path, help="write the JSON summary here")
    args = parser.parse_args(argv)
    defaults = (60, 10) if args.quick else (200, 30)
    for name, default in zip(("emergencies", "repages"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.emergencies, args.repages) < 1 or min(args.rate, args.repage_rate) <= 0:
        parser.error("--emergencies, --repages, --rate and --repage-rate must be positive")
    if args.sms_rate <= 0:
        parser.error("--sms-rate must be positive")
    # Numbers must stay distinct: 100 per area code.
    if 3 * WARMUP + args.emergencies + args.repages > 100 * len(AREA_CODES):
        parser.error("too many emergencies for the fictional numbers")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(args.emergencies, args.rate, args.repages, args.repage_rate, args.sms_rate)
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

"""Running `python -m bot` as a real process, for the tests and benchmarks that kill,
restart or double it: starting and killing it, waiting for it to answer, and reading what it
did from its log, the fake Twilio and the database."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.crypto import generate_key
from bot.domain import OutboxStatus
from bot.storage.models import Escalation, Outbox
from tests.fakes.twilio_api import FakeTwilio, SentSms
from tests.fixtures import ACCOUNT_SID, AUTH_TOKEN, OUR_NUMBER, deep_merge, set_config_keys
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
ONCALL_USER = "alice"
ONCALL_PHONE = "+13145550142"
PASSWORD = "correct horse battery staple"  # a test password, not a secret
INBOUND_PATH = "/webhooks/twilio/sms"
WAIT_SECONDS = 30.0  # the bound on every wait for a process
# Logged at DEBUG by every escalation sweep (schedules/escalations.py), after its commit.
SWEEP_EVENT = '"escalation_swept"'


def service_env(key: str | None = None, log_level: str | None = None) -> dict[str, str]:
    """This environment without any TRIAGE_* setting of whoever runs it, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(
        TRIAGE_ENCRYPTION_KEY=key or generate_key(),
        TRIAGE_SMS_AUTH_TOKEN=AUTH_TOKEN,
        PTB_TIMEDELTA="true",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    if log_level:
        env["TRIAGE_LOG_LEVEL"] = log_level
    return env


def write_service_config(folder: Path, port: int, database_url: str, twilio_url: str,
                         overrides: dict[str, Any] | None = None) -> Path:
    """config.toml for one `python -m bot run`: the example config on its own port (and
    public_url: Twilio signatures are checked against it), the run's database, the fake
    Twilio, alice on call; `overrides` merged in, table by table."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = deep_merge({
        "server": {"port": port, "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": database_url},
        "sms": {"enabled": True, "account_sid": ACCOUNT_SID, "from_number": OUR_NUMBER,
                "api_base_url": twilio_url},
        "oncall": {"rotation": [ONCALL_USER]},
    }, overrides or {})
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    path = folder / "config.toml"
    path.write_text(set_config_keys(example, keys), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def add_oncall_staff(
    folder: Path, config: Path, env: dict[str, str], timeout: float = 30.0  # noqa: ASYNC109
) -> None:
    """`python -m bot staff add alice --role oncall --phone ...`, the password on stdin."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "staff", "add", ONCALL_USER, "--role", "oncall",
        "--phone", ONCALL_PHONE, "--config", str(config),
        cwd=folder, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(f"{PASSWORD}\n".encode()), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"staff add failed: {stderr.decode().strip()}")


@asynccontextmanager
async def running(folder: Path, config: Path, env: dict[str, str],
                  log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m bot run`, its stderr appended to `log`; killed on the way out whatever
    happened."""
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--config", str(config),
            cwd=folder, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )
    try:
        yield proc
    finally:
        await kill(proc)


def tail(*logs: Path, lines: int = 40) -> str:
    """The end of each service's log, for a failure message."""
    return "\n".join(
        "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        for log in logs if log.exists()
    )


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(proc.wait(), WAIT_SECONDS)


def alive(procs: Sequence[asyncio.subprocess.Process], logs: Sequence[Path]) -> None:
    """Fail at once if any of the processes has exited."""
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode is None, f"run exited:\n{tail(log)}"


async def wait_healthy(session: aiohttp.ClientSession, base: str,
                       proc: asyncio.subprocess.Process, log: Path) -> None:
    async def healthy() -> bool:
        alive([proc], [log])
        try:
            async with session.get(f"{base}/healthz") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False  # not listening yet

    await eventually(healthy, lambda: f"/healthz to answer:\n{tail(log)}", WAIT_SECONDS)


def sent_to(fake: FakeTwilio, number: str) -> list[SentSms]:
    return [sms for sms in fake.sent if sms.to == number]


async def wait_for_sent(fake: FakeTwilio, number: str, n: int, *logs: Path) -> list[SentSms]:
    """At least `n` messages to `number` at the fake Twilio; returns them all."""
    await eventually(lambda: len(sent_to(fake, number)) >= n,
                     lambda: f"{n} messages to {number}, got {sent_to(fake, number)!r}:\n"
                             f"{tail(*logs)}", WAIT_SECONDS)
    return sent_to(fake, number)


def sweeps(log: Path) -> int:
    """How many escalation sweeps the service logging to `log` has finished (it must run
    with TRIAGE_LOG_LEVEL=DEBUG)."""
    return log.read_text(encoding="utf-8", errors="replace").count(SWEEP_EVENT)


async def more_sweeps(n: int, procs: Sequence[asyncio.subprocess.Process],
                      logs: Sequence[Path]) -> None:
    """Wait until every process has finished `n` more escalation sweeps than it had when
    called. A sweep under way at the call may have read the database before it: the first
    one that ends after the call is not counted on to have seen what came before."""
    wanted = [sweeps(log) + n for log in logs]

    def done() -> bool:
        alive(procs, logs)
        return all(sweeps(log) >= want for log, want in zip(logs, wanted, strict=True))

    await eventually(done, lambda: f"{n} more sweeps by each process:\n{tail(*logs)}",
                     WAIT_SECONDS, every=0.05)


UNSETTLED = select(func.count()).select_from(Outbox).where(
    Outbox.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING]))


async def scalar(engine: AsyncEngine, query) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def escalations_opened(engine: AsyncEngine) -> dict[int, datetime]:
    """When each escalation opened, by its number: a step falls due counting from then."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(Escalation.id, Escalation.opened_at))
        return {number: opened for number, opened in rows}


async def outbox_drained(engine: AsyncEngine, procs: Sequence[asyncio.subprocess.Process],
                         logs: Sequence[Path], seconds: float = WAIT_SECONDS) -> None:
    """Wait for quiet: no outbox row pending or in flight, and the processes still up."""

    async def drained() -> bool:
        alive(procs, logs)
        return await scalar(engine, UNSETTLED) == 0

    await eventually(drained, lambda: f"the outbox to drain:\n{tail(*logs)}", seconds,
                     every=0.1)

"""Running `python -m bot` as a real process, for the tests and benchmarks that kill,
restart or double it."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from bot.crypto import generate_key
from tests.fixtures import AUTH_TOKEN

ROOT = Path(__file__).resolve().parent.parent
ONCALL_USER = "alice"
ONCALL_PHONE = "+13145550142"
PASSWORD = "correct horse battery staple"  # a test password, not a secret


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

"""The command line, run for real: `python -m bot ...` in a subprocess, against a config built
from config.example.toml and an SQLite file in the test's folder. Success exits 0; bad input
exits non-zero with exactly one line on stderr and no traceback."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.cli import _parser, _writes
from bot.crypto import Cipher, generate_key
from bot.domain import Channel
from bot.storage.database import ensure_schema, make_engine, run_in_transaction
from bot.storage.models import ProviderEvent, Staff
from tests.conftest import ROOT
from tests.waiting import eventually

KEY = generate_key()
PASSWORD = "correct horse battery staple"
PHONE = "+13145550142"
TABLES = {"contacts", "conversations", "messages", "outbox", "provider_events", "staff",
          "alembic_version"}
EXAMPLE_DB_LINE = 'url = "sqlite+aiosqlite:///triage.db"'
EXAMPLE_PORT_LINE = "port = 8080"
STARTUP_SECONDS = 15
SHUTDOWN_SECONDS = 10
IDLE_SECONDS = 2.0
IDLE_CPU_SHARE = 0.25  # an idle service waits on sockets and timers; it does not spin


def cli_env(**changes: str | None) -> dict[str, str]:
    """This process's environment without any TRIAGE_* setting, plus the test's secrets;
    a None in `changes` removes that variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(
        TRIAGE_ENCRYPTION_KEY=KEY,
        TRIAGE_SESSION_SECRET="cli-test-session-secret",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def replace_line(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"config.example.toml no longer has exactly one {old!r}"
    return text.replace(old, new)


def write_config(folder: Path, port: int | None = None, port_value: str | None = None) -> Path:
    """config.toml in `folder`: the example, with the database at folder/triage.db."""
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text = replace_line(text, EXAMPLE_DB_LINE,
                        f'url = "sqlite+aiosqlite:///{folder / "triage.db"}"')
    if port is not None or port_value is not None:
        text = replace_line(text, EXAMPLE_PORT_LINE, f"port = {port_value or port}")
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def bot(folder: Path, *args: str, stdin: str = "",
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m bot ARGS` in `folder` (where the default config.toml lives)."""
    return subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-m", "bot", *args],
        cwd=folder, env=env or cli_env(), input=stdin, capture_output=True, text=True,
        timeout=120, check=False,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def query(folder: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on folder/triage.db, committed; return its rows."""
    with closing(sqlite3.connect(folder / "triage.db")) as db, db:
        return db.execute(sql, params).fetchall()


def count(folder: Path, table: str) -> int:
    return query(folder, f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 (our table names)


def add_staff(folder: Path, username: str, role: str, *extra: str,
              password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    return bot(folder, "staff", "add", username, "--role", role, *extra, stdin=password + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def poll(url: str, process: subprocess.Popen[bytes], log: Path, want: int = 200) -> Any:
    """GET `url` until it answers `want`, for at most STARTUP_SECONDS; return the JSON body."""

    def answer() -> tuple[Any] | None:  # the body in a tuple: true even if it is empty
        assert process.poll() is None, f"run exited early:\n{log.read_text()}"
        try:
            status, body = get_json(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return (body,) if status == want else None

    def what() -> str:
        return f"{url} to answer {want}:\n{log.read_text()}"

    [body] = asyncio.run(eventually(answer, what, STARTUP_SECONDS, every=0.1))
    return body


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@pytest.fixture(scope="module")
def staffed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database with alice (oncall, with a phone) and bob (staff)."""
    folder = tmp_path_factory.mktemp("staffed")
    write_config(folder)
    assert_ok(bot(folder, "db", "upgrade"))
    assert_ok(add_staff(folder, "alice", "oncall", "--phone", PHONE))
    assert_ok(add_staff(folder, "bob", "staff"))
    return folder


# --- keygen ----------------------------------------------------------------------------------


def test_keygen_prints_one_fresh_usable_key(tmp_path: Path) -> None:
    first, second = bot(tmp_path, "keygen"), bot(tmp_path, "keygen")

    for result in (first, second):
        assert_ok(result)
        assert len(result.stdout.splitlines()) == 1
        Cipher.from_env_value(result.stdout.strip())
    assert first.stdout != second.stdout


# --- check-config ----------------------------------------------------------------------------


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = bot(tmp_path, "check-config", "--config", str(config))

    assert_ok(result)
    assert result.stdout.startswith("ok")
    # What the hours mean, for the coming week, in words (the example's office hours).
    words = result.stdout.splitlines()
    assert words[1] == "Hours in America/Chicago, the coming week:"
    days = words[2:9]
    assert len(days) == 7 and all(re.match(r"  \w{3} \d\d \w{3}: ", d) for d in days)
    assert any(d.endswith(": 09:00-17:00") for d in days)
    assert any(d.endswith(": closed") for d in days)  # a weekend
    assert words[9].startswith("  Next daylight-saving change: ")
    assert "the clocks go" in words[9]


@pytest.mark.parametrize(
    ("config_name", "port_value", "env_changes", "named"),
    [
        pytest.param("missing.toml", None, {}, "config: file not found", id="missing-file"),
        pytest.param("config.toml", '"x"', {}, "server.port", id="bad-value"),
        pytest.param("config.toml", None, {"TRIAGE_ENCRYPTION_KEY": None},
                     "TRIAGE_ENCRYPTION_KEY", id="no-key"),
        pytest.param("config.toml", None, {"TRIAGE_ENCRYPTION_KEY": "not-a-key"},
                     "TRIAGE_ENCRYPTION_KEY", id="malformed-key"),
        pytest.param("config.toml", None, {"TRIAGE_SMS_AUTH_TOKEN": "   "},
                     "TRIAGE_SMS_AUTH_TOKEN", id="whitespace-only-auth-token"),
        pytest.param("config.toml", None, {"TRIAGE_ENCRYPTION_KEY": " \t "},
                     "TRIAGE_ENCRYPTION_KEY", id="whitespace-only-key"),
    ],
)
def test_check_config_fails_with_one_line_naming_the_problem(
    tmp_path: Path, config_name: str, port_value: str | None,
    env_changes: dict[str, str | None], named: str,
) -> None:
    write_config(tmp_path, port_value=port_value)

    result = bot(tmp_path, "check-config", "--config", config_name, env=cli_env(**env_changes))

    assert_one_line_error(result, named)
    assert result.stdout == ""


def test_check_config_reports_rota_gaps(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(replace_line(config.read_text(), "rotation = []",
                                   'rotation = ["alice", "bob", "ghost"]'))
    assert_ok(add_staff(tmp_path, "alice", "oncall", "--phone", PHONE))
    assert_ok(add_staff(tmp_path, "bob", "oncall"))

    result = bot(tmp_path, "check-config", "--config", str(config))

    assert_ok(result)
    assert "warning: [oncall] rotation: ghost is not a staff member (a gap in the rota)" in (
        result.stderr
    )
    assert "warning: [oncall] rotation: bob has no phone or Telegram chat for pages" in (
        result.stderr
    )
    assert "alice" not in result.stderr


@pytest.mark.parametrize(
    ("allow", "env_changes", "warning"),
    [
        pytest.param("[]", {}, "warning: [metrics] allow is empty and TRIAGE_METRICS_TOKEN is "
                     "not set: nothing can read /metrics", id="nobody-can-scrape"),
        pytest.param('["0.0.0.0/0"]', {"TRIAGE_METRICS_TOKEN": "cli-metrics-token-0123"},
                     "warning: [metrics] allow lets every address read /metrics", id="everyone"),
        pytest.param("[]", {"TRIAGE_METRICS_TOKEN": "cli-metrics-token-0123"}, None,
                     id="token-only"),
    ],
)
def test_check_config_warns_when_metrics_access_looks_wrong(
        tmp_path: Path, allow: str, env_changes: dict[str, str], warning: str | None) -> None:
    config = write_config(tmp_path)
    config.write_text(replace_line(config.read_text(), 'allow = ["127.0.0.1/32", "::1/128"]',
                                   f"allow = {allow}"))

    result = bot(tmp_path, "check-config", "--config", str(config), env=cli_env(**env_changes))

    assert_ok(result)
    metrics_lines = [line for line in result.stderr.splitlines() if "[metrics]" in line]
    assert len(metrics_lines) == (0 if warning is None else 1)
    assert all(line.startswith(str(warning)) for line in metrics_lines)
    assert "cli-metrics-token" not in result.stdout + result.stderr


# --- db upgrade ------------------------------------------------------------------------------


def test_db_upgrade_creates_the_tables_and_can_run_again(tmp_path: Path) -> None:
    write_config(tmp_path)

    assert_ok(bot(tmp_path, "db", "upgrade"))
    tables = {name for (name,) in query(tmp_path, "SELECT name FROM sqlite_master")}
    assert TABLES - tables == set()
    assert_ok(bot(tmp_path, "db", "upgrade"))
    assert len(query(tmp_path, "SELECT version_num FROM alembic_version")) == 1


def test_db_upgrade_of_unknown_revision_fails_with_one_line(tmp_path: Path) -> None:
    write_config(tmp_path)
    assert_ok(bot(tmp_path, "db", "upgrade"))
    query(tmp_path, "UPDATE alembic_version SET version_num = 'from_the_future'")

    assert_one_line_error(bot(tmp_path, "db", "upgrade"), "from_the_future")


# --- staff add -------------------------------------------------------------------------------


def test_staff_add_stores_hash_role_and_encrypted_phone(tmp_path: Path) -> None:
    write_config(tmp_path)

    assert_ok(add_staff(tmp_path, "alice", "oncall", "--phone", PHONE))

    [(role, password_hash, phone_enc, phone_hash)] = query(
        tmp_path, "SELECT role, password_hash, phone_enc, phone_hash FROM staff"
        " WHERE username = 'alice'"
    )
    assert role == "oncall"
    assert password_hash.startswith("$argon2id$")
    cipher = Cipher.from_env_value(KEY)
    assert cipher.decrypt(phone_enc) == PHONE
    assert phone_hash == cipher.address_hash(Channel.SMS, PHONE)
    for stored in tmp_path.glob("triage.db*"):
        assert PHONE[2:].encode() not in stored.read_bytes(), stored.name
        assert PASSWORD.encode() not in stored.read_bytes(), stored.name


@pytest.mark.parametrize(
    ("username", "args", "password", "named"),
    [
        pytest.param("alice", [], PASSWORD, "already", id="same-username"),
        pytest.param("carol", ["--phone", PHONE], PASSWORD, "already", id="same-phone"),
        pytest.param("carol", ["--phone", "555"], PASSWORD, "--phone", id="bad-phone"),
        pytest.param("carol", [], "short", "password", id="short-password"),
        pytest.param("carol", [], "", "password", id="no-password"),
    ],
)
def test_staff_add_refuses_bad_input_with_one_line(
    staffed: Path, username: str, args: list[str], password: str, named: str
) -> None:
    before = count(staffed, "staff")

    assert_one_line_error(add_staff(staffed, username, "oncall", *args, password=password),
                          named)
    assert count(staffed, "staff") == before


def test_staff_add_takes_a_phone_written_with_spaces_and_audits_without_it(
    tmp_path: Path,
) -> None:
    write_config(tmp_path)

    result = add_staff(tmp_path, "carol", "oncall", "--phone", "+1 314 555 0143",
                       "--telegram-chat-id", "700000143")

    assert_ok(result)
    assert result.stdout == "added carol (oncall)\n"
    [(phone_enc, phone_hash)] = query(tmp_path, "SELECT phone_enc, phone_hash FROM staff")
    cipher = Cipher.from_env_value(KEY)
    assert cipher.decrypt(phone_enc) == "+13145550143"
    assert phone_hash == cipher.address_hash(Channel.SMS, "+13145550143")
    assert query(tmp_path, "SELECT actor, action, detail FROM audit_log") == [
        ("cli", "staff_added", "role=oncall phone=yes telegram=yes")]


@pytest.mark.parametrize(
    ("username", "args", "named"),
    [
        pytest.param("cli", [], "cli is a name the audit log uses", id="reserved-name"),
        pytest.param("carol", ["--telegram-chat-id", "700000142"],
                     "that Telegram chat id is already registered", id="same-telegram-chat"),
        pytest.param("carol", ["--telegram-chat-id", "@carol"],
                     "--telegram-chat-id must be a number", id="bad-telegram-chat"),
        pytest.param("Carol", [], "username must be 2-64 characters", id="bad-username"),
    ],
)
def test_staff_add_refuses_what_the_admin_pages_refuse(
    tmp_path: Path, username: str, args: list[str], named: str
) -> None:
    write_config(tmp_path)
    assert_ok(add_staff(tmp_path, "alice", "oncall", "--telegram-chat-id", "700000142"))

    assert_one_line_error(add_staff(tmp_path, username, "oncall", *args), named)
    assert count(tmp_path, "staff") == 1


def test_staff_add_refuses_unknown_role(staffed: Path) -> None:
    before = count(staffed, "staff")

    result = add_staff(staffed, "carol", "boss")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--role" in result.stderr
    assert count(staffed, "staff") == before


# --- oncall set ------------------------------------------------------------------------------


def test_oncall_set_records_override_in_configured_timezone(staffed: Path) -> None:
    assert_ok(bot(staffed, "oncall", "set", "alice", "--until", "2030-01-01T09:00"))

    until = query(
        staffed, "SELECT o.until FROM oncall_overrides o JOIN staff s ON s.id = o.staff_id"
        " WHERE s.username = 'alice'"
    )
    # 09:00 in America/Chicago (the example's [hours] timezone) in January is 15:00 UTC.
    assert [str(value).startswith("2030-01-01 15:00:00") for (value,) in until] == [True]


def test_oncall_set_until_further_notice_is_audited_as_the_cli(tmp_path: Path) -> None:
    write_config(tmp_path)
    assert_ok(add_staff(tmp_path, "alice", "admin"))

    result = bot(tmp_path, "oncall", "set", "alice")

    assert_ok(result)
    assert result.stdout == "alice is on call\n"
    assert query(tmp_path, "SELECT until FROM oncall_overrides") == [(None,)]
    assert query(tmp_path, "SELECT actor, action, detail FROM audit_log"
                           " WHERE action = 'oncall_override_set'") == [
        ("cli", "oncall_override_set", "until=further notice")]


def yesterday() -> str:
    return (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="minutes")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(["nobody"], "nobody", id="unknown-user"),
        pytest.param(["alice", "--until", yesterday()], "past", id="until-in-the-past"),
        pytest.param(["alice", "--until", "notadate"], "--until", id="until-not-a-date"),
        pytest.param(["bob"], "bob", id="staff-role"),
    ],
)
def test_oncall_set_refuses_bad_input_with_one_line(
    staffed: Path, args: list[str], named: str
) -> None:
    before = count(staffed, "oncall_overrides")

    assert_one_line_error(bot(staffed, "oncall", "set", *args), named)
    assert count(staffed, "oncall_overrides") == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(["--batch", "0"], "--batch", id="batch-zero"),
        pytest.param(["--pause", "-1"], "--pause", id="pause-negative"),
        pytest.param(["--pause", "nan"], "--pause", id="pause-nan"),
        pytest.param(["--pause", "soon"], "--pause", id="pause-not-a-number"),
    ],
)
def test_rekey_refuses_bad_input_with_one_line(
    staffed: Path, args: list[str], named: str
) -> None:
    assert_one_line_error(bot(staffed, "rekey", *args), named)


WORDS = ["run", "check-config", "db", "upgrade", "staff", "add", "oncall", "set", "purge",
         "page-test", "rekey", "keygen", "--batch", "--pause", "--wait", "--role", "--until",
         "--config", "--phone", "-1", "0", "nan", "1e999", "", "\x00", "é", "--"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=12), max_size=6))
def test_any_arguments_parse_or_fail_with_one_line(argv: list[str]) -> None:
    """Whatever is typed, argparse either understands it or says why in one line."""
    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
            _parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code != 0:  # --help and the like exit 0
            assert exit_.code == 2
            assert len(stderr.getvalue().splitlines()) == 1, stderr.getvalue()
            assert stderr.getvalue().startswith("error: ")


# --- purge -----------------------------------------------------------------------------------


def test_purge_with_nothing_expired_purges_nothing(staffed: Path) -> None:
    result = bot(staffed, "purge")

    assert_ok(result)
    assert result.stdout.startswith("purged 0 conversations")


# --- run -------------------------------------------------------------------------------------


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`python -m bot run` on a free port; yields (process, port, stderr log file)."""
    port = free_port()
    config = write_config(tmp_path, port=port)
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [sys.executable, "-m", "bot", "run", "--config", str(config)],
            cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        yield process, port, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=SHUTDOWN_SECONDS)


def test_run_serves_health_logs_disabled_channels_and_stops_on_sigterm(
    running: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, log = running
    base = f"http://127.0.0.1:{port}"

    assert poll(f"{base}/healthz", process, log) == {"status": "ok"}
    assert poll(f"{base}/readyz", process, log)["ready"] is True
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=SHUTDOWN_SECONDS) == 0

    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    disabled = {e.get("channel") for e in entries if e.get("event") == "channel_disabled"}
    assert disabled == {"sms", "telegram"}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc")
def test_run_does_not_spin_while_idle(running: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    process, port, log = running
    poll(f"http://127.0.0.1:{port}/readyz", process, log)

    before = cpu_seconds(process.pid)
    time.sleep(IDLE_SECONDS)
    used = cpu_seconds(process.pid) - before

    assert used < IDLE_SECONDS * IDLE_CPU_SHARE, f"{used:.2f}s CPU in {IDLE_SECONDS}s idle"


async def test_a_command_that_writes_holds_sqlites_write_lock_from_its_begin(tmp_path: Path):
    # The running service commits between a command's first read and its first write (here
    # another connection tries to). Begun as a reader, the command would fail at that write
    # at once, "database is locked", whatever the busy timeout: `oncall set` did so now and
    # then. Holding the lock from BEGIN, the command goes on and the other write waits (with
    # no busy timeout, as the service's own loop connection has: refused at once).
    path = tmp_path / "lock.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    other = sqlite3.connect(path, timeout=0)
    refused: list[str] = []

    def command(session: Session) -> None:
        session.execute(select(Staff.id)).all()  # the command's first read
        try:
            other.execute("INSERT INTO provider_events (channel, provider_id, received_at) "
                          "VALUES ('sms', 'SM-service', '2026-12-02 10:00:00.000000')")
            other.commit()
        except sqlite3.OperationalError as exc:
            refused.append(str(exc))
        session.add(ProviderEvent(channel="sms", provider_id="SM-command",
                                  received_at=datetime.now(UTC)))
        session.flush()  # its first write

    try:
        await ensure_schema(engine)
        await run_in_transaction(_writes(engine), command)
    finally:
        await engine.dispose()
    with closing(other):
        stored = other.execute("SELECT provider_id FROM provider_events").fetchall()
    assert refused == ["database is locked"]
    assert stored == [("SM-command",)]

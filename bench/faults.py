"""Figures for the hardening issue: how the service behaves when the world misbehaves.

    .venv/bin/python -m bench.faults            # both figures, about two minutes
    .venv/bin/python -m bench.faults --runs 1   # one crash run

1. Providers are independent: with the fake Twilio hanging every send (all SMS send slots
   stuck), how long a Telegram contact waits for the bot's reply: from posting the update
   to the fake Telegram receiving the answer (target: within 1 s).
2. Crash under load: tests/crash_run.py, --runs times: 2,000 signed first contacts from
   distinct numbers, SIGKILL halfway, restart, Twilio's retries of every non-2xx. Lost
   (answered 2xx but not stored) and doubled (a contact with two first replies) are counted
   (target: 0 and 0 in every run).

The service runs as `python -m bot run` in a subprocess; the fakes run here, on loopback.
Exit status 0 whether or not a target is met; non-zero only if something crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.inbound import percentile
from tests.conftest import ROOT
from tests.crash_run import crash_run
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio
from tests.fixtures import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OUR_NUMBER,
    TELEGRAM_TOKEN,
    encode_form,
    load_telegram_update,
    load_twilio_form,
    set_config_keys,
    twilio_signature,
)
from tests.subprocesses import INBOUND_PATH, free_port, running, service_env, wait_healthy

WEBHOOK_SECRET = "bench-webhook-secret-0123456789"
HUNG_SMS = 40  # more than the SMS channel's send slots
TELEGRAM_CONTACTS = 50


async def telegram_while_twilio_hangs(folder: Path) -> dict[str, Any]:
    twilio = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    telegram = FakeTelegram(TELEGRAM_TOKEN)
    await twilio.start()
    await telegram.start()
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
        config = folder / "config.toml"
        config.write_text(set_config_keys(example, {
            "server": {"port": port, "public_url": base},
            "database": {"url": f"sqlite+aiosqlite:///{folder / 'triage.db'}"},
            "sms": {"enabled": True, "account_sid": ACCOUNT_SID, "from_number": OUR_NUMBER,
                    "api_base_url": twilio.base_url, "max_per_second": 1000},
            "telegram": {"enabled": True, "mode": "webhook", "api_base_url": telegram.base_url,
                         "max_per_second": 1000},
            "outbox": {"send_timeout_seconds": 60},
        }), encoding="utf-8")
        env = service_env()
        env["TRIAGE_TELEGRAM_TOKEN"] = TELEGRAM_TOKEN
        env["TRIAGE_TELEGRAM_WEBHOOK_SECRET"] = WEBHOOK_SECRET
        log = folder / "service.log"
        twilio.hang_next(120, times=HUNG_SMS * 2)
        latencies: list[float] = []
        async with aiohttp.ClientSession() as session, \
                running(folder, config, env, log) as proc:
            await wait_healthy(session, base, proc, log)
            for n in range(HUNG_SMS):
                sid = f"SM{n:032x}"
                form = load_twilio_form("inbound_sms", Body="hello",
                                        From=f"+1{201 + n}5550100", MessageSid=sid,
                                        SmsMessageSid=sid, SmsSid=sid)
                headers = {"Content-Type": "application/x-www-form-urlencoded",
                           "X-Twilio-Signature": twilio_signature(
                               AUTH_TOKEN, base + INBOUND_PATH, form)}
                async with session.post(base + INBOUND_PATH, data=encode_form(form),
                                        headers=headers) as response:
                    assert response.status == 200
            await asyncio.sleep(1)  # the SMS sends are all in flight, and hanging
            for n in range(TELEGRAM_CONTACTS):
                update = load_telegram_update("text_message", update_id=5000 + n,
                                              chat_id=700000200 + n, text="hello")
                started = time.monotonic()
                async with session.post(
                    base + "/webhooks/telegram", json=update,
                    headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
                ) as response:
                    assert response.status == 200
                await telegram.wait_for_messages(n + 1, timeout=30)
                latencies.append(time.monotonic() - started)
            sms_sent = len(twilio.sent)
        return {
            "telegram_replies": len(latencies),
            "sms_sent_while_hung": sms_sent,
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1),
            "target_max_ms": 1000,
            "met": max(latencies) <= 1.0,
        }
    finally:
        await telegram.close()
        await twilio.close()


async def bench(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        independent = await telegram_while_twilio_hangs(Path(folder))
    crashes = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            result = await crash_run(Path(folder))
        crashes.append({
            "contacts": result.contacts, "answered_before_kill": result.answered_before_kill,
            "replayed": result.replayed, "lost": len(result.lost),
            "doubled": len(result.doubled), "missing": len(result.missing),
            "reconciled_at_twilio": result.reconciled, "seconds": round(result.seconds, 1),
        })
    return {
        "machine": {"python": platform.python_version(), "cpus": _cpus(),
                    "processor": platform.processor() or platform.machine()},
        "telegram_while_twilio_hangs": independent,
        "crash_runs": crashes,
        "crash_met": all(c["lost"] == c["doubled"] == c["missing"] == 0 for c in crashes),
    }


def _cpus() -> int:
    return os.cpu_count() or 0


def report(result: dict[str, Any]) -> str:
    hang = result["telegram_while_twilio_hangs"]
    lines = [
        f"Telegram reply while Twilio hangs ({hang['telegram_replies']} replies, "
        f"{hang['sms_sent_while_hung']} SMS got through): p50 {hang['p50_ms']} ms, "
        f"p99 {hang['p99_ms']} ms, max {hang['max_ms']} ms "
        f"[target max <= 1000 ms: {'met' if hang['met'] else 'NOT met'}]",
    ]
    for n, run in enumerate(result["crash_runs"], 1):
        lines.append(
            f"crash run {n}: {run['contacts']} contacts, {run['answered_before_kill']} "
            f"answered before SIGKILL, {run['replayed']} replayed, lost {run['lost']}, "
            f"doubled {run['doubled']}, missing {run['missing']}, "
            f"{run['reconciled_at_twilio']} in-flight sends found at Twilio, {run['seconds']} s"
        )
    lines.append(f"crash target 0 lost, 0 doubled: {'met' if result['crash_met'] else 'NOT met'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="crash runs (default 3)")
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.runs))
    print(report(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

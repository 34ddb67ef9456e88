"""Timed work. Jobs have fixed ids and keep their state in the database, so a restart or a
second replica running the same jobs loses and doubles nothing.

Each job declares, as a Protocol, the few things it uses; the composition root hands over
its services, which have them. No job imports the composition root.
"""

from __future__ import annotations

from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import Settings
from schedules.escalations import SweepDeps, sweep_job
from schedules.handovers import HandoverDeps, handover_job
from schedules.hours import DigestDeps, digest_job
from schedules.retention import PurgeDeps, purge_job
from schedules.spool import DrainDeps, drain_job
from schedules.webchat import ExpiryDeps, expire_job

SPOOL_DRAIN_SECONDS = 10
WEBCHAT_EXPIRY_SECONDS = 60
# Handovers and openings are noticed within this, or the sweep's interval when that is
# slower (as in tests that run the jobs by hand).
ONCALL_CHECK_SECONDS = 30


class JobDeps(SweepDeps, PurgeDeps, DrainDeps, ExpiryDeps, HandoverDeps, DigestDeps, Protocol):
    settings: Settings


def staff_chat_on(settings: Settings) -> bool:
    return bool(settings.console.staff_chat_id) and settings.telegram.enabled


def register_jobs(scheduler: AsyncIOScheduler, deps: JobDeps) -> None:
    scheduler.add_job(
        drain_job, "interval", seconds=SPOOL_DRAIN_SECONDS, args=[deps],
        id="spool-drain", max_instances=1, coalesce=True,
    )
    scheduler.add_job(
        sweep_job, "interval", seconds=deps.settings.escalation.sweep_interval_seconds,
        args=[deps], id="escalation-sweep", max_instances=1, coalesce=True,
    )
    # `oncall set` (console or command line) announces its handover at once; this notices
    # the rotation moving on, an override running out, and handovers left unconfirmed.
    check = max(ONCALL_CHECK_SECONDS, deps.settings.escalation.sweep_interval_seconds)
    scheduler.add_job(
        handover_job, "interval", seconds=check, args=[deps], id="handover-check",
        max_instances=1, coalesce=True,
    )
    if staff_chat_on(deps.settings):
        scheduler.add_job(
            digest_job, "interval", seconds=check, args=[deps], id="opening-digest",
            max_instances=1, coalesce=True,
        )
    scheduler.add_job(
        purge_job, "cron", hour=3, minute=17, args=[deps],
        id="retention-purge", max_instances=1, coalesce=True,
    )
    if deps.settings.webchat.enabled:
        scheduler.add_job(
            expire_job, "interval", seconds=WEBCHAT_EXPIRY_SECONDS, args=[deps],
            id="webchat-expiry", max_instances=1, coalesce=True,
        )

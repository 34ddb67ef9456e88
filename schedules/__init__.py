"""Timed work. Jobs have fixed ids and keep their state in the database, so a restart or a
second replica running the same jobs loses and doubles nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from schedules.escalations import sweep_job
from schedules.retention import purge_job
from schedules.spool import drain_job

if TYPE_CHECKING:
    from bot.app import Services

SPOOL_DRAIN_SECONDS = 10


def register_jobs(scheduler: AsyncIOScheduler, services: Services) -> None:
    scheduler.add_job(
        drain_job, "interval", seconds=SPOOL_DRAIN_SECONDS, args=[services],
        id="spool-drain", max_instances=1, coalesce=True,
    )
    scheduler.add_job(
        sweep_job, "interval", seconds=services.settings.escalation.sweep_interval_seconds,
        args=[services], id="escalation-sweep", max_instances=1, coalesce=True,
    )
    scheduler.add_job(
        purge_job, "cron", hour=3, minute=17, args=[services],
        id="retention-purge", max_instances=1, coalesce=True,
    )

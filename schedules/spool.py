"""Take spooled messages in once the database is back."""

from __future__ import annotations

from typing import Protocol

from bot.intake import Intake


class DrainDeps(Protocol):
    intake: Intake


async def drain_job(deps: DrainDeps) -> None:
    await deps.intake.drain_spool()

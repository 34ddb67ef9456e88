"""Nightly purge of closed conversations past [privacy] retention_days."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from bot.config import Settings
from bot.storage.writer import Writer
from handlers.retention import Purged, purge_expired


class PurgeDeps(Protocol):
    settings: Settings
    writer: Writer
    clock: Callable[[], datetime]


async def purge_job(deps: PurgeDeps) -> Purged:
    now = deps.clock()
    days = deps.settings.privacy.retention_days
    return await deps.writer.run(lambda session: purge_expired(session, now, days))

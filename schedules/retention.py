"""Nightly purge of closed conversations past [privacy] retention_days."""

from __future__ import annotations

from typing import TYPE_CHECKING

from handlers.retention import Purged, purge_expired

if TYPE_CHECKING:
    from bot.app import Services


async def purge_job(services: Services) -> Purged:
    now = services.clock()
    days = services.settings.privacy.retention_days
    return await services.writer.run(lambda session: purge_expired(session, now, days))

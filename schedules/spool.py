"""Take spooled messages in once the database is back."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import Services


async def drain_job(services: Services) -> None:
    await services.intake.drain_spool()

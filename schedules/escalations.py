"""Fire due escalation steps. The due times live in the database, so every replica can run
this sweep: the compare-and-set in handlers.escalation lets only one of them send a step."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from handlers.escalation import fire_due

if TYPE_CHECKING:
    from bot.app import Services

log = logging.getLogger(__name__)


async def sweep_job(services: Services) -> list[int]:
    now = services.clock()
    try:
        fired = await services.writer.run(lambda s: fire_due(s, services.escalation, now))
    except Exception as exc:  # the database is down: the next sweep tries again
        log.warning("escalation_sweep_failed", extra={"error": type(exc).__name__})
        return []
    for escalation_id in fired:
        services.notifier.escalation(escalation_id)
    return fired

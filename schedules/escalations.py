"""Fire due escalation steps. The due times live in the database, so every replica can run
this sweep: the compare-and-set in handlers.escalation lets only one of them send a step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from bot.notify import Notifier
from bot.storage.writer import Writer
from handlers.escalation import EscalationDeps, fire_due

log = logging.getLogger(__name__)


class SweepDeps(Protocol):
    writer: Writer
    escalation: EscalationDeps
    notifier: Notifier
    clock: Callable[[], datetime]


async def sweep_job(deps: SweepDeps) -> list[int]:
    now = deps.clock()
    try:
        fired = await deps.writer.run(lambda s: fire_due(s, deps.escalation, now))
    except Exception as exc:  # the database is down: the next sweep tries again
        log.warning("escalation_sweep_failed", extra={"error": type(exc).__name__})
        return []
    # At DEBUG, one line a sweep: tests that prove no step fires twice wait for sweeps.
    log.debug("escalation_swept", extra={"fired": len(fired)})
    for escalation_id in fired:
        deps.notifier.escalation(escalation_id)
    return fired

"""Notice handovers (who is on call changed) and handovers nobody confirmed in time. Every
replica runs this: the handovers table's unique `seq` and a compare-and-set on the
"told" time let only one of them announce each handover, or tell of it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from bot.storage.writer import Writer
from handlers.escalation import EscalationDeps
from handlers.handover import record_handover, tell_unconfirmed

log = logging.getLogger(__name__)


class HandoverDeps(Protocol):
    writer: Writer
    escalation: EscalationDeps
    clock: Callable[[], datetime]


async def handover_job(deps: HandoverDeps) -> None:
    now = deps.clock()

    def unit(session: Session) -> None:
        record_handover(session, deps.escalation, now)
        tell_unconfirmed(session, deps.escalation, now)

    try:
        await deps.writer.run(unit)
    except Exception as exc:  # the database is down: the next run tries again
        log.warning("handover_check_failed", extra={"error": type(exc).__name__})

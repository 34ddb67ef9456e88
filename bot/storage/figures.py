"""The figures /metrics reads from the database at each scrape: SELECT only, one statement
of aggregates, each served by an index, so a scrape's cost grows with how many contacts are
waiting and messages queued, not with how many conversations are kept. Every process reads
the same rows, so every process reports the same figures.

No row leaves here: only counts and oldest times, by channel and kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, literal, null, select, union_all
from sqlalchemy.orm import Session

from bot.domain import ConversationStatus, EscalationStatus, OutboxKind, OutboxStatus
from bot.storage.models import Conversation, Escalation, Outbox

BACKLOG = (OutboxStatus.PENDING, OutboxStatus.SENDING)
# A page the provider has taken and not reported failed.
REACHED = (OutboxStatus.SENT, OutboxStatus.DELIVERED)
GROUPED = ("waiting", "backlog")


@dataclass(frozen=True)
class Waiting:
    count: int
    oldest: datetime  # the earliest unanswered message among them


@dataclass(frozen=True)
class Backlog:
    count: int
    oldest: datetime  # when the oldest row waiting to go out was queued


@dataclass(frozen=True)
class Figures:
    waiting: dict[str, Waiting]  # by channel: open conversations staff have not answered
    unacknowledged: int  # escalations open, nobody has acknowledged
    acknowledged: int  # acknowledged, not yet resolved
    past_ladder: int  # unacknowledged, and the ladder's last step has been paged
    unpaged: int  # unacknowledged, and no page of theirs has reached a provider
    backlog: dict[tuple[str, str], Backlog]  # by (channel, kind): queued or being sent


def read_figures(session: Session) -> Figures:
    """One statement, so one round trip to the database: each part is a branch of a UNION
    ALL, tagged with what it counts, and each branch is served by an index."""
    c, e, o = Conversation, Escalation, Outbox
    reached = exists().where(o.escalation_id == e.id, o.kind == OutboxKind.PAGE,
                             o.status.in_(REACHED))
    rows = session.execute(union_all(
        # ix_conversations_waiting covers this: the open rows' index entries alone are read.
        select(literal("waiting"), c.channel, null(), func.count(), func.min(c.awaiting_since))
        .where(c.status == ConversationStatus.OPEN, c.awaiting_since.is_not(None))
        .group_by(c.channel),
        select(literal("backlog"), o.channel, o.kind, func.count(), func.min(o.created_at))
        .where(o.status.in_(BACKLOG))
        .group_by(o.channel, o.kind),
        # ix_escalations_due (status, next_step_at) covers the next three.
        _count("unacknowledged", e.status == EscalationStatus.OPEN),
        _count("acknowledged", e.status == EscalationStatus.ACKED),
        # The last step leaves no next one: an open escalation without one has paged
        # everyone it ever will.
        _count("past_ladder", e.status == EscalationStatus.OPEN, e.next_step_at.is_(None)),
        _count("unpaged", e.status == EscalationStatus.OPEN, ~reached),
    )).all()
    counts = {what: n for what, _, _, n, _ in rows if what not in GROUPED}
    return Figures(
        waiting={ch: Waiting(n, oldest) for what, ch, _, n, oldest in rows if what == "waiting"},
        unacknowledged=counts.get("unacknowledged", 0),
        acknowledged=counts.get("acknowledged", 0),
        past_ladder=counts.get("past_ladder", 0),
        unpaged=counts.get("unpaged", 0),
        backlog={(ch, kind): Backlog(n, oldest) for what, ch, kind, n, oldest in rows
                 if what == "backlog"},
    )


def _count(what: str, *where: ColumnElement[bool]) -> Select[Any]:
    return select(literal(what), null(), null(), func.count(), null()).select_from(
        Escalation).where(*where)

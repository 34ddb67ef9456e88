"""The figures /metrics reads from the database at each scrape: SELECT only, a handful of
aggregate queries, each served by an index, so a scrape costs the same with 100 or 100,000
conversations behind it. Every process reads the same rows, so every process reports the
same figures.

No row leaves here: only counts and oldest times, by channel and kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from bot.domain import ConversationStatus, EscalationStatus, OutboxKind, OutboxStatus
from bot.storage.models import Conversation, Escalation, Outbox

BACKLOG = (OutboxStatus.PENDING, OutboxStatus.SENDING)
# A page the provider has taken and not reported failed.
REACHED = (OutboxStatus.SENT, OutboxStatus.DELIVERED)
LIVE = (EscalationStatus.OPEN, EscalationStatus.ACKED)


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
    c = Conversation
    # ix_conversations_waiting covers this: the open rows' index entries alone are read.
    waiting = session.execute(
        select(c.channel, func.count(), func.min(c.awaiting_since))
        .where(c.status == ConversationStatus.OPEN, c.awaiting_since.is_not(None))
        .group_by(c.channel)
    ).all()
    e = Escalation
    unacknowledged, acknowledged, past_ladder = session.execute(
        select(
            func.count().filter(e.status == EscalationStatus.OPEN),
            func.count().filter(e.status == EscalationStatus.ACKED),
            # The last step leaves no next one: an open escalation without one has paged
            # everyone it ever will.
            func.count().filter(e.status == EscalationStatus.OPEN, e.next_step_at.is_(None)),
        ).where(e.status.in_(LIVE))
    ).one()
    reached = exists().where(Outbox.escalation_id == e.id, Outbox.kind == OutboxKind.PAGE,
                             Outbox.status.in_(REACHED))
    unpaged = session.scalar(
        select(func.count()).select_from(e).where(e.status == EscalationStatus.OPEN, ~reached)
    )
    o = Outbox
    backlog = session.execute(
        select(o.channel, o.kind, func.count(), func.min(o.created_at))
        .where(o.status.in_(BACKLOG))
        .group_by(o.channel, o.kind)
    ).all()
    return Figures(
        waiting={channel: Waiting(n, oldest) for channel, n, oldest in waiting},
        unacknowledged=int(unacknowledged or 0),
        acknowledged=int(acknowledged or 0),
        past_ladder=int(past_ladder or 0),
        unpaged=int(unpaged or 0),
        backlog={(channel, kind): Backlog(n, oldest) for channel, kind, n, oldest in backlog},
    )

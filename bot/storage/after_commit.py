"""What a unit of work wants done once its transaction has committed: log lines written,
and the outbox worker woken if it queued something to send.

A unit touches only its Session: the SQLite writer may roll a batch back and run it again,
and PostgreSQL may retry a transaction after a deadlock, so a line logged from inside a unit
could be written twice, or for something that never happened. A unit notes the line on its
Session instead (`note`), and the writer writes the notes of each unit that committed,
after the commit, once. Likewise a unit that queues an outbox row says so (`queued_to_send`,
called where rows are queued), and only such a commit wakes the worker: most messages queue
nothing, and a wake costs a claim query.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

KEY = "after_commit"


@dataclass(frozen=True)
class Note:
    logger: logging.Logger
    level: int
    event: str
    fields: dict[str, Any]


@dataclass
class Notes:
    """One unit's: its log lines, and whether it queued something to send."""

    lines: list[Note] = field(default_factory=list)
    queued: bool = False


def note(session: Session, logger: logging.Logger, event: str, level: int = logging.INFO,
         **fields: Any) -> None:
    notes: Notes | None = session.info.get(KEY)
    if notes is not None:
        notes.lines.append(Note(logger, level, event, fields))
    # Outside the writer (the command line, a test's own session) nobody collects notes:
    # they are dropped, as the caller reports what it did itself.


def queued_to_send(session: Session) -> None:
    """The unit made an outbox row due: its commit wakes the outbox worker."""
    notes: Notes | None = session.info.get(KEY)
    if notes is not None:
        notes.queued = True


def collect(session: Session) -> Notes:
    """Start collecting a unit's notes on `session`; they fill as the unit runs."""
    notes = Notes()
    session.info[KEY] = notes
    return notes


def write(notes: Notes) -> None:
    for n in notes.lines:
        n.logger.log(n.level, n.event, extra=n.fields)

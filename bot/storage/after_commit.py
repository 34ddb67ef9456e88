"""What a unit of work wants done once its transaction has committed: log lines written,
metric observations made, and the outbox worker woken if it queued something to send.

A unit touches only its Session: the SQLite writer may roll a batch back and run it again,
and PostgreSQL may retry a transaction after a deadlock, so a line logged (or a counter
counted) from inside a unit could be made twice, or for something that never happened. A
unit notes the line (`note`) or the observation (`observe`) on its Session instead, and the
writer makes those of each unit that committed, after the commit, once. Likewise a unit that
queues an outbox row says so (`queued_to_send`, called where rows are queued), and only such
a commit wakes the worker: most messages queue nothing, and a wake costs a claim query.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from bot.domain import Observed

KEY = "after_commit"


@dataclass(frozen=True)
class Note:
    logger: logging.Logger
    level: int
    event: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Observation:
    """A figure for the metrics (bot.metrics): a duration in seconds, or a count of 1.
    Labels are short codes such as a channel's name, never a person, address or text."""

    what: Observed
    value: float
    labels: tuple[tuple[str, str], ...] = ()


Entry = Note | Observation
Observer = Callable[[Observation], None]


@dataclass
class Notes:
    """One unit's: its log lines and observations, and whether it queued something to send."""

    entries: list[Entry] = field(default_factory=list)
    queued: bool = False


def note(session: Session, logger: logging.Logger, event: str, level: int = logging.INFO,
         **fields: Any) -> None:
    if logger.isEnabledFor(level):  # a DEBUG line per message costs nothing when off
        _add(session, Note(logger, level, event, fields))


def observe(session: Session, what: Observed, value: float = 1.0, **labels: str) -> None:
    _add(session, Observation(what, value, tuple(sorted(labels.items()))))


def _add(session: Session, entry: Entry) -> None:
    notes: Notes | None = session.info.get(KEY)
    if notes is not None:
        notes.entries.append(entry)
    # Outside the writer (the command line, a test's own session) nobody collects them:
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


def write(notes: Notes, observer: Observer | None = None) -> None:
    for entry in notes.entries:
        if isinstance(entry, Note):
            entry.logger.log(entry.level, entry.event, extra=entry.fields)
        elif observer is not None:  # None when metrics are off
            observer(entry)

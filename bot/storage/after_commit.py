"""Log lines and metric observations a unit of work wants made once its transaction has
committed.

A unit touches only its Session: the SQLite writer may roll a batch back and run it again,
and PostgreSQL may retry a transaction after a deadlock, so a line logged (or a counter
counted) from inside a unit could be made twice, or for something that never happened. A
unit notes the line (`note`) or the observation (`observe`) on its Session instead, and the
writer makes those of each unit that committed, after the commit, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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


def note(session: Session, logger: logging.Logger, event: str, level: int = logging.INFO,
         **fields: Any) -> None:
    _add(session, Note(logger, level, event, fields))


def observe(session: Session, what: Observed, value: float = 1.0, **labels: str) -> None:
    _add(session, Observation(what, value, tuple(sorted(labels.items()))))


def _add(session: Session, entry: Entry) -> None:
    entries: list[Entry] | None = session.info.get(KEY)
    if entries is not None:
        entries.append(entry)
    # Outside the writer (the command line, a test's own session) nobody collects them:
    # they are dropped, as the caller reports what it did itself.


def collect(session: Session) -> list[Entry]:
    """Start collecting a unit's entries on `session`; the list fills as the unit runs."""
    entries: list[Entry] = []
    session.info[KEY] = entries
    return entries


def write(entries: list[Entry], observer: Observer | None = None) -> None:
    for entry in entries:
        if isinstance(entry, Note):
            entry.logger.log(entry.level, entry.event, extra=entry.fields)
        elif observer is not None:  # None when metrics are off
            observer(entry)

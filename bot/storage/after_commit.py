"""Log lines a unit of work wants written once its transaction has committed.

A unit touches only its Session: the SQLite writer may roll a batch back and run it again,
and PostgreSQL may retry a transaction after a deadlock, so a line logged from inside a unit
could be written twice, or for something that never happened. A unit notes the line on its
Session instead (`note`), and the writer writes the notes of each unit that committed,
after the commit, once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

KEY = "after_commit"


@dataclass(frozen=True)
class Note:
    logger: logging.Logger
    level: int
    event: str
    fields: dict[str, Any]


def note(session: Session, logger: logging.Logger, event: str, level: int = logging.INFO,
         **fields: Any) -> None:
    notes: list[Note] | None = session.info.get(KEY)
    if notes is not None:
        notes.append(Note(logger, level, event, fields))
    # Outside the writer (the command line, a test's own session) nobody collects notes:
    # they are dropped, as the caller reports what it did itself.


def collect(session: Session) -> list[Note]:
    """Start collecting a unit's notes on `session`; the list fills as the unit runs."""
    notes: list[Note] = []
    session.info[KEY] = notes
    return notes


def write(notes: list[Note]) -> None:
    for n in notes:
        n.logger.log(n.level, n.event, extra=n.fields)

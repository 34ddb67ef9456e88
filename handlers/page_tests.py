"""Test pages (`python -m bot page-test USERNAME`): a page through the whole path, outbox to
provider, that the person answers with ACK as they would a real one.

A test page is no emergency: it opens no escalation, and its outbox rows are of kind
"test_page", never "page", so nothing counts it as one. It goes to every channel the person
can be paged on, so each is checked. The command line queues it here and then reads back
how far it got: the running service does the sending, whichever process that is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.domain import OutboxKind
from bot.storage.after_commit import note
from bot.storage.models import Outbox, PageTest, Staff
from bot.storage.queries import audit
from handlers.escalation import EscalationDeps, enqueue_to_staff, staff_addresses

log = logging.getLogger(__name__)
# An ACK later than this after a test page is not taken as its answer.
ANSWER_WITHIN = timedelta(hours=1)


class PageTestError(Exception):
    """Why no test page can be sent: a clear line for the command line."""


@dataclass(frozen=True)
class QueuedTest:
    test_id: int
    staff_id: int
    outbox: tuple[tuple[str, int], ...]  # (channel, outbox row) per channel tried


def page_test_text(test_id: int, public_url: str) -> str:
    return (f"TEST PAGE #{test_id}, not an emergency. Reply ACK to show that pages reach "
            f"you. {public_url}/console")


def queue_test_page(session: Session, deps: EscalationDeps, username: str, actor: str,
                    now: datetime) -> QueuedTest:
    staff = session.scalar(select(Staff).where(Staff.username == username))
    if staff is None or staff.disabled:
        raise PageTestError(f"no active staff member named {username}")
    usable = [a for a in staff_addresses(staff) if a.channel in deps.channels]
    if not usable:
        raise PageTestError(f"{username} has no phone or Telegram chat on an enabled channel")
    test = PageTest(staff_id=staff.id, created_at=now)
    session.add(test)
    session.flush()
    body = deps.cipher.encrypt(page_test_text(test.id, deps.public_url))
    rows = tuple((a.channel, enqueue_to_staff(session, a, body, staff.id, None, now,
                                              kind=OutboxKind.TEST_PAGE)) for a in usable)
    audit(session, now, "test_page_queued", "page_test", test.id, actor=actor,
          detail=f"staff={staff.id} channels={','.join(c for c, _ in rows)}")
    return QueuedTest(test.id, staff.id, rows)


@dataclass(frozen=True)
class Progress:
    statuses: tuple[tuple[str, str, str | None], ...]  # (channel, outbox status, last error)
    acked_at: datetime | None
    acked_channel: str | None


def progress(session: Session, queued: QueuedTest) -> Progress:
    rows = {row.id: row for row in session.scalars(
        select(Outbox).where(Outbox.id.in_([row_id for _, row_id in queued.outbox])))}
    test = session.get(PageTest, queued.test_id)
    statuses = tuple((channel, rows[row_id].status, rows[row_id].last_error)
                     for channel, row_id in queued.outbox if row_id in rows)
    return Progress(statuses, test.acked_at if test else None,
                        test.acked_channel if test else None)


def finish(session: Session, queued: QueuedTest, outcome: str, now: datetime) -> None:
    """The audit row saying how the test ended, written by whoever ran it."""
    audit(session, now, "test_page_result", "page_test", queued.test_id, actor="cli",
          detail=outcome[:200])


def acknowledge(session: Session, staff: Staff, channel: str, now: datetime) -> str | None:
    """An ACK from a staff member answers their recent unanswered test pages. Returns what
    to tell them, or None when they had none."""
    waiting = list(session.scalars(
        select(PageTest.id)
        .where(PageTest.staff_id == staff.id, PageTest.acked_at.is_(None),
               PageTest.created_at > now - ANSWER_WITHIN)
        .order_by(PageTest.id)
    ))
    if not waiting:
        return None
    session.execute(update(PageTest).where(PageTest.id.in_(waiting), PageTest.acked_at.is_(None))
                    .values(acked_at=now, acked_channel=channel)
                    .execution_options(synchronize_session=False))
    for test_id in waiting:
        audit(session, now, "test_page_acked", "page_test", test_id, actor=staff.username,
              actor_staff_id=staff.id, detail=f"channel={channel}")
    note(session, log, "test_page_acked", staff=staff.id, tests=len(waiting))
    numbers = ", ".join(f"#{n}" for n in waiting)
    return f"Test page {numbers} acknowledged: pages reach you."

"""Handovers: the person taking over on call is told so, and confirms.

A handover is a change of who is on call (handlers.escalation.who_is_on_call): the weekly
rotation moving on, an override set or ended (`oncall set`, the console), an override that
ran out. Each is recorded once, as the next `seq` of the handovers table: its unique
constraint is the claim, so processes that notice the same change at once record it once,
and a restart finds it recorded. The person taking over gets one text on each channel they
can be paged on (each one a page may take is tried): on call from now, until when, reply
ACK. If nobody has confirmed within `[oncall] confirm_minutes`, the backup and the admins
are told, once, claimed by a compare-and-set as escalation steps are; if the ACK comes
after that, they are told that too.

The first record in a database only notes who is on call already: nothing changed hands, and
an upgrade must not text someone in the middle of their week. `oncall set` announces even
that one, since there someone has just handed over.

None of this is an emergency: no escalation, and outbox rows of kind "handover", not "page".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bot.domain import OutboxKind, StaffRole
from bot.hours import describe_opening
from bot.rota import Rota
from bot.storage.after_commit import note
from bot.storage.models import Handover, OncallOverride, Staff
from bot.storage.queries import audit, insert_unless_taken
from handlers.escalation import (
    EscalationDeps,
    enqueue_to_staff,
    staff_addresses,
    who_is_on_call,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handed:
    """A handover this transaction recorded."""

    handover_id: int
    staff_id: int | None  # None: nobody is on call now
    announced: bool


def record_handover(session: Session, deps: EscalationDeps, now: datetime,
                    announce_first: bool = False, actor: str = "system",
                    actor_staff_id: int | None = None) -> Handed | None:
    """Record and announce a change of who is on call, if there was one since the last
    record. None when nothing changed, or when another process recorded it first. `actor`
    made the change, for the audit log (the rotation moving on is "system")."""
    current = who_is_on_call(session, deps.rota, now).primary
    staff_id = None if current is None else current.id
    latest = _latest(session)
    if latest is not None and latest.staff_id == staff_id:
        return None
    announce = current is not None and (latest is not None or announce_first)
    until = None if current is None else on_call_until(session, deps.rota, current, now)
    seq = 1 if latest is None else latest.seq + 1
    handover_id = session.execute(
        insert_unless_taken(session, Handover, "seq").values(
            seq=seq, staff_id=staff_id, at=now, until=until, announced=announce,
            confirm_by=now + timedelta(minutes=deps.rota.confirm_minutes) if announce else None,
        ).returning(Handover.id)
    ).scalar_one_or_none()
    if handover_id is None:
        return None  # another process recorded this handover first
    # Whoever was waiting to confirm an earlier handover is no longer on call.
    session.execute(update(Handover)
                    .where(Handover.seq < seq, Handover.confirm_by.is_not(None))
                    .values(confirm_by=None)
                    .execution_options(synchronize_session=False))
    reached = 0
    if announce and current is not None:
        reached = _tell(session, deps, current, on_call_text(until, now, deps.rota.zone), now)
    detail = f"staff={staff_id or '-'} announced={'yes' if announce else 'no'} channels={reached}"
    audit(session, now, "handover", "handover", handover_id, actor=actor,
          actor_staff_id=actor_staff_id, detail=detail)
    note(session, log, "handover", handover=handover_id, staff=staff_id, announced=announce,
         channels=reached)
    if announce and not reached:
        note(session, log, "handover_unreachable", level=logging.WARNING,
             handover=handover_id, staff=staff_id)
    return Handed(handover_id, staff_id, announce)


def _latest(session: Session, lock: bool = False) -> Handover | None:
    query = select(Handover).order_by(Handover.seq.desc()).limit(1)
    return session.scalar(query.with_for_update() if lock else query)


def on_call_until(session: Session, rota: Rota, staff: Staff, now: datetime) -> datetime | None:
    """When `staff`, on call now, hands over next: the end of the override that put them on
    call, or the next rotation handover to someone else. None: until further notice."""
    override = session.scalar(
        select(OncallOverride)
        .where(OncallOverride.staff_id == staff.id, OncallOverride.starts_at <= now,
               or_(OncallOverride.until.is_(None), OncallOverride.until > now))
        .order_by(OncallOverride.id.desc()).limit(1)
    )
    if override is not None:
        return override.until
    at = now
    for _ in range(len(rota.rotation)):
        at = rota.next_handover(at)
        if rota.scheduled(at) != staff.username:
            return at
    return None  # the rotation is this one person


def when_words(at: datetime | None, now: datetime, zone: ZoneInfo) -> str:
    """'until Monday, March 15 at 9:00 AM Chicago time', for someone woken at 3 a.m."""
    if at is None:
        return "until further notice"
    place = zone.key.rsplit("/", 1)[-1].replace("_", " ")
    return f"until {describe_opening(at.astimezone(zone), now, 'en')} {place} time"


def on_call_text(until: datetime | None, now: datetime, zone: ZoneInfo) -> str:
    return (f"You are now on call for emergencies, {when_words(until, now, zone)}. "
            f"Reply ACK to confirm you got this.")


def tell_unconfirmed(session: Session, deps: EscalationDeps, now: datetime) -> list[int]:
    """Tell the backup and the admins of every handover not confirmed in time. Returns the
    handovers told of."""
    due = list(session.scalars(
        select(Handover)
        .where(Handover.confirm_by <= now, Handover.confirmed_at.is_(None),
               Handover.unconfirmed_told_at.is_(None))
        .order_by(Handover.seq)
        .with_for_update(skip_locked=True)
    ))
    told = []
    for handover in due:
        # The compare-and-set: only the transaction that sets the time tells anyone.
        claimed = session.execute(
            update(Handover)
            .where(Handover.id == handover.id, Handover.confirmed_at.is_(None),
                   Handover.unconfirmed_told_at.is_(None))
            .values(unconfirmed_told_at=now, confirm_by=None)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            continue
        name = _name(session, handover.staff_id)
        since = describe_opening(handover.at.astimezone(deps.rota.zone), now, "en")
        text = (f"{name} has not confirmed being on call (since {since}). Please reach "
                f"them, or put someone else on call: {deps.public_url}/console/admin/oncall")
        reached = sum(_tell(session, deps, person, text, now)
                      for person in _watchers(session, deps, now, handover.staff_id))
        audit(session, now, "handover_unconfirmed", "handover", handover.id,
              detail=f"staff={handover.staff_id or '-'} told_channels={reached}")
        note(session, log, "handover_unconfirmed", level=logging.WARNING,
             handover=handover.id, staff=handover.staff_id, told_channels=reached)
        if not reached:
            note(session, log, "handover_unconfirmed_nobody_told", level=logging.ERROR,
                 handover=handover.id)
        told.append(handover.id)
    return told


def confirm(session: Session, deps: EscalationDeps, staff: Staff, now: datetime) -> str | None:
    """An ACK from the person who took over confirms the handover. Returns what to answer
    them, or None when they had no handover waiting for confirmation."""
    # Locked: a concurrent tell_unconfirmed either has told the watchers (and we tell them
    # it is confirmed after all) or will find it confirmed.
    latest = waiting_for(session, staff.id, lock=True)
    if latest is None:
        return None
    latest.confirmed_at = now
    latest.confirm_by = None
    audit(session, now, "handover_confirmed", "handover", latest.id, actor=staff.username,
          actor_staff_id=staff.id)
    note(session, log, "handover_confirmed", handover=latest.id, staff=staff.id)
    if latest.unconfirmed_told_at is not None:
        text = f"{staff.username} has now confirmed being on call."
        for person in _watchers(session, deps, now, staff.id):
            _tell(session, deps, person, text, now)
    return f"Thank you: you are on call {when_words(latest.until, now, deps.rota.zone)}."


def waiting_for(session: Session, staff_id: int, lock: bool = False) -> Handover | None:
    """The handover `staff_id` took and has not confirmed yet, if any."""
    latest = _latest(session, lock)
    if (latest is None or latest.staff_id != staff_id or not latest.announced
            or latest.confirmed_at is not None):
        return None
    return latest


def _name(session: Session, staff_id: int | None) -> str:
    staff = session.get(Staff, staff_id) if staff_id is not None else None
    return staff.username if staff is not None else "The person on call"


def _watchers(session: Session, deps: EscalationDeps, now: datetime,
              incoming: int | None) -> list[Staff]:
    """Who hears of an unconfirmed handover: the backup and every active admin, not the
    person who should have confirmed."""
    people = {s.id: s for s in session.scalars(
        select(Staff).where(Staff.disabled.is_(False), Staff.role == StaffRole.ADMIN)
        .order_by(Staff.id))}
    backup = who_is_on_call(session, deps.rota, now).backup
    if backup is not None:
        people[backup.id] = backup
    return [person for person in people.values() if person.id != incoming]


def _tell(session: Session, deps: EscalationDeps, staff: Staff, text: str,
          now: datetime) -> int:
    """The text to each channel `staff` can be paged on; returns how many."""
    usable = [a for a in staff_addresses(staff) if a.channel in deps.channels]
    body = deps.cipher.encrypt(text)
    for address in usable:
        enqueue_to_staff(session, address, body, staff.id, None, now, kind=OutboxKind.HANDOVER)
    return len(usable)

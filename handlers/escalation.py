"""On-call escalation: open, page, acknowledge, resolve.

The ladder, repeated `repeats` more times after the first pass:
  level 0: page the person on call;
  level 1: after repage_after_seconds, page them again with the backup;
  level 2: after everyone_after_seconds, page everyone with the on-call role;
  then after repage_after_seconds the next pass starts at level 0.
Each escalation keeps its next step's due time in the database. A step fires in the same
transaction that advances it, guarded by a compare-and-set on (step, next_step_at), so a
restart loses no page and two sweepers never send the same one. Pages are outbox rows.
An acknowledgement stops the ladder until ack_timeout_seconds; if the escalation is not
resolved by then, the ladder starts again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bot.config import EscalationSettings
from bot.crypto import Cipher
from bot.domain import (
    Channel,
    Direction,
    EscalationStatus,
    Observed,
    OutboxKind,
    StaffRole,
)
from bot.gsm import septets, to_gsm7
from bot.rota import Rota
from bot.storage import outbox
from bot.storage.after_commit import note, observe
from bot.storage.models import Escalation, Message, OncallOverride, Outbox, Staff
from bot.storage.queries import audit

log = logging.getLogger(__name__)
LEVELS = 3
ONCALL_ROLES = (StaffRole.ONCALL, StaffRole.ADMIN)
SMS_SEPTETS = 160  # a page is one SMS, preview included
MAX_ID = 2**63 - 1  # larger numbers in "ACK n" overflow the database's integer


class EscalationNotFound(Exception):
    pass


@dataclass(frozen=True)
class EscalationDeps:
    cipher: Cipher
    rota: Rota
    policy: EscalationSettings
    public_url: str
    channels: frozenset[str]  # channels with a working sender, for pages


@dataclass(frozen=True)
class OnCall:
    primary: Staff | None
    backup: Staff | None

    @property
    def gap(self) -> bool:
        return self.primary is None


def _active_with_role(*roles: StaffRole) -> Select[tuple[Staff]]:
    return select(Staff).where(Staff.disabled.is_(False), Staff.role.in_(roles))


def who_is_on_call(session: Session, rota: Rota, now: datetime) -> OnCall:
    """An override set with `oncall set` wins over the rotation; the newest override first."""
    override = session.scalar(
        select(Staff)
        .join(OncallOverride, OncallOverride.staff_id == Staff.id)
        .where(
            Staff.disabled.is_(False),
            Staff.role.in_(ONCALL_ROLES),
            OncallOverride.starts_at <= now,
            or_(OncallOverride.until.is_(None), OncallOverride.until > now),
        )
        .order_by(OncallOverride.id.desc())
        .limit(1)
    )
    primary = override or _staff_named(session, rota.scheduled(now))
    backup = _staff_named(session, rota.backup)
    return OnCall(primary, backup)


def _staff_named(session: Session, username: str | None) -> Staff | None:
    if not username:
        return None
    return session.scalar(
        select(Staff).where(
            Staff.username == username, Staff.disabled.is_(False), Staff.role.in_(ONCALL_ROLES)
        )
    )


def recipients(session: Session, level: int, oncall: OnCall) -> list[Staff]:
    """Who a step pages. A gap in the rota pages every on-call-role member and every admin."""
    if oncall.gap:
        chosen = list(session.scalars(_active_with_role(*ONCALL_ROLES)))
    elif level == 0:
        chosen = [oncall.primary]
    elif level == 1:
        chosen = [oncall.primary, oncall.backup]
    else:
        chosen = [oncall.primary, oncall.backup,
                  *session.scalars(_active_with_role(StaffRole.ONCALL))]
    unique: dict[int, Staff] = {s.id: s for s in chosen if s is not None}
    return list(unique.values())


def open_escalation(
    session: Session,
    deps: EscalationDeps,
    conversation_id: int,
    channel: str,
    trigger: str,
    now: datetime,
    actor: str = "system",
    actor_staff_id: int | None = None,
) -> Escalation:
    """Open an escalation and page its first step in the same transaction: the page goes
    out as soon as this commits, without waiting for a sweep."""
    escalation = Escalation(
        conversation_id=conversation_id,
        channel=channel,
        trigger=trigger,
        status=EscalationStatus.OPEN,
        step=0,
        next_step_at=now,
        opened_at=now,
    )
    session.add(escalation)
    session.flush()
    audit(session, now, "escalation_opened", "escalation", escalation.id, actor=actor,
          actor_staff_id=actor_staff_id, detail=f"trigger={trigger}")
    note(session, log, "escalation_opened", escalation=escalation.id, trigger=trigger)
    _fire(session, deps, escalation, now)
    return escalation


def fire_due(session: Session, deps: EscalationDeps, now: datetime,
                   limit: int = 50) -> list[int]:
    """Fire every step that is due. Returns the escalations that paged."""
    due = list(
        session.scalars(
            select(Escalation)
            .where(
                Escalation.status.in_([EscalationStatus.OPEN, EscalationStatus.ACKED]),
                Escalation.next_step_at <= now,
            )
            .order_by(Escalation.next_step_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    return [e.id for e in due if _fire(session, deps, e, now)]


def _fire(
    session: Session, deps: EscalationDeps, escalation: Escalation, now: datetime
) -> bool:
    seen_status, seen_step, due = escalation.status, escalation.step, escalation.next_step_at
    # Acknowledged but not resolved in time: the ladder starts again from the first step.
    timed_out = seen_status == EscalationStatus.ACKED
    step = 0 if timed_out else seen_step
    level, cycle = step % LEVELS, step // LEVELS
    waits = (deps.policy.repage_after_seconds, deps.policy.everyone_after_seconds,
             deps.policy.repage_after_seconds)
    last_step = (deps.policy.repeats + 1) * LEVELS - 1
    next_due = None if step >= last_step else now + timedelta(seconds=waits[level])
    # The fencing token: only the transaction that moves (status, step, due) on from what
    # it read sends this step; a sweeper that read an older state sends nothing.
    claimed = session.execute(
        update(Escalation)
        .where(Escalation.id == escalation.id, Escalation.status == seen_status,
               Escalation.step == seen_step, Escalation.next_step_at == due)
        .values(step=step + 1, next_step_at=next_due, status=EscalationStatus.OPEN)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        session.refresh(escalation)
        return False
    for name, value in (("status", EscalationStatus.OPEN), ("step", step + 1),
                        ("next_step_at", next_due)):
        set_committed_value(escalation, name, value)
    if timed_out:
        audit(session, now, "ack_timed_out", "escalation", escalation.id)
    oncall = who_is_on_call(session, deps.rota, now)
    people = recipients(session, level, oncall)
    preview = _preview(session, deps, escalation) if deps.policy.include_preview else ""
    text = page_text(escalation, deps, preview)
    paged = [p for p in people if _enqueue_page(session, deps, p, escalation, text, now)]
    detail = f"step={step} level={level} cycle={cycle} paged={len(paged)}"
    if oncall.gap:
        detail += " rota_gap"
    audit(session, now, "page_queued", "escalation", escalation.id, detail=detail)
    note(session, log, "escalation_step", escalation=escalation.id, step=step,
         paged=len(paged), rota_gap=oncall.gap)
    if not paged:
        note(session, log, "escalation_nobody_reachable", level=logging.ERROR,
             escalation=escalation.id)
    return True


def page_text(escalation: Escalation, deps: EscalationDeps, preview: str = "") -> str:
    local = escalation.opened_at.astimezone(deps.rota.zone).strftime("%H:%M")
    text = (f"EMERGENCY #{escalation.id} ({escalation.channel}) {local}. "
            f"Reply ACK {escalation.id}. {deps.public_url}/console/escalations/{escalation.id}")
    # The preview is cut to keep the page one plain GSM-7 SMS: a second part may arrive
    # late or out of order, and one emoji would halve what fits.
    preview = " ".join(to_gsm7(preview, missing="").split())
    room = SMS_SEPTETS - septets(text) - 3
    while preview and septets(preview) > room:
        preview = preview[:-1].rstrip()
    return f'{text} "{preview}"' if preview else text


def _preview(session: Session, deps: EscalationDeps, escalation: Escalation) -> str:
    body = session.scalar(
        select(Message.body_enc)
        .where(Message.conversation_id == escalation.conversation_id,
               Message.direction == Direction.INBOUND)
        .order_by(Message.id.desc())
        .limit(1)
    )
    return "" if body is None else deps.cipher.decrypt(body)


@dataclass(frozen=True)
class StaffAddress:
    channel: str
    address_enc: str
    address_hash: str


def staff_addresses(staff: Staff) -> list[StaffAddress]:
    """Where a staff member can be written to, in the order pages try them: SMS first, as it
    reaches a phone with no app or data."""
    found = []
    if staff.phone_enc and staff.phone_hash:
        found.append(StaffAddress(Channel.SMS.value, staff.phone_enc, staff.phone_hash))
    if staff.telegram_enc and staff.telegram_hash:
        found.append(StaffAddress(Channel.TELEGRAM.value, staff.telegram_enc,
                                  staff.telegram_hash))
    return found


def _enqueue_page(
    session: Session,
    deps: EscalationDeps,
    staff: Staff,
    escalation: Escalation,
    text: str,
    now: datetime,
) -> bool:
    usable = [a for a in staff_addresses(staff) if a.channel in deps.channels]
    if not usable:
        note(session, log, "page_unreachable", level=logging.WARNING, staff=staff.id,
             escalation=escalation.id)
        return False
    enqueue_to_staff(session, usable[0], deps.cipher.encrypt(text), staff.id, escalation.id,
                     now)
    return True


def enqueue_to_staff(session: Session, to: StaffAddress, body_enc: str, staff_id: int,
                     escalation_id: int | None, now: datetime, failover_of: int | None = None,
                     kind: OutboxKind = OutboxKind.PAGE) -> int:
    """An outbox row to a staff member: a page, a notice, or an answer to a command."""
    return outbox.enqueue(session, now, channel=to.channel, kind=kind,
                          address_enc=to.address_enc, address_hash=to.address_hash,
                          body_enc=body_enc, staff_id=staff_id, escalation_id=escalation_id,
                          failover_of=failover_of)


def fail_over_page(
    session: Session, page: outbox.SentRow, channels: frozenset[str], now: datetime
) -> bool:
    """A page that failed on one channel goes out on the staff member's other one, once."""
    if page.kind != OutboxKind.PAGE or page.staff_id is None or page.failover_of is not None:
        return False
    if page.body_enc is None:
        return False
    already = session.scalar(select(Outbox.id).where(Outbox.failover_of == page.id))
    staff = session.get(Staff, page.staff_id)
    if already is not None or staff is None or staff.disabled:
        return False
    others = [a for a in staff_addresses(staff) if a.channel != page.channel
              and a.channel in channels]
    if not others:
        return False
    enqueue_to_staff(session, others[0], page.body_enc, staff.id, page.escalation_id, now,
                     failover_of=page.id)
    audit(session, now, "page_failover", "escalation", page.escalation_id,
          detail=f"from={page.channel} to={others[0].channel}")
    return True


def empty_rota_problem(rota: Rota) -> list[str]:
    if rota.rotation:
        return []
    return ["[oncall] rotation is empty: every emergency pages all on-call and admins"]


def rota_problems(session: Session, rota: Rota) -> list[str]:
    """Rota members who could not be paged: for check-config."""
    problems = []
    names = [*rota.rotation, *([rota.backup] if rota.backup else [])]
    for name in names:
        staff = session.scalar(select(Staff).where(Staff.username == name))
        where = "backup" if name == rota.backup else "rotation"
        if staff is None:
            problems.append(f"[oncall] {where}: {name} is not a staff member (a gap in the rota)")
        elif staff.disabled:
            problems.append(f"[oncall] {where}: {name} is disabled (a gap in the rota)")
        elif staff.role not in ONCALL_ROLES:
            problems.append(f"[oncall] {where}: {name} has role staff, not oncall or admin")
        elif not staff.phone_enc and not staff.telegram_enc:
            problems.append(f"[oncall] {where}: {name} has no phone or Telegram chat for pages")
    return problems


# --- acknowledging and resolving -------------------------------------------------------------


def acknowledge(session: Session, deps: EscalationDeps, escalation_id: int,
                      staff: Staff, now: datetime) -> Escalation:
    escalation = _open(session, escalation_id)
    if escalation.acked_at is None:
        _observe_ack(session, escalation, now)
    escalation.status = EscalationStatus.ACKED
    escalation.acked_at = now
    escalation.acked_by = staff.id
    escalation.next_step_at = now + timedelta(seconds=deps.policy.ack_timeout_seconds)
    audit(session, now, "escalation_acked", "escalation", escalation.id, actor=staff.username,
          actor_staff_id=staff.id)
    note(session, log, "escalation_acked", escalation=escalation.id, staff=staff.id)
    return escalation


def resolve(session: Session, escalation_id: int, staff: Staff,
                  now: datetime) -> Escalation:
    escalation = _open(session, escalation_id)
    escalation.status = EscalationStatus.RESOLVED
    escalation.resolved_at = now
    escalation.resolved_by = staff.id
    escalation.next_step_at = None
    if escalation.acked_at is None:  # resolving answers the page too
        _observe_ack(session, escalation, now)
        escalation.acked_at, escalation.acked_by = now, staff.id
    audit(session, now, "escalation_resolved", "escalation", escalation.id,
          actor=staff.username, actor_staff_id=staff.id)
    note(session, log, "escalation_resolved", escalation=escalation.id, staff=staff.id)
    return escalation


def _observe_ack(session: Session, escalation: Escalation, now: datetime) -> None:
    """From the first page (queued as the escalation opened) to its first answer. A later
    acknowledgement, after an ack timeout started the ladder again, is not counted again."""
    observe(session, Observed.PAGE_ACK, (now - escalation.opened_at).total_seconds())


def _open(session: Session, escalation_id: int) -> Escalation:
    if not 0 < escalation_id <= MAX_ID:
        raise EscalationNotFound(escalation_id)
    escalation = session.get(Escalation, escalation_id)
    if escalation is None or escalation.status == EscalationStatus.RESOLVED:
        raise EscalationNotFound(escalation_id)
    return escalation


def open_escalation_ids(session: Session) -> list[int]:
    return list(
        session.scalars(
            select(Escalation.id)
            .where(Escalation.status != EscalationStatus.RESOLVED)
            .order_by(Escalation.id)
        )
    )

"""Staff writing in by SMS or Telegram: ACK n, ACK, RESOLVE n.

What an ACK means, in order:
- `ACK 42` acknowledges emergency #42; a bare `ACK` acknowledges the one open emergency, or,
  with several open, asks which. An open emergency always wins: nothing below changes this.
- Any ACK (bare or numbered, whatever it did to emergencies) from the person who took over
  on call also confirms their handover, and answers their test pages of the last hour: it
  shows that texts reach them and that they answer. The answer says each thing it did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from bot.domain import Channel, InboundMessage, OutboxKind
from bot.storage.models import Staff
from handlers import handover, page_tests
from handlers.escalation import (
    EscalationDeps,
    EscalationNotFound,
    StaffAddress,
    acknowledge,
    enqueue_to_staff,
    open_escalation_ids,
    resolve,
)

COMMAND = re.compile(r"^\s*(ack|resolve)\s*#?\s*(\d+)?\s*[.!]*\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class StaffCommand:
    answer: str  # sent back to the staff member
    escalation_id: int | None  # acknowledged or resolved by it
    ack: bool = False  # an ACK of any form
    idle: bool = False  # a bare ACK with no emergency open: the answer says only that


def handle_staff_message(
    session: Session, deps: EscalationDeps, staff: Staff, msg: InboundMessage,
    now: datetime,
) -> StaffCommand:
    """ACK n / ACK / RESOLVE n from a registered staff address."""
    command = _staff_command(session, deps, staff, msg.text, now)
    answer = command.answer
    if command.ack:
        confirmed = [said for said in (handover.confirm(session, deps, staff, now),
                                       page_tests.acknowledge(session, staff,
                                                              msg.channel.value, now))
                     if said]
        if confirmed:
            answer = " ".join(confirmed if command.idle else [answer, *confirmed])
    stored = staff.phone_hash if msg.channel == Channel.SMS else staff.telegram_hash
    to = StaffAddress(msg.channel.value, deps.cipher.encrypt(msg.address),
                      stored or deps.cipher.address_hash(msg.channel, msg.address))
    enqueue_to_staff(session, to, deps.cipher.encrypt(answer), staff.id, None, now,
                     kind=OutboxKind.STAFF_NOTICE)
    return command


def _staff_command(session: Session, deps: EscalationDeps, staff: Staff, text: str,
                   now: datetime) -> StaffCommand:
    match = COMMAND.match(text)
    if match is None:
        return StaffCommand("Commands: ACK 42 to acknowledge emergency #42, RESOLVE 42 when "
                            "it is handled.", None)
    verb, number = match.group(1).upper(), match.group(2)
    ack = verb == "ACK"
    open_ids = open_escalation_ids(session)
    if number is None:
        if verb == "RESOLVE" or len(open_ids) != 1:
            return StaffCommand(_which(verb, open_ids), None, ack, idle=ack and not open_ids)
        number = str(open_ids[0])
    link = f"{deps.public_url}/console/escalations/{number}"
    try:
        if ack:
            acked = acknowledge(session, deps, int(number), staff, now)
            return StaffCommand(f"Acknowledged #{number}. Reply RESOLVE {number} when it is "
                                f"handled. {link}", acked.id, ack)
        resolved = resolve(session, int(number), staff, now)
        return StaffCommand(f"Resolved #{number}.", resolved.id)
    except EscalationNotFound:
        return StaffCommand(f"No open emergency #{number}. " + _open_list(open_ids), None, ack)


def _which(verb: str, open_ids: list[int]) -> str:
    if not open_ids:
        return "No open emergencies."
    return f"Reply {verb} and the number. " + _open_list(open_ids)


def _open_list(open_ids: list[int]) -> str:
    if not open_ids:
        return "None are open."
    return "Open: " + ", ".join(f"#{i}" for i in open_ids[:10]) + "."

"""Delivery receipts from providers: they move an outbox row to delivered or failed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain import Observed, OutboxStatus
from bot.storage.after_commit import note, observe
from bot.storage.models import Outbox
from bot.storage.queries import mark_opted_out

log = logging.getLogger(__name__)

# Twilio's MessageStatus values; the rest (queued, sending, sent, accepted, scheduled) mean
# the message is still on its way.
DELIVERED = {"delivered", "read"}
FAILED = {"undelivered", "failed", "canceled"}
UNSUBSCRIBED_CODES = {"21610"}


@dataclass(frozen=True)
class Delivery:
    """Which pages should show the new status."""

    conversation_id: int | None
    escalation_id: int | None


def record_delivery(
    session: Session,
    provider_id: str,
    provider_status: str,
    error_code: str | None,
    now: datetime,
) -> Delivery | None:
    """None when no outbox row has that provider id (not ours, or erased)."""
    row = session.scalar(select(Outbox).where(Outbox.provider_id == provider_id))
    if row is None:
        return None
    if provider_status in DELIVERED:
        row.status = OutboxStatus.DELIVERED
    elif provider_status in FAILED:
        if row.status != OutboxStatus.FAILED:  # Twilio may tell of one failure twice
            observe(session, Observed.OUTBOX_FAILED, channel=row.channel, kind=row.kind)
        row.status = OutboxStatus.FAILED
        row.last_error = f"{provider_status}:{error_code or '-'}"
    row.updated_at = now
    if error_code in UNSUBSCRIBED_CODES:
        mark_opted_out(session, row.contact_id, row.address_hash, now)
    note(session, log, "delivery_status", outbox=row.id, status=provider_status,
         error_code=error_code)
    return Delivery(row.conversation_id, row.escalation_id)

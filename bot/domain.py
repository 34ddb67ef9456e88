"""Value types shared by every layer. No I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Channel(enum.StrEnum):
    SMS = "sms"
    TELEGRAM = "telegram"
    WEB = "web"


class Language(enum.StrEnum):
    EN = "en"
    ES = "es"


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class IntakeState(enum.StrEnum):
    """Where the bot is in its two questions: intake category, then safe-to-text."""

    NOT_ASKED = "not_asked"
    ASKED = "asked"
    SAFE_ASKED = "safe_asked"
    DONE = "done"


class IntakeCategory(enum.StrEnum):
    NEED_HELP_NOW = "need_help_now"
    CONNECT_SERVICES = "connect_services"
    GET_INVOLVED = "get_involved"
    OTHER = "other"


class Direction(enum.StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"
    NOTE = "note"  # an internal note by staff: shown in the history, never sent


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    REFUSED = "refused"
    CANCELLED = "cancelled"


class OutboxKind(enum.StrEnum):
    REPLY = "reply"
    OPTOUT_CONFIRM = "optout_confirm"  # the one message allowed to an opted-out address
    PAGE = "page"
    STAFF_NOTICE = "staff_notice"  # answers to staff commands (ACK, RESOLVE) by text
    # The on-call loop checking itself: never an emergency, never counted as a page.
    HANDOVER = "handover"  # "you are on call now", and "not confirmed" to backup and admins
    TEST_PAGE = "test_page"  # python -m bot page-test


class EscalationStatus(enum.StrEnum):
    OPEN = "open"
    ACKED = "acked"
    RESOLVED = "resolved"


class Observed(enum.StrEnum):
    """What a unit of work reports for the metrics once it has committed
    (bot.storage.after_commit.observe)."""

    FIRST_STAFF_REPLY = "first_staff_reply"  # seconds from first message; label channel
    PAGE_ACK = "page_ack"  # seconds from the first page to the first acknowledgement
    OUTBOX_FAILED = "outbox_failed"  # a message that will not arrive; channel, kind
    OUTBOX_RETRIED = "outbox_retried"  # a send that failed and will be tried again


class StaffRole(enum.StrEnum):
    STAFF = "staff"
    ONCALL = "oncall"
    ADMIN = "admin"


# Priority: higher sorts first in the queue. Emergencies always top.
PRIORITY_NORMAL = 0
PRIORITY_EMERGENCY = 100

# The longest text a contact's message may carry, on any channel. SPEC: a 10,000-character
# text is stored and shown safely; a longer one is refused at the edge as absurd (Twilio caps
# an inbound SMS at 1,600 characters, Telegram a message at 4,096).
MAX_TEXT_CHARS = 10_000


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message from a contact, whatever the channel, after the edge verified it."""

    channel: Channel
    address: str  # E.164 phone number or Telegram chat id; never logged
    provider_id: str  # MessageSid or Telegram update_id, for dedupe
    text: str
    media_count: int
    received_at: datetime  # aware, UTC
    is_start: bool = False  # Telegram /start: always treated as a first contact
    # Our own address the contact wrote to (the Twilio number, when the account has several),
    # so replies come from it; None where the channel has one address.
    our_address: str | None = None


class DuplicateMessage(Exception):
    """The provider sent this message id before; it was already taken in."""


class SendError(Exception):
    """A provider did not take a message. `reason` is a short code, never message content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TemporarySendError(SendError):
    """Worth retrying: a 5xx, a timeout, a rate limit (with the provider's retry_after).
    `in_doubt` means the provider may have taken the message all the same (the connection
    broke after the request went out), so it is asked before the message is sent again."""

    def __init__(
        self, reason: str, retry_after: float | None = None, in_doubt: bool = False
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.in_doubt = in_doubt


class PermanentSendError(SendError):
    """Retrying will not help. `opted_out` means the provider says the address unsubscribed."""

    def __init__(self, reason: str, opted_out: bool = False) -> None:
        super().__init__(reason)
        self.opted_out = opted_out

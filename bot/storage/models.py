"""Tables. Message bodies and addresses are only ever stored encrypted (columns *_enc);
addresses are found by keyed hash (columns *_hash). No location fields exist anywhere."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out. PostgreSQL keeps it as timestamptz; SQLite, which has
    no time zones, as naive UTC. Comparing naive with aware datetimes is a bug waiting to
    happen, so a naive one is refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _in_utc(value)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        """On SQLite, DateTime's own parsing and then process_result_value in one step, a
        sixth of the cost: each inbound message reads a few of these. The text we stored
        is read as UTC; anything else falls back to the two steps."""
        two_steps = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite" or two_steps is None:
            return two_steps

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            try:
                parsed = datetime.fromisoformat(value + "+00:00")
            except (TypeError, ValueError):
                parsed = None
            if parsed is None or parsed.tzinfo is None:  # a date alone ignores the offset
                return two_steps(value)  # type: ignore[no-any-return]
            return parsed

        return process

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, process_bind_param and then DateTime's own string format in one step:
        every inbound message binds three of these, and the two steps cost three times
        as much. The text is the same (tests/test_direct.py holds it to that)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            # Without its "+00:00": cheaper than replace(tzinfo=None).
            return _in_utc(value).isoformat(" ", "microseconds")[:26]

        return process


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    address_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # None once erased: an opted-out contact keeps only its hash, so the opt-out holds.
    address_enc: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(2), default="en")
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # Covers the open queue: its order, its filters and its counts come from index
        # entries alone (storage/views.queue, open_counts).
        Index("ix_conversations_queue", "status", "emergency", "priority", "awaiting_since",
              "opened_at", "assigned_to"),
        # The closed tab, latest first, a page at a time; and the retention purge.
        Index("ix_conversations_closed", "status", "closed_at", "id"),
        Index("ix_conversations_assigned", "assigned_to", "status"),
        Index("ix_conversations_contact", "contact_id", "id"),
        # Covers the scrape's "contacts waiting, by channel, and since when" (storage/figures).
        Index("ix_conversations_waiting", "status", "channel", "awaiting_since"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # SET NULL: erasing a contact keeps the conversation's bare counts for reporting.
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    intake_state: Mapped[str] = mapped_column(String(16))
    intake_category: Mapped[str | None] = mapped_column(String(32))
    safe_to_text: Mapped[bool | None] = mapped_column(Boolean)
    emergency: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_inbound_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_emergency_reply_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The next opening an after-hours notice was sent for: one notice per closed period.
    after_hours_notice_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assigned_to: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))
    # Our own number the contact last wrote to: replies go out from it.
    origin: Mapped[str | None] = mapped_column(String(32))
    # When staff first answered, for "time to first staff reply".
    first_staff_reply_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The contact's oldest message staff have not answered yet (None once they have): the
    # queue's "waiting" time and its order.
    awaiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    direction: Mapped[str] = mapped_column(String(4))
    body_enc: Mapped[str] = mapped_column(Text)
    media_count: Mapped[int] = mapped_column(Integer, default=0)
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    author_staff_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProviderEvent(Base):
    """Every provider message id ever taken in. The unique constraint is the dedupe:
    a replayed MessageSid or update_id fails its insert instead of racing a lookup."""

    __tablename__ = "provider_events"
    __table_args__ = (UniqueConstraint("channel", "provider_id", name="uq_provider_event"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    provider_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Outbox(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    # Indexed: a conversation's page reads each outbound message's delivery status by it.
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), index=True
    )
    escalation_id: Mapped[int | None] = mapped_column(
        ForeignKey("escalations.id", ondelete="SET NULL"), index=True
    )
    # A page that failed on one channel is sent again on the other; this points at the first.
    failover_of: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
    # Address and body are dropped once the provider has the message: keep as little as possible.
    address_enc: Mapped[str | None] = mapped_column(Text)
    # Kept after sending, for the opt-out check at every claim: a keyed hash, never reversible.
    address_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    body_enc: Mapped[str | None] = mapped_column(Text)
    # Our number to send from (SMS with several numbers); None means the configured one.
    origin: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An earlier attempt may have reached the provider (a crash or timeout mid-send): ask the
    # provider before sending again.
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    provider_id: Mapped[str | None] = mapped_column(String(64), index=True)
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Escalation(Base):
    __tablename__ = "escalations"
    __table_args__ = (
        Index("ix_escalations_due", "status", "next_step_at"),
        # A conversation's escalation: its page, its audit filter, and a new emergency's
        # "is one open already".
        Index("ix_escalations_conversation", "conversation_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    channel: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer, default=0)
    next_step_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acked_by: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    # What the person who resolved it wrote: staff words, encrypted all the same.
    resolution_note_enc: Mapped[str | None] = mapped_column(Text)


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    phone_enc: Mapped[str | None] = mapped_column(Text)
    phone_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    telegram_enc: Mapped[str | None] = mapped_column(Text)
    telegram_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    totp_secret_enc: Mapped[str | None] = mapped_column(Text)
    # Two-factor is on once the person has shown a code from the secret (enrolment).
    totp_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last TOTP time step used, so a code cannot be used twice.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    sound_on: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds a random token; only its keyed hash is here."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"),
                                          index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    # Passed the second step (TOTP or a recovery code), or no second step was asked.
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    client: Mapped[str] = mapped_column(String(120), default="")  # the browser, in brief
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))


class RecoveryCode(Base):
    """One-time codes for when the authenticator is lost; only a keyed hash is kept."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"),
                                          index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginFailure(Base):
    """A failed sign-in, by keyed hash of the account name or of the client, for throttling
    across processes. Old rows are deleted as new ones come."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class CannedReply(Base):
    __tablename__ = "canned_replies"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(80))
    language: Mapped[str] = mapped_column(String(2))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebSession(Base):
    """A web chat, open in a page. The page holds a random token in memory only; here is
    just its keyed hash, which is also the web contact's address hash. A session ends on
    quick exit, EXIT, the page closing, or `[webchat] idle_minutes` without a message, and
    an ended session is never written to again."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), unique=True)
    language: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    end_reason: Mapped[str | None] = mapped_column(String(16))


class RetiredLookupKey(Base):
    """The address-lookup key of an encryption key that was rotated out, kept (encrypted
    with a current key) by `rekey` so that hashes it could not compute again, such as an
    erased contact's opt-out, are still found once the old key is removed."""

    __tablename__ = "retired_lookup_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    key_enc: Mapped[str] = mapped_column(Text)
    retired_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConversationViewer(Base):
    """Who has a conversation open right now: refreshed while the page is open."""

    __tablename__ = "conversation_viewers"

    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"),
                                          primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OncallOverride(Base):
    __tablename__ = "oncall_overrides"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """Who did what to which record, and when. Never message text or addresses."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_target", "target_type", "target_id"),
        Index("ix_audit_log_actor", "actor_staff_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_staff_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff.id", ondelete="SET NULL")
    )
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(String(200), default="")


class Handover(Base):
    """Who took over on call, when, and whether they confirmed it.

    `seq` numbers handovers in the order they happened. Each is recorded by inserting the
    next number, so when several processes notice the same change at once, the unique
    constraint lets exactly one of them record (and announce) it."""

    __tablename__ = "handovers"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    # None: nobody is on call (a gap in the rota).
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: until further notice
    # False for the first record of a database, which only notes who was on call already.
    announced: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the backup and the admins are told, if nobody has confirmed by then; None when
    # there is nothing to wait for (confirmed, superseded, a gap, not announced).
    confirm_by: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unconfirmed_told_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PageTest(Base):
    """A test page sent by `python -m bot page-test`: not an emergency, never an
    escalation."""

    __tablename__ = "page_tests"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"),
                                                 index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acked_channel: Mapped[str | None] = mapped_column(String(16))


class OpeningDigest(Base):
    """The one line the staff chat got at an opening. The unique opening time is what makes
    it one per opening, however many processes notice the opening."""

    __tablename__ = "opening_digests"

    id: Mapped[int] = mapped_column(primary_key=True)
    opening_at: Mapped[datetime] = mapped_column(UTCDateTime, unique=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)

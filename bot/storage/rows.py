"""The inbound hot path's storage: SQLAlchemy Core statements, run by bot.storage.direct.

Every contact message runs through here, inside the group-commit writer, and the ORM's unit
of work cost about 2.8 ms per first contact where these statements cost a fraction of that
(bench/inbound.py). A contact and its current conversation are loaded with one query into
small tracked rows; attribute writes are remembered and saved with one UPDATE each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cache
from typing import Any, ClassVar, Self

from sqlalchemy import (
    Connection,
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from bot.domain import DuplicateMessage
from bot.storage import direct
from bot.storage.models import Contact, Conversation, Message, Outbox, ProviderEvent, Staff

CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
MESSAGES: Table = Message.__table__  # type: ignore[assignment]
OUTBOX: Table = Outbox.__table__  # type: ignore[assignment]
STAFF: Table = Staff.__table__  # type: ignore[assignment]
EVENTS: Table = ProviderEvent.__table__  # type: ignore[assignment]


@dataclass
class _Tracked:
    """A row whose attribute writes after loading are collected for one UPDATE."""

    table: ClassVar[Table]
    id: int

    def __post_init__(self) -> None:
        # Writes are tracked from here on: the values given to __init__ are the loaded state.
        object.__setattr__(self, "_changed", {})

    def __setattr__(self, name: str, value: Any) -> None:
        changed = self.__dict__.get("_changed")
        if changed is not None and self.__dict__.get(name) != value:
            changed[name] = value
        object.__setattr__(self, name, value)

    @classmethod
    def columns(cls) -> tuple[Any, ...]:
        return _columns(cls)

    @classmethod
    def loaded(cls, values: Mapping[str, Any], prefix: str = "") -> Self:
        """The row as read, from `values` by column name (with `prefix`). Filled in directly:
        the dataclass __init__ would send every field through __setattr__'s tracking, and
        this runs for every inbound message."""
        row = object.__new__(cls)
        state = row.__dict__
        for key, name in _keys(cls, prefix):
            state[name] = values[key]
        state["_changed"] = {}
        return row

    def save(self, conn: Connection) -> None:
        changed: dict[str, Any] = self.__dict__["_changed"]
        if changed:
            direct.execute(conn, _update_by_id(self.table), {"row_id": self.id, **changed})
            changed.clear()


@dataclass
class ContactRow(_Tracked):
    table: ClassVar[Table] = CONTACTS
    address_enc: str | None  # None once an opted-out contact erased their conversation
    language: str
    opted_out: bool
    opted_out_at: datetime | None


@dataclass
class ConversationRow(_Tracked):
    table: ClassVar[Table] = CONVERSATIONS
    status: str
    intake_state: str
    intake_category: str | None
    safe_to_text: bool | None
    emergency: bool
    priority: int
    last_inbound_at: datetime
    last_emergency_reply_at: datetime | None
    after_hours_notice_for: datetime | None
    closed_at: datetime | None
    outcome: str | None
    origin: str | None
    awaiting_since: datetime | None


@cache
def _columns(cls: type[_Tracked]) -> tuple[Any, ...]:
    # Once per class: every inbound message builds its rows from these.
    return tuple(cls.table.c[f.name] for f in fields(cls))


@cache
def _keys(cls: type[_Tracked], prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((prefix + f.name, f.name) for f in fields(cls))


# Statements are built once and run with parameters: building one per call (bind
# parameters, cache keys) cost more than running it.


@cache
def _update_by_id(table: Table) -> Update:
    # The SET clause comes from the parameters given at execution.
    return update(table).where(table.c.id == bindparam("row_id"))


@cache
def _insert(table: Table) -> Insert:
    return insert(table)


def _hash_params(hashes: list[str]) -> dict[str, str]:
    return {f"h{i}": value for i, value in enumerate(hashes)}


def _any_hash(column: Any, count: int) -> Any:
    # One bind per candidate hash, not an expanding IN: bot.storage.direct runs it as is.
    return column.in_([bindparam(f"h{i}") for i in range(count)])


@cache
def _sender_query(channel: str, count: int) -> Select[Any]:
    staff_hash = STAFF.c.phone_hash if channel == "sms" else STAFF.c.telegram_hash
    staff_id = (
        select(STAFF.c.id)
        .where(_any_hash(staff_hash, count), STAFF.c.disabled.is_(False))
        .limit(1)
        .scalar_subquery()
        .label("staff_id")
    )
    latest = (
        select(func.max(CONVERSATIONS.c.id))
        .where(CONVERSATIONS.c.contact_id == CONTACTS.c.id)
        .correlate(CONTACTS)
        .scalar_subquery()
    )
    conversation_cols = [c.label(f"v_{c.name}") for c in ConversationRow.columns()]
    # One row always: a one-row source left-joined to the contact and its conversation.
    one = select(literal(1).label("one")).subquery()
    return select(staff_id, CONTACTS.c.address_hash.label("stored_hash"), *ContactRow.columns(),
                  *conversation_cols).select_from(
        one.outerjoin(CONTACTS, _any_hash(CONTACTS.c.address_hash, count)).outerjoin(
            CONVERSATIONS, CONVERSATIONS.c.id == latest
        )
    ).limit(1)


@dataclass(frozen=True)
class Sender:
    """Who wrote from an address: a registered staff member, or a contact (maybe new)."""

    staff_id: int | None
    contact: ContactRow | None
    conversation: ConversationRow | None
    address_hash: str  # the contact's stored hash, or the newest one for a new contact


@cache
def _event_and_lock(count: int) -> Select[Any]:
    event = (
        pg_insert(EVENTS)
        .values(channel=bindparam("channel"), provider_id=bindparam("provider_id"),
                received_at=bindparam("received_at"))
        .on_conflict_do_nothing(index_elements=["channel", "provider_id"])
        .returning(EVENTS.c.id)
        .cte("event")
    )
    locked = select(CONTACTS.c.id).where(_any_hash(CONTACTS.c.address_hash, count)) \
        .with_for_update().cte("locked")
    return select(select(func.count()).select_from(event).scalar_subquery().label("new"),
                  select(func.count()).select_from(locked).scalar_subquery().label("locked"))


def record_event_and_lock_sender(conn: Connection, channel: str, provider_id: str,
                                 now: datetime, hashes: list[str]) -> None:
    """PostgreSQL: insert the provider's message id once (a replay raises DuplicateMessage)
    and lock the sender's contact row, in one statement, as each is a round trip there.

    With several writers, two messages from one contact must not be taken in side by
    side: both would see no open conversation and each would open one. Locking the
    contact's row first makes the second wait for the first's commit, then read it (in a
    statement of its own, load_sender, which sees that commit). A contact new to both meets
    the unique address hash instead, and is taken again. SQLite has one writer: nothing is
    locked there (queries.record_provider_event)."""
    values = {"channel": channel, "provider_id": provider_id, "received_at": now,
              **_hash_params(hashes)}
    if conn.execute(_event_and_lock(len(hashes)), values).one().new != 1:
        raise DuplicateMessage(f"{channel} {provider_id}")


def load_sender(conn: Connection, channel: str, hashes: list[str]) -> Sender:
    """Staff member, contact and latest conversation for an address, in one query: this
    runs for every inbound message. `hashes` are the address's candidate hashes, newest
    first (Cipher.address_hashes): more than one only while keys are being rotated."""
    values = direct.one(conn, _sender_query(channel, len(hashes)), _hash_params(hashes))
    if values["id"] is None:
        return Sender(values["staff_id"], None, None, hashes[0])
    contact = ContactRow.loaded(values)
    stored = values["stored_hash"]
    if values["v_id"] is None:
        return Sender(values["staff_id"], contact, None, stored)
    return Sender(values["staff_id"], contact, ConversationRow.loaded(values, "v_"), stored)


def insert_row(conn: Connection, table: Table, **values: Any) -> int:
    return direct.insert(conn, _insert(table), values)


def execute_statement(conn: Connection, statement: Insert | Update, values: dict[str, Any]) -> int:
    """Run a statement built once (cached) with these values; return the rows it touched."""
    return direct.execute(conn, statement, values)

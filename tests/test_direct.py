"""bot.storage.direct: the hot path's statements run on SQLite's cursor must write and read
exactly what SQLAlchemy itself would."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Engine, Integer, MetaData, Table, bindparam, insert, select, update
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.exc import IntegrityError, NoResultFound
from sqlalchemy.orm import Session

from bot.domain import OutboxStatus
from bot.storage import direct
from bot.storage.database import make_sync_engine
from bot.storage.models import Base, Contact, Outbox, UTCDateTime
from bot.storage.rows import CONTACTS, OUTBOX

NOW = datetime(2026, 11, 30, 16, 0, 12, 345678, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_sync_engine(f"sqlite+aiosqlite:///{tmp_path / 'direct.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def contact_values(address_hash: str, **extra: object) -> dict[str, object]:
    return {
        "channel": "sms",
        "address_hash": address_hash,
        "address_enc": "k1:ciphertext",
        "language": "es",
        "opted_out": True,
        "opted_out_at": NOW,
        "created_at": NOW,
        **extra,
    }


def stored_contact(engine: Engine, row_id: int) -> dict[str, object]:
    """A contact's raw stored values, below SQLAlchemy's type processing, without the two
    that differ on purpose (id and address_hash)."""
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.execute("SELECT * FROM contacts WHERE id = ?", (row_id,))
        names = [column[0] for column in cursor.description]
        row = dict(zip(names, cursor.fetchone(), strict=True))
    del row["id"], row["address_hash"]
    return row


def test_direct_insert_stores_the_same_values_as_sqlalchemy(engine: Engine):
    statement = insert(CONTACTS)
    with Session(engine) as session, session.begin():
        conn = session.connection()
        by_sqlalchemy = conn.execute(statement, contact_values("a")).inserted_primary_key[0]
        by_direct = direct.insert(conn, statement, contact_values("b"))

    assert by_direct == by_sqlalchemy + 1
    assert stored_contact(engine, by_direct) == stored_contact(engine, by_sqlalchemy)
    with Session(engine) as session:
        contact = session.get(Contact, by_direct)
        assert contact is not None
        assert (contact.address_hash, contact.opted_out, contact.opted_out_at) == ("b", True, NOW)
        assert contact.opted_out_at.tzinfo is UTC


def test_direct_one_reads_typed_values(engine: Engine):
    statement = (
        select(CONTACTS.c.id, CONTACTS.c.opted_out, CONTACTS.c.opted_out_at.label("when"))
        .where(CONTACTS.c.address_hash == bindparam("address_hash"))
    )
    with Session(engine) as session, session.begin():
        conn = session.connection()
        contact_id = direct.insert(conn, insert(CONTACTS), contact_values("a"))
        row = direct.one(conn, statement, {"address_hash": "a"})

        assert row == {"id": contact_id, "opted_out": True, "when": NOW}
        assert type(row["opted_out"]) is bool
        with pytest.raises(NoResultFound):
            direct.one(conn, statement, {"address_hash": "nobody"})


def test_direct_update_counts_rows_and_keeps_the_statements_own_values(engine: Engine):
    # The statement's own comparison values (pending) come from the statement, the rest
    # from the parameters.
    statement = update(OUTBOX).where(
        OUTBOX.c.id == bindparam("row_id"), OUTBOX.c.status == OutboxStatus.PENDING
    )
    outbox = {
        "channel": "sms", "kind": "reply", "status": OutboxStatus.PENDING, "attempts": 0,
        "address_enc": "k1:a", "body_enc": "k1:b", "next_attempt_at": NOW, "created_at": NOW,
        "updated_at": NOW,
    }
    with Session(engine) as session, session.begin():
        conn = session.connection()
        pending = direct.insert(conn, insert(OUTBOX), outbox)
        sent = direct.insert(conn, insert(OUTBOX), {**outbox, "status": OutboxStatus.SENT})
        values = {"status": OutboxStatus.CANCELLED, "body_enc": None, "updated_at": NOW}

        assert direct.execute(conn, statement, {"row_id": pending, **values}) == 1
        assert direct.execute(conn, statement, {"row_id": sent, **values}) == 0

    with Session(engine) as session:
        rows = {row.id: row for row in session.scalars(select(Outbox))}
        assert (rows[pending].status, rows[pending].body_enc) == ("cancelled", None)
        assert (rows[sent].status, rows[sent].body_enc) == ("sent", "k1:b")


def test_direct_raises_database_errors_as_sqlalchemy_does(engine: Engine):
    # Intake tells "database down" from "bad message" by SQLAlchemy's exception classes.
    with Session(engine) as session, session.begin():
        conn = session.connection()
        direct.insert(conn, insert(CONTACTS), contact_values("a"))
        with pytest.raises(IntegrityError, match="UNIQUE constraint failed"):
            direct.insert(conn, insert(CONTACTS), contact_values("a"))


def test_direct_refuses_statements_with_in_lists(engine: Engine):
    statement = update(OUTBOX).where(OUTBOX.c.status.in_(["pending", "sending"]))
    with Session(engine) as session, session.begin(), pytest.raises(TypeError, match="IN lists"):
        direct.execute(session.connection(), statement, {"attempts": 1})


def test_direct_insert_applies_a_left_out_columns_constant_default(engine: Engine):
    with Session(engine) as session, session.begin():
        row_id = direct.insert(session.connection(), insert(OUTBOX), {
            "channel": "sms", "kind": "reply", "address_enc": "k1:a", "body_enc": "k1:b",
            "status": OutboxStatus.PENDING, "next_attempt_at": NOW, "created_at": NOW,
            "updated_at": NOW,
        })
    with Session(engine) as session:
        row = session.get(Outbox, row_id)
        assert row is not None and row.attempts == 0 and row.in_doubt is False


def test_direct_refuses_a_left_out_column_whose_default_is_not_a_constant(engine: Engine):
    table = Table("stamped", MetaData(), Column("id", Integer, primary_key=True),
                  Column("n", Integer, default=lambda: 7))
    with engine.begin() as conn:
        table.create(conn)
        with pytest.raises(TypeError, match="give n a value"):
            direct.insert(conn, insert(table), {"id": 1})


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.timezones()))
def test_utc_columns_bind_the_same_text_as_sqlalchemys_two_steps(value: datetime) -> None:
    # UTCDateTime binds in one step on SQLite; SQLAlchemy would run process_bind_param
    # and then DateTime's own string format. A different text would sort and compare
    # differently from the rows already stored.
    dialect = sqlite_dialect()
    column = UTCDateTime()
    fused = column.dialect_impl(dialect).bind_processor(dialect)
    two_steps = column.impl.dialect_impl(dialect).bind_processor(dialect)
    assert fused is not None and two_steps is not None
    assert fused(value) == two_steps(column.process_bind_param(value, dialect))
    assert fused(None) is None
    with pytest.raises(ValueError, match="naive"):
        fused(value.replace(tzinfo=None))


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=st.timezones()).map(
        lambda value: UTCDateTime().dialect_impl(sqlite_dialect()).bind_processor(
            sqlite_dialect())(value)),
    st.text(alphabet="0123456789-: .T+Z", max_size=32),
))
def test_utc_columns_read_what_sqlalchemys_two_steps_read(stored: str) -> None:
    # Stored text (ours, or anything else found in the column) reads as it would through
    # DateTime's parser and process_result_value: the same datetime, or the same error.
    dialect = sqlite_dialect()
    column = UTCDateTime()
    fused = column.dialect_impl(dialect).result_processor(dialect, None)
    parse = column.impl.dialect_impl(dialect).result_processor(dialect, None)
    assert fused is not None and parse is not None
    try:
        expected = column.process_result_value(parse(stored), dialect)
    except ValueError:
        with pytest.raises(ValueError):
            fused(stored)
        return
    assert fused(stored) == expected
    assert fused(None) is None

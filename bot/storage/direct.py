"""Run the hot path's Core statements straight on SQLite's DBAPI cursor.

Every inbound message runs about ten statements. Through Connection.execute each one cost
about 26 us on this machine, of which SQLite's own work was about 6 us; the rest is
SQLAlchemy's execution context, events and result objects (see bench/inbound.py and the
README's performance notes). Here a statement is compiled once per set of parameter names
with the dialect's own compiler, and its values pass through the dialect's own bind and
result processors, so what is written and read back is exactly what the ORM would see.

Only on SQLite, where the statement is the whole cost. On other databases these functions
call Connection.execute: a network round trip dwarfs the difference there, and that path
is SQLAlchemy's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Executable, Insert, Select, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # bind names, in the order of the ? placeholders
    fixed: Mapping[str, Any]  # values the statement itself carries (status = 'pending')
    binds: tuple[tuple[int, Callable[[Any], Any]], ...]  # placeholder and its processor
    results: tuple[tuple[str, Processor], ...]  # for a SELECT: column name and processor

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        fixed = self.fixed
        out = [values[name] if name in values else fixed[name] for name in self.names]
        for i, process in self.binds:  # most values need no processing
            if out[i] is not None:
                out[i] = process(out[i])
        return out

    def row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        return {
            name: value if process is None or value is None else process(value)
            for (name, process), value in zip(self.results, raw, strict=True)
        }


# Bounded, so a caller that builds a statement per call wastes time but cannot leak memory.
# Statements hash by identity, and a cached key holds its statement, so an id is never
# reused while its entry lives.
@lru_cache(maxsize=256)
def _compiled(statement: Executable, names: tuple[str, ...], dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=list(names))
    assert isinstance(compiled, SQLCompiler)
    if compiled.positiontup is None or compiled.post_compile_params:
        raise TypeError("only positional statements without IN lists can run directly")
    binds = compiled.binds
    results: tuple[tuple[str, Processor], ...] = ()
    if isinstance(statement, Select):
        results = tuple(
            (column.name, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in statement.selected_columns
        )
    fixed = {name: bind.value for name, bind in binds.items() if name not in names}
    fixed.update(_defaults(compiled, names))
    return _Compiled(
        sql=compiled.string,
        names=tuple(compiled.positiontup),
        fixed=fixed,
        binds=tuple(
            (i, process) for i, process in enumerate(
                binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in compiled.positiontup
            ) if process is not None
        ),
        results=results,
    )


def _defaults(compiled: SQLCompiler, names: tuple[str, ...]) -> dict[str, Any]:
    """Values for the columns left out whose Python-side defaults SQLAlchemy would apply in
    its execution context, which this module skips. A constant default is applied; any
    other kind is refused here, at compile time, rather than stored as NULL."""
    found = {}
    for column in [*compiled.insert_prefetch, *compiled.update_prefetch]:
        if column.key in names:
            continue
        default = column.onupdate if column in compiled.update_prefetch else column.default
        if default is None or not default.is_scalar:
            raise TypeError(f"give {column.key} a value: its default cannot run directly")
        found[column.key] = default.arg  # type: ignore[attr-defined]
    return found


def _direct(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def _cursor(
    conn: Connection, statement: Executable, values: Mapping[str, Any], fetch: bool = False
) -> tuple[_Compiled, Any, list[Any]]:
    """Run the statement; with `fetch`, also read all its rows."""
    compiled = _compiled(statement, tuple(values), conn.dialect)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    parameters = compiled.parameters(values)
    try:
        cursor = dbapi.execute(compiled.sql, parameters)
        return compiled, cursor, cursor.fetchall() if fetch else []
    except conn.dialect.loaded_dbapi.Error as exc:
        # Raised as SQLAlchemy would (OperationalError, IntegrityError, ...), because callers
        # tell "the database is down" from "this message is bad" by those classes.
        raise DBAPIError.instance(
            compiled.sql, parameters, exc, conn.dialect.loaded_dbapi.Error
        ) from exc


def insert(conn: Connection, statement: Insert, values: Mapping[str, Any]) -> int:
    """Insert one row; return its integer primary key."""
    if not _direct(conn):
        result = conn.execute(statement, dict(values))
        return int(result.inserted_primary_key[0])  # type: ignore[index]
    _, cursor, _ = _cursor(conn, statement, values)
    return int(cursor.lastrowid)


def execute(conn: Connection, statement: Insert | Update, values: Mapping[str, Any]) -> int:
    """Run one INSERT or UPDATE; return how many rows it touched."""
    if not _direct(conn):
        return int(conn.execute(statement, dict(values)).rowcount)  # type: ignore[attr-defined]
    _, cursor, _ = _cursor(conn, statement, values)
    return int(cursor.rowcount)


def one(conn: Connection, statement: Select[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The one row a SELECT returns, by column name."""
    if not _direct(conn):
        return dict(conn.execute(statement, dict(values)).one()._mapping)
    compiled, _, rows = _cursor(conn, statement, values, fetch=True)
    if not rows:
        raise NoResultFound("no row was found when one was required")
    if len(rows) > 1:
        raise MultipleResultsFound("multiple rows were found when one was required")
    return compiled.row(rows[0])

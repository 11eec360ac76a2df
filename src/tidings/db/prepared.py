"""A SELECT compiled once and run on PostgreSQL straight through psycopg, for hot statements that carry
dozens of expressions and read a handful of rows.

At every execution SQLAlchemy builds the statement's cache key (walking the whole expression tree), looks
it up, processes each parameter and row, and psycopg splits the ``%(name)s`` text into ``$n`` form again
(it caches that only for statements under 4 KB). For the real-time segment statement of a new person,
dozens of segments' worth of SQL, that was about 3 ms of Python a request against 0.6 ms of the server's.
Here the statement is compiled once, by SQLAlchemy's own PostgreSQL compiler, to ``$n`` text with its
parameter order and its constant values; each execution then only lines up the live values and sends the
text through psycopg's raw cursor (no parsing on our side), which prepares it on the server once it has
run a few times, as for any statement (unless the connection turned that off).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import BindParameter, Connection, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.visitors import iterate

if TYPE_CHECKING:
    import psycopg

# psycopg and SQLAlchemy's PostgreSQL dialect are imported on first use, not with this module: a server on
# SQLite never needs them, and importing them is a fifth of a second of its start without a bytecode cache.


@functools.cache
def _dialect() -> Dialect:
    """The psycopg dialect (its bind casts, which let the server type each parameter) with ``$n``
    placeholders."""
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg  # noqa: PLC0415

    return PGDialect_psycopg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Prepared:
    sql: str
    # The parameter name behind each placeholder, in order.
    order: tuple[str, ...]
    # Values the statement itself holds (literals of the conditions), already converted for the driver.
    constants: Mapping[str, Any]

    def fetch_all(self, connection: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run with ``values`` for the statement's parameters without a value of their own; rows as
        tuples in the statement's column order. Runs in ``connection``'s transaction."""
        merged = {**self.constants, **values}
        with raw_cursor(connection) as cursor:
            cursor.execute(self.sql, [merged[name] for name in self.order])
            return cursor.fetchall()


def raw_cursor(connection: Connection) -> psycopg.RawCursor[tuple[Any, ...]]:
    """A psycopg cursor taking ``$n`` text, on ``connection``'s driver connection and in its transaction."""
    import psycopg  # noqa: PLC0415

    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return psycopg.RawCursor(driver)


def prepare(statement: Select[Any]) -> Prepared:
    """Compile ``statement`` for :meth:`Prepared.fetch_all`. Its parameters without a value are given at
    execution and must need no conversion (integers, text, lists of integers); the constants pass through
    SQLAlchemy's own conversions, and lists (``IN``) are expanded into the text here, once."""
    live = {
        element.key: None
        for element in iterate(statement)
        if isinstance(element, BindParameter) and element.required
    }
    state = statement.compile(dialect=_dialect()).construct_expanded_state(live)
    constants = {}
    for name, value in state.parameters.items():
        if name in live:
            continue
        convert = state.processors.get(name)
        constants[name] = convert(value) if convert is not None and value is not None else value
    return Prepared(state.statement, tuple(state.positiontup or ()), constants)

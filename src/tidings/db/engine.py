"""Engine construction for the two supported stores.

SQLite is the embedded default: WAL so readers never wait for the writer, ``BEGIN IMMEDIATE`` on the
write engine so two writers never deadlock upgrading a read lock, foreign keys on. PostgreSQL is the
production store, reached through psycopg 3.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

# A pooled PostgreSQL connection is checked (a round trip) before use only once it has sat idle this long.
PING_AFTER_IDLE_SECONDS = 1.0


def normalize_url(url: str) -> str:
    """Accept the URL forms people paste (postgres://, postgresql://) and pick our drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    return parsed.render_as_string(hide_password=False)


def create_store_engine(url: str, *, writer: bool, pool_size: int = 8, synchronous: str = "FULL") -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            pool_size=1 if writer else pool_size,
            max_overflow=0 if writer else pool_size,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=_json_dumps,
            json_deserializer=_sqlite_json_loads,
        )
        _configure_sqlite(engine, begin="BEGIN IMMEDIATE" if writer else "BEGIN", synchronous=synchronous)
        return engine
    # JIT off: Tidings' statements are short lookups and segment steps whose cost estimates cross the JIT
    # threshold without benefiting; compiling them took half of a 300 ms segment-build step (B3).
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"options": "-c jit=off"},
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections that sat idle: the pre-ping is a round trip on
    every checkout, one in nine of a PostgreSQL write transaction's, while a connection in steady use
    (the writer's) has just proved alive. One idle for a while (the server restarted, a proxy dropped
    it) is checked; a dead one is replaced before anything runs on it, as with the pre-ping."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out another (a new one if need be).
            raise exc.DisconnectionError(f"connection idle since {idle_since:.0f} was dead") from error


def _sqlite_json_loads(value: object) -> object:
    # SQLite gives JSON columns numeric affinity: a document that is a bare number ("100.0") is stored,
    # and read back, as a number rather than text.
    if isinstance(value, int | float):
        return value
    return orjson.loads(value)  # type: ignore[arg-type]


def _json_dumps(value: object) -> str:
    # JSON columns (attributes, event data, rendered messages) go through orjson rather than the standard
    # library: the same documents, several times faster, on every write path.
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # Integers beyond 64 bits (legal JSON, and accepted on input): the standard library writes them.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _configure_sqlite(engine: Engine, *, begin: str, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (needed for SAVEPOINT).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

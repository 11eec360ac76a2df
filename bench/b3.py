"""B3 — segment full build: how long a new data-driven segment takes to build over a large workspace.

The people and events are generated inside the database with SQL (PostgreSQL ``generate_series``, SQLite a
recursive CTE), from integer hash formulas that DuckDB reproduces exactly with ``range()``, so the DuckDB
baseline holds the same rows. Then ``tidings serve`` starts on that database, the segment

    plan eq "pro"  AND  purchase at least 3 times within the last 30 days

is created through the App API, and the build is timed from the POST to the first GET that shows it
``finished`` (polled every 50 ms; the worker of ``tidings serve`` builds it in steps, see
``tidings.segments.jobs.STEP_KEYS``). The segment's ``customer_count`` must equal the number of ids DuckDB
finds with the same query.

Event timestamps lie 1 to 1799 seconds before a whole hour counted back from the generation instant, so a
30-day window ending anywhere in the 30 minutes after generation holds exactly the same events: the build
and DuckDB agree although they judge the window at different instants (checked: the build must finish
within those 30 minutes).
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg
from sqlalchemy.engine import make_url

from bench.load import machine_load
from bench.server import RunningServer, start_server, stop_server, throwaway_database
from tidings.db import Database
from tidings.db.migrate import upgrade
from tidings.workspaces.service import create_workspace

DAY = 86400
HOUR = 3600
# Events spread over this many whole hours before the generation instant (90 days).
SPREAD_HOURS = 90 * 24
WINDOW_DAYS = 30
# A window judged at most this long after the generation instant holds the same events (see above).
MARGIN_SECONDS = 1800
PLANS = ("free", "pro", "team")
EVENT_NAMES = ("page_viewed", "added_to_cart", "purchase", "signed_in", "searched")
# Hashes of row numbers: an affine map then two squarings modulo the prime 2**31 - 1 (products stay below
# 2**62, so no database overflows or turns to floating point); one seed per independent stream.
PRIME = 2**31 - 1
MULTIPLIER = 48271
SEED_PERSON, SEED_EVENT_PERSON, SEED_EVENT_TIME = 12345, 67890, 424242
# Where _insert's statements take the bounds of a chunk.
LOW, HIGH = "@LOW@", "@HIGH@"
PEOPLE_CHUNK = 250_000
EVENTS_CHUNK = 1_000_000
POLL_SECONDS = 0.05
BUILD_TIMEOUT_SECONDS = 1800.0
DUCKDB_REPEATS = 3

CONDITIONS: dict[str, Any] = {
    "and": [
        {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}},
        {
            "event": {
                "name": "purchase",
                "count": {"operator": "at_least", "value": 3},
                "within": {"days": WINDOW_DAYS},
            }
        },
    ]
}

CONDITIONS_TEXT = f'`plan` eq "pro" and `purchase` at least 3 times within {WINDOW_DAYS} days'
Progress = Callable[[str], None]
# (dialect, SQL expression of the person's row number) → attribute name → SQL expression of its value.
AttributeSql = Callable[[str, str], dict[str, str]]


def _print(message: str) -> None:
    print(f"  {message}", flush=True)


# -- the data, as SQL expressions shared by the three databases --------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """``people`` people with keys ``first_id`` … and ``events`` events of theirs, generated at ``now``."""

    workspace_id: int
    people: int
    events: int
    now: int
    first_id: int = 1
    # Distinguishes the customer ids, emails and cio_ids of several data sets in one database.
    label: str = ""
    event_names: tuple[str, ...] = EVENT_NAMES
    # The custom attributes; by default plan (free, pro or team) and age (18 to 77).
    attributes: AttributeSql | None = None

    @property
    def since(self) -> int:
        """The first second of the condition's window judged at ``now``."""
        return self.now - WINDOW_DAYS * DAY


def div_sql(dialect: str, left: str, right: int) -> str:
    """Integer division of non-negative integers (DuckDB's ``/`` gives a double)."""
    return f"(({left}) // {right})" if dialect == "duckdb" else f"(({left}) / {right})"


def pick_sql(value: str, choices: tuple[str, ...]) -> str:
    """``choices[value % len(choices)]`` as a CASE expression."""
    whens = " ".join(f"WHEN {n} THEN '{choice}'" for n, choice in enumerate(choices))
    return f"(CASE ({value}) % {len(choices)} {whens} END)"


def hash_sql(index: str, seed: int) -> str:
    """A well-mixed integer in [0, 2**31 - 1) from a row number below 2**31."""
    x = f"((({index}) * {MULTIPLIER} + {seed}) % {PRIME})"
    x = f"(({x} * {x}) % {PRIME})"
    y = f"(({x} + {seed * 7 + 1}) % {PRIME})"
    return f"(({y} * {y}) % {PRIME})"


def default_attributes(dialect: str, i: str) -> dict[str, str]:
    h = hash_sql(i, SEED_PERSON)
    return {"plan": pick_sql(h, PLANS), "age": f"(18 + {div_sql(dialect, h, 3)} % 60)"}


def people_columns(dialect: str, data: Dataset, i: str = "i") -> dict[str, str]:
    """Column → SQL expression of person number ``i`` (0-based)."""
    attributes = (data.attributes or default_attributes)(dialect, i)
    json_object = "jsonb_build_object" if dialect == "postgres" else "json_object"
    pairs = ", ".join(f"'{name}', {value}" for name, value in attributes.items())
    text = f"CAST({i} AS TEXT)" if dialect == "postgres" else f"CAST({i} AS VARCHAR)"
    prefix = f"u{data.label}"
    false = "0" if dialect == "sqlite" else "false"
    empty = "'{}'::jsonb" if dialect == "postgres" else "'{}'"
    created = f"({data.now} - 100 * {DAY} + ({i}) % {DAY})"
    return {
        "id": f"({data.first_id} + {i})",
        "workspace_id": str(data.workspace_id),
        "cio_id": f"'b3{data.label}-' || {text}",
        "customer_id": f"'{prefix}' || {text}",
        "email": f"'{prefix}' || {text} || '@example.com'",
        "email_key": f"'{prefix}' || {text} || '@example.com'",
        "created_at": created,
        "updated_at": created,
        "unsubscribed": false,
        "attributes": f"{json_object}({pairs})",
        "attribute_timestamps": empty,
        "subscription_preferences": empty,
    }


def event_columns(dialect: str, data: Dataset, j: str = "j") -> dict[str, str]:
    """Column → SQL expression of event number ``j`` (0-based)."""
    a, b = hash_sql(j, SEED_EVENT_PERSON), hash_sql(j, SEED_EVENT_TIME)
    hour = f"({b} % {SPREAD_HOURS})"
    second = f"(1 + {div_sql(dialect, b, SPREAD_HOURS * 5)} % {MARGIN_SECONDS - 1})"
    timestamp = f"({data.now} - {hour} * {HOUR} - {second})"
    if dialect == "postgres":
        event_id = f"'e' || lpad(CAST({j} AS TEXT), 10, '0')"
    else:
        event_id = f"printf('e%010d', {j})"
    return {
        "workspace_id": str(data.workspace_id),
        "event_id": event_id,
        "person_id": f"({data.first_id} + {a} % {data.people})",
        "type": "'event'",
        "name": pick_sql(div_sql(dialect, b, SPREAD_HOURS), data.event_names),
        "data": "'{}'::jsonb" if dialect == "postgres" else "'{}'",
        "timestamp": timestamp,
        "received_at": timestamp,
        "can_trigger": f"({timestamp} >= {data.now - 3 * DAY})",
        "source": "'bench'",
    }


def _insert(dialect: str, table: str, columns: dict[str, str], variable: str) -> str:
    names = ", ".join(columns)
    values = ", ".join(columns.values())
    if dialect == "sqlite":
        series = (
            f"WITH RECURSIVE s({variable}) AS (SELECT {LOW} UNION ALL SELECT {variable} + 1 FROM s "
            f"WHERE {variable} < {HIGH}) "
        )
        return f"{series}INSERT INTO {table} ({names}) SELECT {values} FROM s"
    return (
        f"INSERT INTO {table} ({names}) SELECT {values} "
        f"FROM generate_series(CAST({LOW} AS BIGINT), CAST({HIGH} AS BIGINT)) AS s({variable})"
    )


def _bounded(statement: str, low: int, high: int) -> str:
    """The statement for rows ``low`` … ``high`` (integers written into the SQL: nothing else varies, and
    psycopg then leaves the ``%`` operators alone)."""
    return statement.replace(LOW, str(low)).replace(HIGH, str(high))


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(low, min(total, low + size) - 1) for low in range(0, total, size)]


def sqlite_path(database_url: str) -> str:
    database = make_url(database_url).database
    if not database:
        raise ValueError(f"not a SQLite file URL: {database_url}")
    return database


def psycopg_url(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_secondary_indexes(connection: sqlite3.Connection) -> list[tuple[str, str]]:
    """(drop, create) statements of the indexes of people and events that no constraint needs."""
    rows = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('people', 'events')"
    ).fetchall()
    return [(f'DROP INDEX "{name}"', sql) for name, sql in rows]


def _postgres_secondary_indexes(connection: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(drop, create) statements of the unique constraints and plain indexes of people and events (all
    but the primary keys and foreign keys)."""
    statements = []
    for table in ("people", "events"):
        constraints = connection.execute(
            "SELECT quote_ident(conname), pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = CAST(%s AS regclass) AND contype = 'u'",
            (table,),
        ).fetchall()
        for name, definition in constraints:
            statements.append(
                (
                    f"ALTER TABLE {table} DROP CONSTRAINT {name}",
                    f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}",
                )
            )
        indexes = connection.execute(
            "SELECT CAST(indexrelid AS regclass)::text, pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indrelid = CAST(%s AS regclass) AND NOT indisprimary "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = indexrelid)",
            (table,),
        ).fetchall()
        statements.extend((f"DROP INDEX {name}", definition) for name, definition in indexes)
    return statements


Load = tuple[tuple[str, str, int, int], ...]


def _load_sqlite(database_url: str, work: Load, report: Callable[[str, int, int], None]) -> None:
    connection = sqlite3.connect(sqlite_path(database_url), isolation_level=None)
    try:
        # A throwaway database nobody else has open yet: no WAL copy, no fsync, a big page cache.
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-1000000")
        indexes = _sqlite_secondary_indexes(connection)
        for drop, _ in indexes:
            connection.execute(drop)
        for table, statement, total, size in work:
            for low, high in _chunks(total, size):
                connection.execute("BEGIN")
                connection.execute(_bounded(statement, low, high))
                connection.execute("COMMIT")
                report(table, high + 1, total)
        for _, create in indexes:
            connection.execute(create)
        report("indexes", len(indexes), len(indexes))
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


def _load_postgres(database_url: str, work: Load, report: Callable[[str, int, int], None]) -> None:
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as connection:
        # Foreign keys unchecked (superuser only; the formulas only name people that exist).
        connection.execute("SET session_replication_role = replica")
        connection.execute("SET maintenance_work_mem = '512MB'")
        indexes = _postgres_secondary_indexes(connection)
        for drop, _ in indexes:
            connection.execute(drop)
        for table, statement, total, size in work:
            for low, high in _chunks(total, size):
                connection.execute(_bounded(statement, low, high))
                report(table, high + 1, total)
        for _, create in indexes:
            connection.execute(create)
        report("indexes", len(indexes), len(indexes))
        # What autovacuum does soon after a bulk load: statistics, and the visibility map that lets
        # index-only scans skip the heap.
        connection.execute("SELECT setval(pg_get_serial_sequence('people', 'id'), max(id)) FROM people")
        connection.execute("VACUUM ANALYZE people")
        connection.execute("VACUUM ANALYZE events")
        report("vacuum analyze", 2, 2)


def generate(backend: str, database_url: str, data: Dataset, progress: Progress = _print) -> float:
    """Insert the data set's people and events; return the seconds it took.

    A bulk load as a database administrator would do it: the secondary indexes and unique constraints of
    people and events are dropped first and created again at the end, with the same definitions; foreign
    keys are not checked row by row (the formulas only name people that exist)."""
    started = time.perf_counter()
    people = _insert(backend, "people", people_columns(backend, data), "i")
    events = _insert(backend, "events", event_columns(backend, data), "j")
    work: Load = (
        ("people", people, data.people, PEOPLE_CHUNK),
        ("events", events, data.events, EVENTS_CHUNK),
    )

    def report(what: str, done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        progress(f"{what}: {done:,} / {total:,} ({elapsed:.0f} s)")

    if backend == "sqlite":
        _load_sqlite(database_url, work, report)
    else:
        _load_postgres(database_url, work, report)
    return time.perf_counter() - started


# -- the DuckDB baseline ----------------------------------------------------------------------------------

DUCKDB_QUERY = """
SELECT p.id FROM people AS p
WHERE p.workspace_id = {workspace_id}
  AND json_extract_string(p.attributes, '$.plan') = 'pro'
  AND (SELECT count(*) FROM events AS e
       WHERE e.person_id = p.id AND e.workspace_id = {workspace_id} AND e.type = 'event'
         AND e.name = 'purchase' AND e.timestamp >= {since}) >= 3
"""


@dataclass(frozen=True)
class DuckDBBaseline:
    version: str
    threads: int
    load_seconds: float
    runs: tuple[float, ...]
    members: int

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)


def duckdb_baseline(data: Dataset, repeats: int = DUCKDB_REPEATS) -> DuckDBBaseline:
    """Load the same rows into an in-memory DuckDB, then time the query ``repeats`` times, its matching ids
    materialised each time with ``CREATE TEMP TABLE … AS``."""
    connection = duckdb.connect()
    try:
        started = time.perf_counter()
        for table, columns, total, variable in (
            ("people", people_columns("duckdb", data), data.people, "i"),
            ("events", event_columns("duckdb", data), data.events, "j"),
        ):
            selected = ", ".join(f"{value} AS {name}" for name, value in columns.items())
            connection.execute(
                f"CREATE TABLE {table} AS SELECT {selected} FROM range(0, {total}) AS s({variable})"
            )
        load = time.perf_counter() - started
        query = DUCKDB_QUERY.format(workspace_id=data.workspace_id, since=data.since)
        runs = []
        members = 0
        for _ in range(repeats):
            connection.execute("DROP TABLE IF EXISTS members")
            started = time.perf_counter()
            connection.execute(f"CREATE TEMP TABLE members AS {query}")
            runs.append(time.perf_counter() - started)
            row = connection.execute("SELECT count(*) FROM members").fetchone()
            members = int(row[0]) if row else 0
        threads_row = connection.execute("SELECT current_setting('threads')").fetchone()
        threads = int(threads_row[0]) if threads_row else 0
    finally:
        connection.close()
    return DuckDBBaseline(duckdb.__version__, threads, load, tuple(runs), members)


# -- the build through the server -------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    seconds: float
    members: int
    # Seconds from the generation instant to the end of the build (must stay below MARGIN_SECONDS).
    after_generation: float
    states: tuple[str, ...]


def build_segment(server: RunningServer, app_key: str, data: Dataset, name: str = "B3") -> Build:
    """Create the segment and time it until a GET shows it finished; then read its customer count."""
    headers = {"Authorization": f"Bearer {app_key}"}
    seen: list[str] = []
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
        started = time.perf_counter()
        response = client.post("/v1/segments", json={"segment": {"name": name, "conditions": CONDITIONS}})
        response.raise_for_status()
        segment = response.json()["segment"]
        seen.append(segment["state"])
        deadline = started + BUILD_TIMEOUT_SECONDS
        while segment["state"] != "finished":
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the B3 segment did not finish building in {BUILD_TIMEOUT_SECONDS:.0f} s")
            time.sleep(POLL_SECONDS)
            got = client.get(f"/v1/segments/{segment['id']}")
            got.raise_for_status()
            segment = got.json()["segment"]
            if segment["state"] != seen[-1]:
                seen.append(segment["state"])
        seconds = time.perf_counter() - started
        after_generation = time.time() - data.now
        count = client.get(f"/v1/segments/{segment['id']}/customer_count")
        count.raise_for_status()
    return Build(seconds, int(count.json()["count"]), after_generation, tuple(seen))


@dataclass(frozen=True)
class B3Result:
    backend: str
    people: int
    events: int
    generation_seconds: float
    # Each a new segment with the same conditions over the same data, one after another.
    builds: tuple[Build, ...]
    duckdb: DuckDBBaseline
    load_average: str

    @property
    def build(self) -> Build:
        """The median build (by time)."""
        ordered = sorted(self.builds, key=lambda build: build.seconds)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def ratio(self) -> float:
        return self.build.seconds / self.duckdb.seconds if self.duckdb.seconds else 0.0

    @property
    def members_match(self) -> bool:
        return all(
            build.members == self.duckdb.members and build.after_generation < MARGIN_SECONDS
            for build in self.builds
        )


def prepare_workspace(database_url: str) -> tuple[int, str]:
    """Migrate, and create the workspace; return its id and App API key."""
    upgrade(database_url)
    db = Database(database_url)
    try:
        created = db.run(lambda s: create_workspace(s, "bench-b3", now=int(time.time())))
    finally:
        db.close()
    return created.workspace_id, created.app_api_key


def run_b3(
    backend: str,
    workdir: Path,
    *,
    people: int,
    events: int,
    repeats: int = DUCKDB_REPEATS,
    progress: Progress = _print,
) -> B3Result:
    load_at_start = machine_load()
    with ExitStack() as stack:
        url = stack.enter_context(throwaway_database(backend, workdir))
        workspace_id, app_key = prepare_workspace(url)
        data = Dataset(workspace_id, people, events, now=int(time.time()))
        progress(f"generating {people:,} people and {events:,} events in {backend} …")
        generation = generate(backend, url, data, progress)
        progress(f"generated in {generation:.1f} s; building the segment …")
        server = start_server(url, backend, workdir, migrate_first=False)
        stack.callback(stop_server, server)
        builds = []
        for run in range(1, repeats + 1):
            build = build_segment(server, app_key, data, name=f"B3 #{run}")
            progress(f"built in {build.seconds:.2f} s: {build.members:,} members")
            builds.append(build)
    progress("DuckDB baseline …")
    baseline = duckdb_baseline(data, repeats)
    progress(
        f"DuckDB {baseline.seconds:.3f} s (load {baseline.load_seconds:.1f} s): {baseline.members:,} members"
    )
    return B3Result(backend, people, events, generation, tuple(builds), baseline, load_at_start)

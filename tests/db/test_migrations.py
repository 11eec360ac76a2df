"""The migrations build exactly the schema the models describe, on both stores, and the last one can be
undone and redone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from tidings.db.engine import normalize_url
from tidings.db.migrate import HEAD, alembic_config, current_revision, upgrade
from tidings.models import Base

HOT_TABLES = ("people", "events", "activities", "segment_memberships", "segment_timers")
SEGMENT_ROWS = ("segment_memberships", "segment_timers")


def _differences(url: str) -> list[object]:
    engine = create_engine(normalize_url(url))

    def on_this_database(item: object, *_: object) -> bool:
        # Objects of the models made for one database only (``info["dialect"]``, with ``ddl_if``).
        info: dict[str, object] = getattr(item, "info", {})
        return info.get("dialect", engine.dialect.name) == engine.dialect.name

    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"include_object": on_this_database})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _keys_to(url: str, referred: str, tables: tuple[str, ...] = HOT_TABLES) -> set[str]:
    """The tables among ``tables`` with a foreign key to ``referred``."""
    engine = create_engine(normalize_url(url))
    try:
        inspector = inspect(engine)
        return {
            table
            for table in tables
            if any(key["referred_table"] == referred for key in inspector.get_foreign_keys(table))
        }
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    assert _differences(database_url) == []
    assert _keys_to(database_url, "workspaces") == set()
    # The name-first events index exists on PostgreSQL only (tidings.models.event).
    engine = create_engine(normalize_url(database_url))
    try:
        names = {index["name"] for index in inspect(engine).get_indexes("events")}
        assert ("ix_events_name_person_ts" in names) == (engine.dialect.name == "postgresql")
    finally:
        engine.dispose()


def test_dropping_the_workspace_keys_is_undone_and_redone(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "0012")
    assert _keys_to(database_url, "workspaces") == set(HOT_TABLES)
    upgrade(database_url)
    assert _keys_to(database_url, "workspaces") == set()
    assert _differences(database_url) == []


def test_dropping_the_segment_rows_person_keys_is_undone_and_redone(database_url: str) -> None:
    assert _keys_to(database_url, "people", SEGMENT_ROWS) == set()
    command.downgrade(alembic_config(database_url), "0014")
    assert _keys_to(database_url, "people", SEGMENT_ROWS) == set(SEGMENT_ROWS)
    upgrade(database_url)
    assert _keys_to(database_url, "people", SEGMENT_ROWS) == set()
    assert _differences(database_url) == []


def test_head_names_the_newest_revision(database_url: str) -> None:
    # A start skips Alembic when the database is at HEAD, so HEAD must follow every new migration.
    assert ScriptDirectory.from_config(alembic_config(database_url)).get_current_head() == HEAD
    assert current_revision(database_url) == HEAD


def test_a_start_on_an_older_schema_still_migrates(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "0013")
    assert current_revision(database_url) == "0013"
    upgrade(database_url)
    assert current_revision(database_url) == HEAD
    assert _differences(database_url) == []


# What `tidings serve` loads before it listens, on a migrated SQLite database.
_START = """
import sys
from tidings.app import create_app
from tidings.cli import _runtime
from tidings.config import Settings
from tidings.worker.loop import Worker

runtime = _runtime(Settings(database_url=sys.argv[1]))
create_app(runtime)
Worker(runtime)
print(" ".join(sorted(name for name in ("alembic", "psycopg", "jsonschema") if name in sys.modules)))
"""


def test_a_start_on_an_up_to_date_sqlite_database_imports_no_more_than_it_needs(tmp_path: Path) -> None:
    # Each import is a tenth to a half of a second of a start without a bytecode cache (B9).
    url = f"sqlite:///{tmp_path / 'start.db'}"
    upgrade(url)
    started = subprocess.run(
        [sys.executable, "-c", _START, url], capture_output=True, text=True, check=True, timeout=120
    )
    assert started.stdout.split() == []
    # The same start on an empty database migrates it, with Alembic.
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    started = subprocess.run(
        [sys.executable, "-c", _START, fresh], capture_output=True, text=True, check=True, timeout=120
    )
    assert started.stdout.split() == ["alembic"]
    assert current_revision(fresh) == HEAD


def _anonymous_index_condition(url: str) -> str | None:
    engine = create_engine(normalize_url(url))
    try:
        (index,) = [i for i in inspect(engine).get_indexes("events") if i["name"] == "ix_events_anonymous"]
        options: dict[str, object] = dict(index.get("dialect_options", {}))
        where = options.get(f"{engine.dialect.name}_where")
        if where is None:
            return None
        return " ".join(str(where).lower().replace("(", "").replace(")", "").split())
    finally:
        engine.dispose()


def test_the_anonymous_events_index_holds_only_events_waiting_to_merge(database_url: str) -> None:
    waiting = "person_id is null and anonymous_id is not null"
    assert _anonymous_index_condition(database_url) == waiting
    command.downgrade(alembic_config(database_url), "0015")
    assert _anonymous_index_condition(database_url) is None
    upgrade(database_url)
    assert _anonymous_index_condition(database_url) == waiting
    assert _differences(database_url) == []
    # Merging a visitor's events on identify (tidings.people.anonymous) finds them through it.
    merge = (
        "SELECT id FROM events WHERE workspace_id = 1 AND anonymous_id = 'visitor' "
        "AND person_id IS NULL AND timestamp >= 0"
    )
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SET enable_seqscan = off"))
                plan = " ".join(row[0] for row in connection.execute(text(f"EXPLAIN {merge}")))
            else:
                plan = " ".join(row[3] for row in connection.execute(text(f"EXPLAIN QUERY PLAN {merge}")))
    finally:
        engine.dispose()
    assert "ix_events_anonymous" in plan, plan

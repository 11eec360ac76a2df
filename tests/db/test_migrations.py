"""The migrations build exactly the schema the models describe, on both stores, and the last one can be
undone and redone."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from tidings.db.engine import normalize_url
from tidings.db.migrate import alembic_config, upgrade
from tidings.models import Base

HOT_TABLES = ("people", "events", "activities", "segment_memberships", "segment_timers")


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


def _workspace_keys(url: str) -> set[str]:
    """The tables among HOT_TABLES with a foreign key to workspaces."""
    engine = create_engine(normalize_url(url))
    try:
        inspector = inspect(engine)
        return {
            table
            for table in HOT_TABLES
            if any(key["referred_table"] == "workspaces" for key in inspector.get_foreign_keys(table))
        }
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    assert _differences(database_url) == []
    assert _workspace_keys(database_url) == set()
    # The name-first events index exists on PostgreSQL only (tidings.models.event).
    engine = create_engine(normalize_url(database_url))
    try:
        names = {index["name"] for index in inspect(engine).get_indexes("events")}
        assert ("ix_events_name_person_ts" in names) == (engine.dialect.name == "postgresql")
    finally:
        engine.dispose()


def test_dropping_the_workspace_keys_is_undone_and_redone(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "0012")
    assert _workspace_keys(database_url) == set(HOT_TABLES)
    upgrade(database_url)
    assert _workspace_keys(database_url) == set()
    assert _differences(database_url) == []

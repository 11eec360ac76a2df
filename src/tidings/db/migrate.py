"""Run Alembic migrations programmatically (``tidings migrate`` and every start)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import create_engine, exc, text
from sqlalchemy.pool import NullPool

from tidings.db.engine import normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in db/migrations/versions (a test checks it against Alembic's own head). Every start
# migrates; when the database is already here, that is one SELECT and Alembic is not even imported (its
# import and the revision scripts are 0.4 s of a start without a bytecode cache).
HEAD = "0016"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", "tidings.db:migrations")
    config.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    return config


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None when it has none (new, or not Tidings' schema)."""
    engine = create_engine(normalize_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except exc.DBAPIError:
        # No alembic_version table yet.
        return None
    finally:
        engine.dispose()
    return None if revision is None else str(revision)


def upgrade(database_url: str, revision: str = "head") -> None:
    if revision == "head" and current_revision(database_url) == HEAD:
        return
    from alembic import command  # noqa: PLC0415

    command.upgrade(alembic_config(database_url), revision)

"""Run Alembic migrations programmatically (``tidings migrate`` and every start)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from tidings.db.engine import normalize_url


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "tidings.db:migrations")
    config.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)

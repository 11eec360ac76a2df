"""Alembic environment: migrations run against the URL Tidings was configured with."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import tidings.models
from tidings.db.engine import _configure_sqlite

target_metadata = tidings.models.Base.metadata


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url, poolclass=pool.NullPool)
    if url.startswith("sqlite"):
        _configure_sqlite(engine, begin="BEGIN IMMEDIATE", synchronous="FULL")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=url.startswith("sqlite"),
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()

"""events: the anonymous-id index holds only events still waiting to be merged into a person

Every event used to add an entry to ``ix_events_anonymous`` (workspace_id, anonymous_id), NULL for the
events of known people, which are nearly all of them. The index serves two queries, merging a visitor's
events when they are identified and purging those never merged, and both ask for events with an
anonymous id and no person; the index now holds exactly those (see tidings.models.event).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

NAME = "ix_events_anonymous"
COLUMNS = ["workspace_id", "anonymous_id"]
WAITING = sa.text("person_id IS NULL AND anonymous_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index(NAME, table_name="events")
    op.create_index(NAME, "events", COLUMNS, unique=False, sqlite_where=WAITING, postgresql_where=WAITING)


def downgrade() -> None:
    op.drop_index(NAME, table_name="events")
    op.create_index(NAME, "events", COLUMNS, unique=False)

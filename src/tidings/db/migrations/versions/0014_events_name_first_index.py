"""events: an index on (name, person_id, timestamp, type, workspace_id) for segment builds, PostgreSQL only

A build step counts the events of one name for a range of people in one walk of this index (see
tidings.segments.compiler and tidings.models.event). Creating it reads the whole events table once:
about 13 s for 10 million events on a 2-core machine, at the first start after the upgrade.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMNS = ["name", "person_id", "timestamp", "type", "workspace_id"]


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgresql():
        op.create_index("ix_events_name_person_ts", "events", COLUMNS, unique=False)


def downgrade() -> None:
    if _postgresql():
        op.drop_index("ix_events_name_person_ts", table_name="events")

"""events: the person/name/time index also carries type and workspace (index-only segment counts)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_person_name_ts")
        batch_op.create_index(
            "ix_events_person_name_ts",
            ["person_id", "name", "timestamp", "type", "workspace_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_person_name_ts")
        batch_op.create_index("ix_events_person_name_ts", ["person_id", "name", "timestamp"], unique=False)

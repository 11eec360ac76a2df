"""people, events, activities, segment_memberships, segment_timers: no foreign key to workspaces

Workspaces are never deleted and these rows are written only for an authenticated workspace, so the key
checked nothing; on PostgreSQL each row written paid a lookup and a lock of the workspace row (see
tidings.models.base).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLES = ("people", "events", "activities", "segment_memberships", "segment_timers")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_workspace_id_workspaces", type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(
                f"fk_{table}_workspace_id_workspaces",
                "workspaces",
                ["workspace_id"],
                ["id"],
                ondelete="CASCADE",
            )

"""people: an index on (workspace_id, id)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_people_workspace_id", "people", ["workspace_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_people_workspace_id", table_name="people")

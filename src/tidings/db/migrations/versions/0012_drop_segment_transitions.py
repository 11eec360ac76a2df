"""segment_transitions: dropped

Entries and exits are recorded as the person's activities and noted as signals in the same transaction;
the table repeated the activities (a third of the rows a new person wrote on PostgreSQL) and nothing read
it.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("segment_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_transitions_segment")
        batch_op.drop_index(batch_op.f("ix_segment_transitions_person_id"))
    op.drop_table("segment_transitions")


def downgrade() -> None:
    op.create_table(
        "segment_transitions",
        sa.Column("id", _KEY, autoincrement=True, nullable=False),
        sa.Column("workspace_id", _KEY, nullable=False),
        sa.Column("segment_id", _KEY, nullable=False),
        sa.Column("person_id", _KEY, nullable=True),
        sa.Column("entered", sa.Boolean(), nullable=False),
        sa.Column("at", _KEY, nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["people.id"],
            name=op.f("fk_segment_transitions_person_id_people"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_transitions_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_segment_transitions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_transitions")),
    )
    with op.batch_alter_table("segment_transitions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_segment_transitions_person_id"), ["person_id"], unique=False)
        batch_op.create_index(
            "ix_segment_transitions_segment", ["workspace_id", "segment_id", "id"], unique=False
        )

"""segments real time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 02:50:37.814416
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_timers",
        sa.Column("segment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("person_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("workspace_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("due_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"], ["people.id"], name=op.f("fk_segment_timers_person_id_people"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_timers_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_segment_timers_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "person_id", name=op.f("pk_segment_timers")),
    )
    with op.batch_alter_table("segment_timers", schema=None) as batch_op:
        batch_op.create_index("ix_segment_timers_due", ["due_at"], unique=False)

    op.create_table(
        "segment_transitions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("workspace_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("segment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("person_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("entered", sa.Boolean(), nullable=False),
        sa.Column("at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
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

    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "conditions",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column("progress", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "generation",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                server_default="1",
                nullable=False,
            )
        )

    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "segments_version",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                server_default="0",
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.drop_column("segments_version")

    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.drop_column("generation")
        batch_op.drop_column("progress")
        batch_op.drop_column("conditions")

    with op.batch_alter_table("segment_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_transitions_segment")
        batch_op.drop_index(batch_op.f("ix_segment_transitions_person_id"))

    op.drop_table("segment_transitions")
    with op.batch_alter_table("segment_timers", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_timers_due")

    op.drop_table("segment_timers")

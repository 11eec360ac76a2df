"""segment_memberships, segment_timers: no foreign key to people

The key's check locked the person row of every membership and timer written (on PostgreSQL a heap write
and WAL record each), about a sixth of a large segment build's time (B3 on PostgreSQL: 0.64 → 0.55 s).
Deleting a person now deletes these rows itself, kept apart from build steps by an advisory lock (see
tidings.segments.realtime).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TABLES = ("segment_memberships", "segment_timers")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_person_id_people", type_="foreignkey")


def downgrade() -> None:
    # Rows of people deleted meanwhile would fail the restored keys.
    for table in TABLES:
        op.execute(f"DELETE FROM {table} WHERE person_id NOT IN (SELECT id FROM people)")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(
                f"fk_{table}_person_id_people", "people", ["person_id"], ["id"], ondelete="CASCADE"
            )

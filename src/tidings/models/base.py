"""Declarative base and column types shared by every table.

The tables written for every person, event and segment move (people, events, activities, segment
memberships and timers) keep ``workspace_id`` without a foreign key to ``workspaces``. Workspaces are
never deleted, and those rows are only written with the workspace of an authenticated request or job, so
the key checked nothing; on PostgreSQL it cost a lookup and a lock of the one workspace row per row
written (10,000 memberships: 180 → 120 ms), which every concurrent writer of the workspace then shares.
Their rows still go with their person or segment, whose own keys cascade; except that memberships and
timers have no key to people either (a build writing them paid the same lock per person row): deleting a
person deletes them explicitly, under the lock that keeps segment builds apart from deletions (see
tidings.segments.realtime.lock_for_build).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit keys.
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
JsonDoc: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Unix times and counters are 64-bit everywhere (no year-2038 overflow on PostgreSQL).
    type_annotation_map = {int: BigId}

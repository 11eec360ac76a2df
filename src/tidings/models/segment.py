"""Segments and their membership."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc


class Segment(Base):
    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text())
    description: Mapped[str] = mapped_column(Text(), default="")
    # manual or dynamic
    type: Mapped[str] = mapped_column(Text(), default="manual")
    tags: Mapped[list[str] | None] = mapped_column(JsonDoc, default=None)
    # Customer.io's states: build_queued → build → finished (dynamic segments); manual ones stay finished.
    state: Mapped[str] = mapped_column(Text(), default="finished")
    # The condition document of a dynamic segment, as sent (see tidings.segments.conditions).
    conditions: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)
    # Percent of the current build done; NULL when no build is running.
    progress: Mapped[int | None] = mapped_column(default=None)
    # Bumped by every change of the conditions; a build works for one generation and stops when it is stale.
    generation: Mapped[int] = mapped_column(default=1, server_default="1")
    created_at: Mapped[int]
    updated_at: Mapped[int]


class SegmentMembership(Base):
    __tablename__ = "segment_memberships"
    __table_args__ = (Index("ix_segment_memberships_person", "person_id"),)

    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    # No foreign key to people, as for workspace_id (see tidings.models.base).
    person_id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int]
    added_at: Mapped[int]
    data: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)


class SegmentTimer(Base):
    """When a person's result for a time-dependent segment can next flip with no new data (a window edge).
    The worker re-evaluates exactly these pairs when they fall due, instead of rescanning people."""

    __tablename__ = "segment_timers"
    __table_args__ = (Index("ix_segment_timers_due", "due_at"),)

    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    # No foreign key to people, as for workspace_id (see tidings.models.base).
    person_id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int]
    due_at: Mapped[int]

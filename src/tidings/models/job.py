"""Durable work: a row per thing to do later or elsewhere, claimed by workers with a lease."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_due", "status", "run_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # NULL for jobs that span workspaces (maintenance).
    workspace_id: Mapped[int | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), default=None
    )
    kind: Mapped[str] = mapped_column(Text())
    # A job with a key is enqueued at most once while pending (periodic jobs use it).
    unique_key: Mapped[str | None] = mapped_column(Text(), unique=True, default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    status: Mapped[str] = mapped_column(Text(), default="pending")
    run_at: Mapped[float]
    attempts: Mapped[int] = mapped_column(default=0)
    leased_until: Mapped[float | None] = mapped_column(default=None)
    leased_by: Mapped[str | None] = mapped_column(Text(), default=None)
    last_error: Mapped[str | None] = mapped_column(Text(), default=None)
    created_at: Mapped[float]

"""Events (person, anonymous, invite, page, screen, form) and Pipelines message dedup."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc

_WAITING = "person_id IS NULL AND anonymous_id IS NOT NULL"


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "event_id"),
        # Segment conditions count a person's events by name and time; type and workspace ride along so
        # those counts are answered from the index alone.
        Index("ix_events_person_name_ts", "person_id", "name", "timestamp", "type", "workspace_id"),
        # The same by name first, on PostgreSQL only: a segment build there counts a range of people's
        # events of one name in one walk of it (tidings.segments.compiler) instead of a probe a person
        # (B3: 1.5 → 0.8 s). On SQLite the probes are fast enough, and keeping a fifth index cost a fifth
        # of batch ingestion (B2, 15,300 → 11,800 events/s).
        Index(
            "ix_events_name_person_ts",
            "name",
            "person_id",
            "timestamp",
            "type",
            "workspace_id",
            info={"dialect": "postgresql"},
        ).ddl_if(dialect="postgresql"),
        # Events waiting to be merged into a person when their visitor is identified (or purged): the
        # two queries that use it ask for exactly these, and the events of known people, nearly all
        # of them, add no entry to it.
        Index(
            "ix_events_anonymous",
            "workspace_id",
            "anonymous_id",
            sqlite_where=text(_WAITING),
            postgresql_where=text(_WAITING),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int]  # no foreign key (see tidings.models.base)
    # The client's ULID when it sent one (dedup key), else one Tidings made.
    event_id: Mapped[str] = mapped_column(Text())
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), default=None)
    anonymous_id: Mapped[str | None] = mapped_column(Text(), default=None)
    # event, page, screen, form — or invite for an anonymous event with no anonymous id.
    type: Mapped[str] = mapped_column(Text(), default="event")
    name: Mapped[str] = mapped_column(Text())
    data: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    timestamp: Mapped[int]
    received_at: Mapped[int]
    # Only events at most 72 hours old when they reach a person may trigger campaigns.
    can_trigger: Mapped[bool] = mapped_column(default=True)
    source: Mapped[str] = mapped_column(Text(), default="track")


class PipelinesMessage(Base):
    """A Pipelines ``messageId`` already processed; a repeat is acknowledged and dropped."""

    __tablename__ = "pipelines_messages"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    message_id: Mapped[str] = mapped_column(Text(), primary_key=True)
    received_at: Mapped[int] = mapped_column(index=True)


class Form(Base):
    """A form connection; created by its first submission."""

    __tablename__ = "forms"
    __table_args__ = (UniqueConstraint("workspace_id", "form_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    form_id: Mapped[str] = mapped_column(Text())
    name: Mapped[str] = mapped_column(Text())
    submissions: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[int]

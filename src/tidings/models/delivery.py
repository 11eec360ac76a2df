"""Delivery metrics reported from outside (Track ``/metrics``, legacy push events, Pipelines
``Report Delivery Event``, ``/unsubscribe/{delivery_id}``). They are kept as reports keyed by delivery id;
the messaging layer attaches them to its deliveries."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId


class DeliveryMetricReport(Base):
    __tablename__ = "delivery_metric_reports"
    __table_args__ = (Index("ix_delivery_metric_reports_delivery", "workspace_id", "delivery_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    delivery_id: Mapped[str] = mapped_column(Text())
    metric: Mapped[str] = mapped_column(Text())
    timestamp: Mapped[int]
    recipient: Mapped[str | None] = mapped_column(Text(), default=None)
    reason: Mapped[str | None] = mapped_column(Text(), default=None)
    href: Mapped[str | None] = mapped_column(Text(), default=None)
    device_token: Mapped[str | None] = mapped_column(Text(), default=None)
    # track_metrics, push_events, pipelines, unsubscribe
    source: Mapped[str] = mapped_column(Text())
    received_at: Mapped[int]


class Delivery(Base):
    """One message to one person. The messaging layer fills in content and lifecycle; this core is what
    the data-in APIs need to attribute unsubscribes and metrics to a person."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_person", "workspace_id", "person_id"),)

    id: Mapped[str] = mapped_column(Text(), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"), default=None)
    channel: Mapped[str] = mapped_column(Text())
    recipient: Mapped[str | None] = mapped_column(Text(), default=None)
    created_at: Mapped[int]
    unsubscribed_at: Mapped[int | None] = mapped_column(default=None)

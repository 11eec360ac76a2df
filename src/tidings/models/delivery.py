"""Deliveries (the outbox: one message to one person) and the metric reports about them.

A delivery row is written in the same transaction as whatever caused it (a transactional send, later a
journey step); sending workers claim due rows with a lease. Each lifecycle metric has its own timestamp
column, so the message APIs and segments filter on them with plain indexes. Every metric is also logged
as a ``DeliveryMetricReport`` (whether Tidings observed it or a client reported it through Track
``/metrics``, push events, Pipelines or the unsubscribe endpoint); segments on message activity read that log.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text, false, true
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc


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
    # track_metrics, push_events, pipelines, unsubscribe, tracking (pixel/links), tidings (the sender)
    source: Mapped[str] = mapped_column(Text())
    received_at: Mapped[int]


class Delivery(Base):
    """One message to one person, through one channel.

    ``state`` is where the delivery is in its lifecycle: drafted (held by ``queue_draft``), queued (waiting
    for ``due_at``), sending (claimed by a worker until ``leased_until``), sent, failed, dropped,
    undeliverable, and the later states a metric moves it to (delivered, opened, clicked, converted,
    bounced, spammed, unsubscribed). The ``*_at`` columns keep when each metric first happened.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_person", "workspace_id", "person_id"),
        Index("ix_deliveries_due", "state", "due_at"),
        Index("ix_deliveries_listing", "workspace_id", "created_at", "id"),
        Index("ix_deliveries_template", "workspace_id", "template_id", "created_at"),
        # Campaign, broadcast and action metrics and message lists.
        Index("ix_deliveries_campaign", "workspace_id", "campaign_id", "created_at"),
        Index("ix_deliveries_broadcast", "workspace_id", "broadcast_id", "created_at"),
        Index("ix_deliveries_action", "action_id"),
    )

    id: Mapped[str] = mapped_column(Text(), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"), default=None)
    channel: Mapped[str] = mapped_column(Text())
    recipient: Mapped[str | None] = mapped_column(Text(), default=None)
    created_at: Mapped[int]
    # Origin: a transactional message template (and later campaigns, broadcasts, newsletters).
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("message_templates.id", ondelete="SET NULL"), default=None
    )
    campaign_id: Mapped[int | None] = mapped_column(default=None)
    action_id: Mapped[int | None] = mapped_column(default=None)
    broadcast_id: Mapped[int | None] = mapped_column(default=None)
    newsletter_id: Mapped[int | None] = mapped_column(default=None)
    trigger_event_id: Mapped[str | None] = mapped_column(Text(), default=None)
    # What to send: the request (message data, overrides) until rendered, then the rendered message.
    # Both are dropped once sent when retention is disabled.
    request: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)
    rendered: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)
    subject: Mapped[str | None] = mapped_column(Text(), default=None)
    retain_content: Mapped[bool] = mapped_column(default=True, server_default=true())
    forgotten: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Lifecycle and the sending lease.
    # Rows written without a state (by SQL, outside the sender) count as sent.
    state: Mapped[str] = mapped_column(Text(), default="queued", server_default="sent")
    due_at: Mapped[int | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    leased_until: Mapped[float | None] = mapped_column(default=None)
    leased_by: Mapped[str | None] = mapped_column(Text(), default=None)
    provider_message_id: Mapped[str | None] = mapped_column(Text(), default=None)
    failure_message: Mapped[str | None] = mapped_column(Text(), default=None)
    drafted_at: Mapped[int | None] = mapped_column(default=None)
    attempted_at: Mapped[int | None] = mapped_column(default=None)
    sent_at: Mapped[int | None] = mapped_column(default=None)
    delivered_at: Mapped[int | None] = mapped_column(default=None)
    opened_at: Mapped[int | None] = mapped_column(default=None)
    clicked_at: Mapped[int | None] = mapped_column(default=None)
    converted_at: Mapped[int | None] = mapped_column(default=None)
    bounced_at: Mapped[int | None] = mapped_column(default=None)
    dropped_at: Mapped[int | None] = mapped_column(default=None)
    failed_at: Mapped[int | None] = mapped_column(default=None)
    spammed_at: Mapped[int | None] = mapped_column(default=None)
    undeliverable_at: Mapped[int | None] = mapped_column(default=None)
    unsubscribed_at: Mapped[int | None] = mapped_column(default=None)

"""Reporting webhooks: the endpoints a workspace configured, and the outbox of posts to them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc


class ReportingWebhook(Base):
    __tablename__ = "reporting_webhooks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text())
    endpoint: Mapped[str] = mapped_column(Text())
    # Event keys, ``<object_type>_<metric>`` (email_sent, customer_unsubscribed, ...).
    events: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    disabled: Mapped[bool] = mapped_column(default=False)
    full_resolution: Mapped[bool] = mapped_column(default=False)
    with_content: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[int]
    updated_at: Mapped[int]
    # Health, for the API: the last failure and since when posts have been failing.
    failing_since: Mapped[int | None] = mapped_column(default=None)
    last_status: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text(), default=None)
    last_success_at: Mapped[int | None] = mapped_column(default=None)


class WebhookPost(Base):
    """One event to post to one endpoint. Rows of an endpoint are posted in id order; while the oldest
    waits for a retry, the later ones wait behind it (Customer.io's backlog)."""

    __tablename__ = "webhook_posts"
    __table_args__ = (Index("ix_webhook_posts_pending", "webhook_id", "state", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    webhook_id: Mapped[int] = mapped_column(ForeignKey("reporting_webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(Text())
    # The envelope, serialised once: what is signed is exactly what is sent on every attempt.
    body: Mapped[str] = mapped_column(Text())
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    # pending, sent, abandoned (gave up after the retry window)
    state: Mapped[str] = mapped_column(Text(), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[float]
    leased_until: Mapped[float | None] = mapped_column(default=None)
    leased_by: Mapped[str | None] = mapped_column(Text(), default=None)
    last_error: Mapped[str | None] = mapped_column(Text(), default=None)
    created_at: Mapped[int]
    sent_at: Mapped[int | None] = mapped_column(default=None)

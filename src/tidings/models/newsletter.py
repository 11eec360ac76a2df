"""Newsletters: a message sent once to everyone a recipients filter matches, now or at a scheduled time.

A newsletter does not run journeys. Sending it expands its recipients filter a chunk at a time (a durable
job, see :mod:`tidings.newsletters.service`) into one ``Delivery`` per person, each with the time it may
go (``due_at``), worked out from the person's place in the send order (rate limit, daily ramp) or their
time zone; the sending worker does the rest. ``cursor`` (the last person key expanded) and
``recipients_count`` (deliveries written) move in the transaction that writes each chunk, so a crash
resumes where the last committed chunk ended and nobody is messaged twice.

The content is a ``MessageTemplate`` of kind ``newsletter`` (``template_id``), with its translations.
An A/B test adds ``NewsletterTestGroup`` rows, one per variant, each with a content of its own; the
newsletter's own content is test group A.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc
from tidings.models.delivery import Delivery


class Newsletter(Base):
    __tablename__ = "newsletters"
    __table_args__ = (Index("ix_newsletters_workspace", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text())
    # The channel: email (the only one Tidings sends newsletters through).
    type: Mapped[str] = mapped_column(Text(), default="email")
    # Who gets it: a condition document (Customer.io's filter grammar).
    recipients: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    # draft, scheduled, sending, sent or canceled.
    state: Mapped[str] = mapped_column(Text(), default="draft")
    scheduled_at: Mapped[int | None] = mapped_column(default=None)
    # Send at scheduled_at's UTC wall-clock time in each person's ``timezone`` attribute (else UTC).
    send_in_recipient_timezone: Mapped[bool] = mapped_column(default=False, server_default=false())
    # At most ``rate_limit_email_rate`` messages per ``rate_limit_time_period`` seconds (60, 3600, 86400),
    # spread evenly within each period when ``rate_limit_spread``.
    rate_limit_email_rate: Mapped[int | None] = mapped_column(default=None)
    rate_limit_time_period: Mapped[int | None] = mapped_column(default=None)
    rate_limit_spread: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Domain warming (Tidings): {"start": messages on the first day, "growth": factor per day}.
    ramp: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)
    subscription_topic_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscription_topics.id", ondelete="SET NULL"), default=None
    )
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("message_templates.id", ondelete="SET NULL"), default=None
    )
    tags: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    # Expansion: when it started (the base of every due time), how far it got, how many it wrote.
    send_started_at: Mapped[int | None] = mapped_column(default=None)
    cursor: Mapped[int] = mapped_column(default=0, server_default="0")
    recipients_count: Mapped[int] = mapped_column(default=0, server_default="0")
    # When every delivery had been written.
    sent_at: Mapped[int | None] = mapped_column(default=None)
    # Rate limit and ramp count from this many deliveries written before the current send started (a
    # test's winner is paced as a send of its own).
    pace_base: Mapped[int] = mapped_column(default=0, server_default="0")
    # A/B test "send the winner" (Tidings): {"test_percentage", "metric", "wait"}; None splits the whole
    # audience between the test groups by their percentages.
    winner_settings: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)
    # Where a winner test is: testing (expanding the test share), waiting (for the winner), winner
    # (expanding the rest with the winner's content). ``test_held`` counts the people held back for the
    # winner so far; ``winner_at`` is when the winner is (or was) picked.
    test_phase: Mapped[str | None] = mapped_column(Text(), default=None)
    test_held: Mapped[int] = mapped_column(default=0, server_default="0")
    winner_at: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[int]
    updated_at: Mapped[int]


class NewsletterTestGroup(Base):
    """One variant of a newsletter's A/B test: its own content, sent to ``percentage`` percent of the
    recipients (of the test share, when the winner is sent to the rest)."""

    __tablename__ = "newsletter_test_groups"
    __table_args__ = (UniqueConstraint("newsletter_id", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    # 0 for A (the newsletter's own content), 1 for B, …
    position: Mapped[int]
    label: Mapped[str] = mapped_column(Text(), default="")
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("message_templates.id", ondelete="SET NULL"), default=None
    )
    percentage: Mapped[int]
    # Deliveries written with this group's content (moves with the newsletter's cursor, chunk by chunk).
    recipients_count: Mapped[int] = mapped_column(default=0, server_default="0")
    winner: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[int]
    updated_at: Mapped[int]


# A newsletter's metrics and message lists read its deliveries by newsletter id.
Index("ix_deliveries_newsletter", Delivery.workspace_id, Delivery.newsletter_id, Delivery.created_at)

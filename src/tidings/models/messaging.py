"""What messages are made of: templates (transactional messages), layouts, snippets and subscription
topics."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc


class Layout(Base):
    """An email layout: HTML with ``{{ content }}`` where the message body goes."""

    __tablename__ = "layouts"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text())
    body: Mapped[str] = mapped_column(Text())
    created_at: Mapped[int]
    updated_at: Mapped[int]


class MessageTemplate(Base):
    """A transactional message: one channel's content plus the sending options Customer.io keeps on it.

    ``content`` holds the channel's Liquid fields (email: from, reply_to, subject, preheader, body,
    body_plain, headers; sms: body; push: title, message, image_url, link, sound, custom_data; webhook:
    method, url, headers, body). ``languages`` maps a language code to a content override."""

    __tablename__ = "message_templates"
    __table_args__ = (Index("uq_message_templates_trigger", "workspace_id", "trigger_name", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text())
    description: Mapped[str] = mapped_column(Text(), default="")
    trigger_name: Mapped[str | None] = mapped_column(Text(), default=None)
    # transactional, or campaign (a campaign action's content: not listed with transactional messages).
    kind: Mapped[str] = mapped_column(Text(), default="transactional", server_default="transactional")
    channel: Mapped[str] = mapped_column(Text())
    content: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    languages: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    layout_id: Mapped[int | None] = mapped_column(ForeignKey("layouts.id", ondelete="SET NULL"), default=None)
    topic_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscription_topics.id", ondelete="SET NULL"), default=None
    )
    link_tracking: Mapped[bool] = mapped_column(default=True)
    open_tracking: Mapped[bool] = mapped_column(default=True)
    send_to_unsubscribed: Mapped[bool] = mapped_column(default=True)
    hide_message_body: Mapped[bool] = mapped_column(default=False)
    queue_drafts: Mapped[bool] = mapped_column(default=False)
    # Created on first use by a send naming an unknown trigger with auto_create.
    auto_created: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[int]
    updated_at: Mapped[int]


class Snippet(Base):
    """A reusable piece of content, ``{{ snippets.<name> }}`` in Liquid."""

    __tablename__ = "snippets"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(Text(), primary_key=True)
    value: Mapped[str] = mapped_column(Text())
    updated_at: Mapped[int]


class SubscriptionTopic(Base):
    """A subscription topic. A person's choices live, as in Customer.io, in the attribute
    ``cio_subscription_preferences`` (``{"topics": {"topic_<id>": true|false}}``)."""

    __tablename__ = "subscription_topics"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text())
    description: Mapped[str] = mapped_column(Text(), default="")
    # opt_out: subscribed unless they said no; opt_in: unsubscribed unless they said yes.
    default_subscribed: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[int]


class AddressSuppression(Base):
    """An email address Tidings will not send to: it bounced hard or its owner marked a message as spam
    (Customer.io's ESP suppression list). Unlike a suppressed person, the profile stays as it is."""

    __tablename__ = "address_suppressions"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    # Lower-cased address.
    address: Mapped[str] = mapped_column(Text(), primary_key=True)
    # bounces, spam_reports, blocks or invalid_emails (Customer.io's suppression types).
    type: Mapped[str] = mapped_column(Text())
    reason: Mapped[str | None] = mapped_column(Text(), default=None)
    delivery_id: Mapped[str | None] = mapped_column(Text(), default=None)
    created_at: Mapped[int]

"""Campaigns (and API-triggered broadcasts), their versions and actions, and journeys through them.

A campaign's workflow is a versioned document (see tidings.campaigns.definition). Every save of an
active or draft campaign's workflow writes a new ``CampaignVersion``; a journey keeps the version it
entered with, so an edit never moves anyone onto blocks they did not reach through. Each block of every
version has a stable ``CampaignAction`` (Customer.io's numeric action id), matched across versions by the
block's id; message actions own a ``MessageTemplate`` (kind ``campaign``) shared by all versions, so a
content edit reaches every message not yet rendered.

A ``Journey`` is one person's path through one campaign: a durable state machine whose timer is
``due_at``. Workers claim due journeys (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and run each step's
effects in the same transaction that moves the journey on, so a step happens exactly once. Every step is
logged as a ``JourneyStep``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_workspace", "workspace_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # campaign, or broadcast (API-triggered: POST /v1/campaigns/{id}/triggers).
    kind: Mapped[str] = mapped_column(Text(), default="campaign")
    name: Mapped[str] = mapped_column(Text())
    description: Mapped[str] = mapped_column(Text(), default="")
    tags: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    # The trigger's type (event, segment, attribute, date, object, relationship, broadcast, scheduled).
    trigger_type: Mapped[str] = mapped_column(Text())
    # draft, active, paused or archived.
    state: Mapped[str] = mapped_column(Text(), default="draft")
    # The version new journeys enter with.
    version: Mapped[int] = mapped_column(default=1)
    first_started: Mapped[int | None] = mapped_column(default=None)
    # Scheduled campaigns: when the next run is due (NULL when none is).
    next_run_at: Mapped[int | None] = mapped_column(default=None, index=True)
    created_at: Mapped[int]
    updated_at: Mapped[int]


class CampaignVersion(Base):
    __tablename__ = "campaign_versions"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[int]


class CampaignAction(Base):
    """A block of a campaign's workflow, under the id Customer.io's action APIs use."""

    __tablename__ = "campaign_actions"
    __table_args__ = (UniqueConstraint("campaign_id", "block"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    # The block's id in the definition.
    block: Mapped[str] = mapped_column(Text())
    # Customer.io's action type: email, twilio, push, webhook, delay, wait_until, branch, …
    type: Mapped[str] = mapped_column(Text())
    name: Mapped[str] = mapped_column(Text(), default="")
    # Message actions: the content (a MessageTemplate of kind campaign, or a transactional one named by
    # the block's ``template``).
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("message_templates.id", ondelete="SET NULL"), default=None
    )
    # What the block has learned while running (an A/B test's winner).
    state: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    # Set when the current version no longer has the block (its metrics stay readable).
    removed_at: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[int]
    updated_at: Mapped[int]


class CampaignEntry(Base):
    """How often a person has entered a campaign and how many of their journeys are running: the
    re-entry rules read and update this row under a lock, so concurrent triggers cannot both enter."""

    __tablename__ = "campaign_entries"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    entries: Mapped[int] = mapped_column(default=0)
    running: Mapped[int] = mapped_column(default=0)
    last_entered_at: Mapped[int | None] = mapped_column(default=None)


class Journey(Base):
    """One person's path through one campaign.

    ``state``: pending (triggered; entry rules not yet checked), active, waiting, calling (an outside
    call in flight under ``leased_until``), completed, exited, failed, or rejected (did not pass the entry
    rules). ``block`` is the block to run next; ``resume_at`` is when a waiting block may go on by time
    alone; ``due_at`` is when a worker should look at the journey next (NULL: nothing to do until a
    signal, such as an awaited event, makes it due).
    """

    __tablename__ = "journeys"
    __table_args__ = (
        Index("ix_journeys_due", "due_at"),
        Index("ix_journeys_person", "person_id", "wake_on"),
        Index("ix_journeys_campaign", "campaign_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    version: Mapped[int]
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(Text(), default="pending")
    block: Mapped[str | None] = mapped_column(Text(), default=None)
    due_at: Mapped[int | None] = mapped_column(default=None)
    resume_at: Mapped[int | None] = mapped_column(default=None)
    # What the current block is waiting for (its own notes: until when, the event and keys to match).
    wait: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)
    # What wakes a waiting journey early: an event name, or "change" (any change to the person, for
    # blocks waiting on a condition). Ingestion looks journeys up by (person, wake_on).
    wake_on: Mapped[str | None] = mapped_column(Text(), default=None)
    # An awaited event that arrived, handed to the waiting block.
    woken_by: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)
    # What triggered the journey ({"event": {...}} or {"data": {...}}), read by Liquid as trigger/event.
    trigger: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    # Journey attributes ({{journey.*}}), set by blocks.
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    steps: Mapped[int] = mapped_column(default=0)
    leased_until: Mapped[float | None] = mapped_column(default=None)
    leased_by: Mapped[str | None] = mapped_column(Text(), default=None)
    created_at: Mapped[int]
    entered_at: Mapped[int | None] = mapped_column(default=None)
    finished_at: Mapped[int | None] = mapped_column(default=None)
    exit_reason: Mapped[str | None] = mapped_column(Text(), default=None)
    converted_at: Mapped[int | None] = mapped_column(default=None)
    # The last message the journey sent and when: conversions are attributed to it.
    last_delivery_id: Mapped[str | None] = mapped_column(Text(), default=None)
    last_sent_at: Mapped[int | None] = mapped_column(default=None)
    # For broadcasts: the trigger that started the journey.
    broadcast_trigger_id: Mapped[int | None] = mapped_column(default=None)


class JourneyStep(Base):
    """The journey log: which block ran, when, and what came of it."""

    __tablename__ = "journey_steps"
    __table_args__ = (
        Index("ix_journey_steps_journey", "journey_id", "seq"),
        Index("ix_journey_steps_action", "campaign_id", "action_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    person_id: Mapped[int | None] = mapped_column(default=None)
    seq: Mapped[int]
    block: Mapped[str] = mapped_column(Text())
    action_id: Mapped[int | None] = mapped_column(default=None)
    type: Mapped[str] = mapped_column(Text())
    at: Mapped[int]
    outcome: Mapped[str] = mapped_column(Text())
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)
    delivery_id: Mapped[str | None] = mapped_column(Text(), default=None)


class BroadcastTrigger(Base):
    """One ``POST /v1/campaigns/{id}/triggers``: its audience is resolved into journeys by a job."""

    __tablename__ = "broadcast_triggers"
    __table_args__ = (Index("ix_broadcast_triggers_campaign", "campaign_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    request: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    # queued, processing, processed or failed.
    state: Mapped[str] = mapped_column(Text(), default="queued")
    recipients: Mapped[int] = mapped_column(default=0)
    errors: Mapped[int] = mapped_column(default=0)
    # How far the audience has been resolved (a person key or a line number), so a crash resumes.
    cursor: Mapped[int] = mapped_column(default=0)
    failure: Mapped[str | None] = mapped_column(Text(), default=None)
    created_at: Mapped[int]
    processed_at: Mapped[int | None] = mapped_column(default=None)


class BroadcastTriggerError(Base):
    """A recipient of a broadcast trigger who could not be messaged (unknown, invalid)."""

    __tablename__ = "broadcast_trigger_errors"
    __table_args__ = (Index("ix_broadcast_trigger_errors_trigger", "trigger_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    trigger_id: Mapped[int] = mapped_column(ForeignKey("broadcast_triggers.id", ondelete="CASCADE"))
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text())
    recipient: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, default=None)
    created_at: Mapped[int]


class CampaignTimer(Base):
    """A date-attribute trigger's next firing for one person (birthday, renewal)."""

    __tablename__ = "campaign_timers"
    __table_args__ = (Index("ix_campaign_timers_due", "due_at"),)

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    due_at: Mapped[int]

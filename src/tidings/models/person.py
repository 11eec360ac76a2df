"""People and everything that hangs off one person."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import ForeignKey, Index, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc


class Person(Base):
    __tablename__ = "people"
    __table_args__ = (
        UniqueConstraint("workspace_id", "customer_id"),
        UniqueConstraint("workspace_id", "email_key"),
        UniqueConstraint("workspace_id", "cio_id"),
        # A workspace's lowest and highest keys in two index probes: where a segment build starts and
        # ends, and the order of customer listings.
        Index("ix_people_workspace_id", "workspace_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int]  # no foreign key (see tidings.models.base)
    cio_id: Mapped[str] = mapped_column(Text())
    # The customer's own id (Customer.io's ``id``); NULL for people known only by email.
    customer_id: Mapped[str | None] = mapped_column(Text(), default=None)
    email: Mapped[str | None] = mapped_column(Text(), default=None)
    # Lower-cased email: emails identify people case-insensitively.
    email_key: Mapped[str | None] = mapped_column(Text(), default=None)
    created_at: Mapped[int]
    updated_at: Mapped[int]
    unsubscribed: Mapped[bool] = mapped_column(default=False)
    # Custom attributes as sent (JSON values), and the unix time each one was last set.
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    attribute_timestamps: Mapped[dict[str, int]] = mapped_column(JsonDoc, default=dict)
    subscription_preferences: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)


@dataclass(slots=True)
class PersonRow:
    """A person's columns as plain fields, for the code that writes people straight to the driver (the
    set paths of tidings.people.service): building ORM instances for them (instance state, attribute
    events, expunging) cost about a quarter of B1's writer, more than the statements that store them."""

    workspace_id: int
    cio_id: str
    customer_id: str | None
    email: str | None
    email_key: str | None
    created_at: int
    updated_at: int
    unsubscribed: bool
    attributes: dict[str, Any]
    attribute_timestamps: dict[str, int]
    subscription_preferences: dict[str, Any]
    # Known once the row is stored; 0 until then (keys start at 1).
    id: int = 0

    def to_person(self) -> Person:
        """The same person as an ORM instance (not attached to any session); one not stored yet gets
        its key when the session inserts it."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        if not self.id:
            del values["id"]
        return Person(**values)


if {field.name for field in fields(PersonRow)} != {column.key for column in Person.__table__.columns}:
    # A column added to Person and not here would be silently left out of the rows written.
    raise RuntimeError("PersonRow's fields must be exactly the columns of people")


class AnonymousProfile(Base):
    """An anonymous id: its traits until it is identified, then the person it was linked to."""

    __tablename__ = "anonymous_profiles"
    __table_args__ = (UniqueConstraint("workspace_id", "anonymous_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    anonymous_id: Mapped[str] = mapped_column(Text())
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("people.id", ondelete="CASCADE"), default=None, index=True
    )
    traits: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    # Relationships to objects declared before identification: [{"object_pk", "attributes"}].
    pending_relationships: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, default=list)
    created_at: Mapped[int]
    linked_at: Mapped[int | None] = mapped_column(default=None)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("workspace_id", "token"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    token: Mapped[str] = mapped_column(Text())
    platform: Mapped[str] = mapped_column(Text())
    last_used: Mapped[int]
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    created_at: Mapped[int]


class Suppression(Base):
    """A suppressed identifier. The identifiers of one person suppressed together share ``group_key``,
    so unsuppressing any of them releases all."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("workspace_id", "identifier_type", "value"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    identifier_type: Mapped[str] = mapped_column(Text())
    value: Mapped[str] = mapped_column(Text())
    group_key: Mapped[str] = mapped_column(Text(), index=True)
    created_at: Mapped[int]


class Activity(Base):
    """The per-person activity log read by ``GET /v1/customers/{id}/activities``."""

    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_person", "workspace_id", "person_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int]  # no foreign key (see tidings.models.base)
    # NULL once the person is gone (kept for failures about people that never existed).
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), default=None)
    activity_id: Mapped[str] = mapped_column(Text())
    type: Mapped[str] = mapped_column(Text())
    name: Mapped[str | None] = mapped_column(Text(), default=None)
    timestamp: Mapped[int]
    data: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    delivery_id: Mapped[str | None] = mapped_column(Text(), default=None)
    delivery_type: Mapped[str | None] = mapped_column(Text(), default=None)

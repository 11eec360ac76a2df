"""Objects (companies, accounts, …), their types, and relationships to people."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc


class ObjectType(Base):
    __tablename__ = "object_types"
    __table_args__ = (UniqueConstraint("workspace_id", "type_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # Customer.io's object_type_id: a small integer sent as a string ("1").
    type_id: Mapped[str] = mapped_column(Text())
    name: Mapped[str] = mapped_column(Text())
    singular: Mapped[str] = mapped_column(Text())
    created_at: Mapped[int]


class Object(Base):
    __tablename__ = "objects"
    __table_args__ = (
        UniqueConstraint("workspace_id", "type_id", "object_id"),
        UniqueConstraint("workspace_id", "cio_object_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    type_id: Mapped[str] = mapped_column(Text())
    object_id: Mapped[str] = mapped_column(Text())
    cio_object_id: Mapped[str] = mapped_column(Text())
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    attribute_timestamps: Mapped[dict[str, int]] = mapped_column(JsonDoc, default=dict)
    created_at: Mapped[int]
    updated_at: Mapped[int]


class Relationship(Base):
    __tablename__ = "relationships"
    __table_args__ = (UniqueConstraint("person_id", "object_pk"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    object_pk: Mapped[int] = mapped_column(ForeignKey("objects.id", ondelete="CASCADE"), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    created_at: Mapped[int]
    updated_at: Mapped[int]

"""The assistant's conversations: what was asked, the tool calls made and their results, and the answers,
kept so a later instruction continues where the last one ended."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, JsonDoc


class AssistantConversation(Base):
    """One conversation with the assistant, private to the App API key that started it."""

    __tablename__ = "assistant_conversations"
    __table_args__ = (Index("ix_assistant_conversations_owner", "workspace_id", "credential_id", "id"),)

    # A ULID: unguessable, and ordered by creation time, so listings page by id.
    id: Mapped[str] = mapped_column(Text(), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # The key that started it, the only one that may read or continue it (keys are revoked, never deleted).
    credential_id: Mapped[int] = mapped_column(ForeignKey("credentials.id", ondelete="CASCADE"))
    # The first instruction, shortened.
    title: Mapped[str] = mapped_column(Text())
    # The provider-neutral conversation (tidings.ai.providers.Message), with tool calls and results as
    # plain objects; see tidings.agents.conversations.
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, default=list)
    # The catalogue model of the latest request, used again when a continuation names none.
    model: Mapped[str] = mapped_column(Text())
    created_at: Mapped[int]
    updated_at: Mapped[int]

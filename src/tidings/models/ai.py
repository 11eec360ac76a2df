"""AI settings and credits per account, the audit log, and the workspace data index.

Credits are kept in thousandths (integers), so a ledger of fractional model costs sums exactly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc


class AccountAi(Base):
    """An account's AI settings (ai-features §1) and its credit balance, one row per account."""

    __tablename__ = "account_ai"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    credit_millis: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[int]


class CreditEntry(Base):
    """One movement of an account's AI credits: a grant, or what one model call spent."""

    __tablename__ = "ai_credit_entries"
    __table_args__ = (Index("ix_ai_credit_entries_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    workspace_id: Mapped[int | None] = mapped_column(default=None)
    at: Mapped[int]
    # grant | run | preview | generate_fields
    kind: Mapped[str] = mapped_column(Text())
    delta_millis: Mapped[int]
    balance_millis: Mapped[int]
    model: Mapped[str | None] = mapped_column(Text(), default=None)
    campaign_id: Mapped[int | None] = mapped_column(default=None)
    journey_id: Mapped[int | None] = mapped_column(default=None)
    actor: Mapped[str | None] = mapped_column(Text(), default=None)
    note: Mapped[str | None] = mapped_column(Text(), default=None)


class AuditEntry(Base):
    """Who changed what, when: old and new values (AI settings now; agent tool calls later)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    workspace_id: Mapped[int | None] = mapped_column(default=None)
    at: Mapped[int]
    # "cli", or "key:<id>" for an API key.
    actor: Mapped[str] = mapped_column(Text())
    action: Mapped[str] = mapped_column(Text())
    target: Mapped[str] = mapped_column(Text(), default="")
    old: Mapped[Any] = mapped_column(JsonDoc, nullable=True, default=None)
    new: Mapped[Any] = mapped_column(JsonDoc, nullable=True, default=None)


class DataIndexEntry(Base):
    """A described attribute of a workspace's data index (today: customer attributes LLM actions set)."""

    __tablename__ = "data_index"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(Text(), primary_key=True)
    name: Mapped[str] = mapped_column(Text(), primary_key=True)
    type: Mapped[str] = mapped_column(Text())
    description: Mapped[str] = mapped_column(Text(), default="")
    # Where the description comes from, e.g. {"campaign_id": 3, "block": "classify"}.
    source: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    updated_at: Mapped[int]

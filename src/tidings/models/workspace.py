"""Accounts, workspaces and their credentials."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId, JsonDoc

PERMISSIONS = ("read", "read_pii", "write", "write_live")


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text())
    created_at: Mapped[int]


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text())
    site_id: Mapped[str] = mapped_column(Text(), unique=True)
    # Per-workspace overrides of limits and rate limits (see tidings.workspaces.limits).
    settings: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    # Bumped whenever a segment is created, changed or deleted: processes cache the compiled segment
    # definitions per workspace and reload them when this moves.
    segments_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # The same for campaigns: bumped when a campaign's state or workflow changes (trigger matching
    # caches each workspace's live campaigns).
    campaigns_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # What AI generations of this workspace are told about the company, product and audience.
    business_context: Mapped[dict[str, Any]] = mapped_column(
        JsonDoc, default=dict, server_default=text("'{}'")
    )
    created_at: Mapped[int]


class Credential(Base):
    """An API key. ``kind`` is track, app, pipelines or webhook_signing.

    Track, App and Pipelines secrets are stored as SHA-256 hashes and compared in constant time. A webhook
    signing key has to be stored as it is, because Tidings signs with it (HMAC needs the key itself).
    """

    __tablename__ = "credentials"
    __table_args__ = (Index("ix_credentials_secret_hash", "secret_hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(Text())
    name: Mapped[str] = mapped_column(Text(), default="")
    secret_hash: Mapped[str] = mapped_column(Text())
    # Only webhook signing keys keep their secret; for the others this is NULL.
    secret_plain: Mapped[str | None] = mapped_column(Text(), default=None)
    # First characters of the secret, so people can tell keys apart in listings.
    hint: Mapped[str] = mapped_column(Text())
    # admin (may change admin-only account settings, e.g. allow_agent_edit_live_data) or member.
    role: Mapped[str] = mapped_column(Text(), default="member", server_default="admin")
    # What the key may do (App API keys): read, read_pii (personal data), write, write_live (change what
    # is live: active campaigns, segments they use, people, sends). Keys made before permissions existed
    # have all four.
    permissions: Mapped[list[str]] = mapped_column(
        JsonDoc,
        default=lambda: list(PERMISSIONS),
        server_default=text("""'["read", "read_pii", "write", "write_live"]'"""),
    )
    created_at: Mapped[int]
    revoked_at: Mapped[int | None] = mapped_column(default=None)

"""Sender identities: the addresses a workspace's email goes out from (Customer.io's "senders").

Message content names one with ``from_id`` instead of spelling the address in ``from``; the address is
looked up when each message is rendered, so changing an identity changes every message not yet sent.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from tidings.models.base import Base, BigId


class SenderIdentity(Base):
    __tablename__ = "sender_identities"
    __table_args__ = (Index("ix_sender_identities_workspace", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # The display name ("Cher Ami"); may be empty, then the address is the bare email.
    name: Mapped[str] = mapped_column(Text(), default="")
    email: Mapped[str] = mapped_column(Text())
    # Customer.io's template_type: email (the only kind Tidings sends from).
    template_type: Mapped[str] = mapped_column(Text(), default="email", server_default="email")
    # Hidden senders are left out of lists unless asked for (``?hidden=true``), as in Customer.io.
    hidden: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[int]
    updated_at: Mapped[int]

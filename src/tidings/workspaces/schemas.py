"""Shapes the workspace domain hands out."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.models.workspace import PERMISSIONS
from tidings.workspaces.limits import WorkspaceSettings

KEY_KINDS = ("track", "app", "pipelines", "webhook_signing")
# An admin key may also change admin-only account settings (allow_agent_edit_live_data, credits).
ROLES = ("admin", "member")


@dataclass(frozen=True)
class WorkspaceContext:
    """Who is calling: the workspace a verified credential belongs to, with its settings."""

    workspace_id: int
    site_id: str
    name: str
    settings: WorkspaceSettings
    credential_id: int
    account_id: int = 0
    role: str = "member"
    permissions: frozenset[str] = frozenset(PERMISSIONS)

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"key:{self.credential_id}"


@dataclass(frozen=True)
class NewWorkspace:
    workspace_id: int
    name: str
    site_id: str
    track_api_key: str
    app_api_key: str
    pipelines_write_key: str
    webhook_signing_key: str


@dataclass(frozen=True)
class KeyInfo:
    id: int
    workspace_id: int
    kind: str
    name: str
    hint: str
    role: str
    permissions: list[str]
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True)
class NewKey:
    info: KeyInfo
    secret: str

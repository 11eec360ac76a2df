"""Customer.io's data limits and the rate limits, with per-workspace overrides.

Defaults are Customer.io's documented limits. A workspace stores overrides in ``workspaces.settings``
under ``limits`` and ``rate_limits``; ``tidings workspace configure`` edits them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from tidings.messaging.settings import MessagingSettings


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_identifier_bytes: int = 150
    max_attribute_name_bytes: int = 150
    max_attribute_value_bytes: int = 1000
    max_attributes: int = 300
    max_event_name_bytes: int = 100
    max_event_data_bytes: int = 100_000
    max_object_attributes_bytes: int = 100_000
    max_entity_request_bytes: int = 32_000
    max_batch_request_bytes: int = 500_000
    max_batch_item_bytes: int = 32_000
    max_manual_segment_ids: int = 1000


class RateLimits(BaseModel):
    """Requests per second per workspace and surface; 0 means unlimited (the self-hosting default)."""

    model_config = ConfigDict(extra="forbid")

    track: float = 0
    app: float = 0
    pipelines: float = 0
    # Triggers of one broadcast per 10 seconds (Customer.io allows 1).
    broadcast_triggers: float = 0


class WorkspaceSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limits: Limits = Limits()
    rate_limits: RateLimits = RateLimits()
    # Whether an ``@``-shaped Track path identifier means an email (Customer.io's email-or-id workspaces).
    identify_by_email: bool = True
    messaging: MessagingSettings = MessagingSettings()

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None) -> WorkspaceSettings:
        return cls.model_validate(stored or {})

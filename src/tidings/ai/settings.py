"""Account AI settings and workspace business context (ai-features §1), with every change audited.

Settings belong to the account and apply to all its workspaces. ``allow_agent_edit_live_data`` may only
be changed by an account admin (the CLI, or an App API key with the admin role).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from tidings.audit import service as audit
from tidings.config import get_settings
from tidings.errors import Forbidden, InvalidInput, NotFound
from tidings.models import AccountAi, CreditEntry, Workspace

SAFETY_CATEGORIES = ("harassment", "hate_speech", "sexually_explicit", "dangerous_content")
THRESHOLDS = ("off", "block_only_high", "block_medium_and_above", "block_low_and_above")
ADMIN_ONLY = frozenset({"allow_agent_edit_live_data"})
CONTEXT_KEYS = ("company", "product", "audience")
MAX_TEXT = 10_000


@dataclass(frozen=True)
class Actor:
    """Who makes a change: ``cli`` or ``key:<id>``, and whether they administer the account."""

    name: str
    admin: bool


CLI = Actor("cli", admin=True)


@dataclass(frozen=True)
class AiSettings:
    ai_enabled: bool = True
    allow_agent_edit_live_data: bool = False
    # Category → threshold; None keeps the provider's default.
    safety: tuple[tuple[str, str | None], ...] = tuple((c, None) for c in SAFETY_CATEGORIES)
    compliance_prompt: str = ""
    mcp_enabled: bool = True

    @staticmethod
    def from_stored(stored: dict[str, Any]) -> AiSettings:
        safety = stored.get("safety") or {}
        return AiSettings(
            ai_enabled=bool(stored.get("ai_enabled", True)),
            allow_agent_edit_live_data=bool(stored.get("allow_agent_edit_live_data", False)),
            safety=tuple((c, safety.get(c)) for c in SAFETY_CATEGORIES),
            compliance_prompt=str(stored.get("compliance_prompt") or ""),
            mcp_enabled=bool(stored.get("mcp_enabled", True)),
        )

    @property
    def safety_thresholds(self) -> dict[str, str]:
        """The thresholds set (categories left at the provider default are absent)."""
        return {category: value for category, value in self.safety if value is not None}

    def view(self) -> dict[str, Any]:
        return {
            "ai_enabled": self.ai_enabled,
            "allow_agent_edit_live_data": self.allow_agent_edit_live_data,
            "safety": dict(self.safety),
            "compliance_prompt": self.compliance_prompt,
            "mcp_enabled": self.mcp_enabled,
        }


_ROWS = "tidings.ai.account_rows"


def loaded_row(session: Session, account_id: int) -> AccountAi | None:
    """The account's AI row as this session knows it, or None when there is none yet. The session keeps
    it for its lifetime: its identity map holds clean objects only weakly, so a row no caller holds
    would be read again on the next ``get`` — once per journey when a worker stores a batch of LLM
    answers."""
    rows: dict[int, AccountAi] = session.info.setdefault(_ROWS, {})
    row = rows.get(account_id)
    if row is not None and inspect(row).persistent and inspect(row).session is session:
        return row
    row = session.get(AccountAi, account_id)
    if row is not None:
        rows[account_id] = row
    return row


def account_row(session: Session, account_id: int, *, now: int) -> AccountAi:
    """The account's AI row, created on first use with the configured starting credits."""
    row = loaded_row(session, account_id)
    if row is None:
        initial = round(get_settings().ai_initial_credits * 1000)
        row = AccountAi(account_id=account_id, settings={}, credit_millis=initial, updated_at=now)
        session.add(row)
        if initial:
            session.add(
                CreditEntry(
                    account_id=account_id,
                    at=now,
                    kind="grant",
                    delta_millis=initial,
                    balance_millis=initial,
                    actor="tidings",
                    note="starting credits",
                )
            )
        session.flush()
        session.info.setdefault(_ROWS, {})[account_id] = row
    return row


def read(session: Session, account_id: int) -> AiSettings:
    row = loaded_row(session, account_id)
    return AiSettings.from_stored(row.settings if row else {})


def _checked(key: str, value: Any, path: str) -> Any:
    if key in ("ai_enabled", "allow_agent_edit_live_data", "mcp_enabled"):
        if not isinstance(value, bool):
            raise InvalidInput(f"{path} must be true or false", field=path)
        return value
    if key == "compliance_prompt":
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise InvalidInput(f"{path} must be text of at most {MAX_TEXT} characters", field=path)
        return value
    if key == "safety":
        if not isinstance(value, dict):
            raise InvalidInput(f"{path} must be an object of category → threshold", field=path)
        for category, threshold in value.items():
            if category not in SAFETY_CATEGORIES:
                raise InvalidInput(
                    f"{path}: unknown category {category!r}; expected {', '.join(SAFETY_CATEGORIES)}",
                    field=f"{path}.{category}",
                )
            if threshold is not None and threshold not in THRESHOLDS:
                raise InvalidInput(
                    f"{path}.{category} must be one of {', '.join(THRESHOLDS)} (or null for the provider's "
                    "default)",
                    field=f"{path}.{category}",
                )
        return value
    raise InvalidInput(
        f"unknown AI setting {key!r}; expected ai_enabled, allow_agent_edit_live_data, safety, "
        "compliance_prompt, mcp_enabled",
        field=key,
    )


def update(
    session: Session, account_id: int, changes: dict[str, Any], *, actor: Actor, now: int
) -> AiSettings:
    """Apply the given settings (others keep their values); each changed one is audited."""
    for key, value in changes.items():
        _checked(key, value, key)
    if not actor.admin:
        refused = sorted(ADMIN_ONLY & set(changes))
        if refused:
            raise Forbidden(f"only an account admin may change {refused[0]} (use an admin key or the CLI)")
    row = account_row(session, account_id, now=now)
    before = AiSettings.from_stored(row.settings).view()
    stored = dict(row.settings or {})
    for key, value in changes.items():
        if key == "safety":
            merged = {**(stored.get("safety") or {}), **value}
            stored["safety"] = {k: v for k, v in merged.items() if v is not None}
        else:
            stored[key] = value
    after = AiSettings.from_stored(stored)
    for key, new_value in after.view().items():
        if before[key] != new_value:
            audit.record(
                session,
                account_id,
                actor=actor.name,
                action="ai_settings.update",
                target=key,
                old=before[key],
                new=new_value,
                now=now,
            )
    row.settings = stored
    row.updated_at = now
    return after


# -- business context (per workspace) ---------------------------------------------------------------------


def business_context_of(workspace: Workspace | None) -> dict[str, str]:
    stored = (workspace.business_context if workspace is not None else None) or {}
    return {key: str(stored.get(key) or "") for key in CONTEXT_KEYS}


def business_context(session: Session, workspace_id: int) -> dict[str, str]:
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound(f"no workspace {workspace_id}")
    return business_context_of(workspace)


def update_business_context(
    session: Session, workspace_id: int, changes: dict[str, Any], *, actor: Actor, now: int
) -> dict[str, str]:
    for key, value in changes.items():
        if key not in CONTEXT_KEYS:
            raise InvalidInput(
                f"unknown business context key {key!r}; expected {', '.join(CONTEXT_KEYS)}", field=key
            )
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise InvalidInput(f"{key} must be text of at most {MAX_TEXT} characters", field=key)
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound(f"no workspace {workspace_id}")
    before = business_context(session, workspace_id)
    after = {**before, **changes}
    if after != before:
        audit.record(
            session,
            workspace.account_id,
            workspace_id=workspace_id,
            actor=actor.name,
            action="business_context.update",
            target=f"workspace:{workspace_id}",
            old=before,
            new=after,
            now=now,
        )
    workspace.business_context = after
    return after


def context_text(context: dict[str, str]) -> str:
    """The business context as the instructions AI generations receive."""
    parts = [f"{key.capitalize()}: {value}" for key, value in context.items() if value]
    return "\n".join(parts)

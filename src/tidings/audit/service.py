"""Write and read the account audit log.

Entries are written in the transaction of the change they describe, so the log never shows a change that
did not happen, nor misses one that did.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.models import AuditEntry
from tidings.people.queries import decode_cursor

MAX_LIMIT = 1000


def record(
    session: Session,
    account_id: int,
    *,
    actor: str,
    action: str,
    target: str = "",
    old: Any = None,
    new: Any = None,
    workspace_id: int | None = None,
    now: int,
) -> None:
    session.add(
        AuditEntry(
            account_id=account_id,
            workspace_id=workspace_id,
            at=now,
            actor=actor,
            action=action,
            target=target,
            old=old,
            new=new,
        )
    )


def view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "workspace_id": entry.workspace_id,
        "old": entry.old,
        "new": entry.new,
    }


def entries(
    session: Session,
    account_id: int,
    *,
    start: str | None = None,
    limit: int = 100,
    action: str | None = None,
) -> dict[str, Any]:
    """Newest first; ``action`` keeps entries whose action starts with it (``ai_settings``)."""
    query = select(AuditEntry).where(AuditEntry.account_id == account_id)
    cursor = decode_cursor(start)
    if cursor is not None:
        query = query.where(AuditEntry.id < cursor)
    if action:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    limit = max(1, min(limit, MAX_LIMIT))
    rows = list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    return {
        "entries": [view(row) for row in page],
        "next": str(page[-1].id) if len(rows) > limit else "",
    }

"""The workspace data index: descriptions of the customer attributes a workspace uses.

An LLM action's customer-target output fields are described here when its campaign is saved, so a later
reader (a person, or an agent writing a filter) knows what ``customer.expansion_score`` holds and where it
comes from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.ai.fields import OutputField
from tidings.journeys.workflow import Block
from tidings.models import DataIndexEntry

CUSTOMER = "customer_attribute"


def describe_llm_outputs(
    session: Session, workspace_id: int, campaign_id: int, blocks: Iterable[Block], *, now: int
) -> None:
    for block in blocks:
        if block.type != "llm":
            continue
        fields: tuple[OutputField, ...] = block.spec["fields"]
        for field in fields:
            if field.target != "customer":
                continue
            entry = session.get(DataIndexEntry, (workspace_id, CUSTOMER, field.name))
            if entry is None:
                entry = DataIndexEntry(workspace_id=workspace_id, kind=CUSTOMER, name=field.name)
                session.add(entry)
            entry.type = field.type
            entry.description = field.description
            entry.source = {"campaign_id": campaign_id, "block": block.id, "set_by": "llm_action"}
            entry.updated_at = now


def view(entry: DataIndexEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "type": entry.type,
        "description": entry.description,
        "source": entry.source,
        "updated_at": entry.updated_at,
    }


def attributes(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(DataIndexEntry)
        .where(DataIndexEntry.workspace_id == workspace_id, DataIndexEntry.kind == CUSTOMER)
        .order_by(DataIndexEntry.name)
    )
    return [view(row) for row in rows]

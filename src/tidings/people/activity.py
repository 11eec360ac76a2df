"""The per-person activity log.

Types follow Customer.io's activity feed: ``attribute_change``, ``failed_attribute_change`` (shown as
"Attribute Update Failure"), ``event``, ``page``, ``screen``, ``device_change``, ``device_deleted``,
``merged_customer``, ``add_relationship``, ``delete_relationship``, ``form_submit``, ``unsubscribed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from tidings.ids import new_ulid
from tidings.models import Activity

_INSERT = insert(Activity)


def record(
    session: Session,
    workspace_id: int,
    person_id: int | None,
    type_: str,
    *,
    now: int,
    name: str | None = None,
    data: dict[str, Any] | None = None,
    delivery_id: str | None = None,
    delivery_type: str | None = None,
) -> None:
    # A Core insert: the log is append-only, so the ORM's unit of work would only add cost.
    session.connection().execute(
        _INSERT,
        {
            "workspace_id": workspace_id,
            "person_id": person_id,
            "activity_id": new_ulid(),
            "type": type_,
            "name": name,
            "timestamp": now,
            "data": data or {},
            "delivery_id": delivery_id,
            "delivery_type": delivery_type,
        },
    )


def record_many(
    session: Session,
    workspace_id: int,
    entries: Sequence[
        tuple[int | None, str, int, dict[str, Any]] | tuple[int | None, str, int, dict[str, Any], str]
    ],
) -> None:
    """Several entries (person, type, time, data, and optionally a name) in one executemany."""
    if not entries:
        return
    session.connection().execute(
        _INSERT,
        [
            {
                "workspace_id": workspace_id,
                "person_id": entry[0],
                "activity_id": new_ulid(),
                "type": entry[1],
                "name": entry[4] if len(entry) == 5 else None,
                "timestamp": entry[2],
                "data": entry[3],
                "delivery_id": None,
                "delivery_type": None,
            }
            for entry in entries
        ],
    )

"""The per-person activity log.

Types follow Customer.io's activity feed: ``attribute_change``, ``failed_attribute_change`` (shown as
"Attribute Update Failure"), ``event``, ``page``, ``screen``, ``device_change``, ``device_deleted``,
``merged_customer``, ``add_relationship``, ``delete_relationship``, ``form_submit``, ``unsubscribed``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from tidings.db.bulk import insert_rows
from tidings.ids import new_ulid, new_ulids
from tidings.models import Activity

_TABLE = cast(Table, Activity.__table__)
# Where a ``batched`` block collects its entries (in ``Session.info``, so nested code needs no argument).
_BUFFER = "tidings.activity.buffer"


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
    row = {
        "workspace_id": workspace_id,
        "person_id": person_id,
        "activity_id": new_ulid(),
        "type": type_,
        "name": name,
        "timestamp": now,
        "data": data or {},
        "delivery_id": delivery_id,
        "delivery_type": delivery_type,
    }
    buffer: list[dict[str, Any]] | None = session.info.get(_BUFFER)
    if buffer is not None:
        buffer.append(row)
        return
    # Straight to the driver: the log is append-only, so the ORM's unit of work would only add cost.
    insert_rows(session, _TABLE, [row])


@contextmanager
def batched(session: Session) -> Iterator[None]:
    """Entries recorded inside the block are written together when it ends, in one executemany (the
    sender records one per delivery of a batch). Nothing in the block may read them back before then.
    On an exception nothing is written: the caller's transaction is failing anyway."""
    if _BUFFER in session.info:
        yield  # already batching: the outer block writes
        return
    buffer: list[dict[str, Any]] = []
    session.info[_BUFFER] = buffer
    try:
        yield
    finally:
        del session.info[_BUFFER]
    insert_rows(session, _TABLE, buffer)


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
    insert_rows(
        session,
        _TABLE,
        [
            {
                "workspace_id": workspace_id,
                "person_id": entry[0],
                "activity_id": activity_id,
                "type": entry[1],
                "name": entry[4] if len(entry) == 5 else None,
                "timestamp": entry[2],
                "data": entry[3],
                "delivery_id": None,
                "delivery_type": None,
            }
            for entry, activity_id in zip(entries, new_ulids(len(entries)), strict=True)
        ],
    )

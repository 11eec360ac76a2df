"""Rows written straight to the driver (tidings.db.bulk) read back exactly as the ORM would write them."""

from __future__ import annotations

from typing import Any, cast

import pytest
from sqlalchemy import Table, select

from tidings.db import Database
from tidings.db.bulk import VALUES_UP_TO, insert_rows
from tidings.models import Activity
from tidings.workspaces.service import create_workspace

TABLE = cast(Table, Activity.__table__)


def rows(workspace_id: int, prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "workspace_id": workspace_id,
            "person_id": None,
            "activity_id": f"{prefix}-{n}",
            "type": "event",
            "name": None if n % 2 else f"name {n}",
            "timestamp": 1_700_000_000 + n,
            # JSON goes through the column type's own conversion; quotes, %, ? and non-ASCII survive.
            "data": {"n": n, "text": "it's 100% ok? ünïcode", "list": [1, None, True], "nested": {"a": n}},
            "delivery_id": None,
            "delivery_type": None,
        }
        for n in range(count)
    ]


@pytest.mark.parametrize("count", [1, 3, VALUES_UP_TO, VALUES_UP_TO + 1, 250])
def test_rows_read_back_as_written(database_url: str, count: int) -> None:
    db = Database(database_url)
    try:
        workspace_id = db.run(lambda s: create_workspace(s, "w", now=1).workspace_id)
        written = rows(workspace_id, f"c{count}", count)
        db.run(lambda s: insert_rows(s, TABLE, written))
        with db.read_session() as session:
            found = session.execute(
                select(Activity.activity_id, Activity.name, Activity.timestamp, Activity.data)
                .where(Activity.workspace_id == workspace_id)
                .order_by(Activity.timestamp)
            ).all()
        assert [tuple(row) for row in found] == [
            (r["activity_id"], r["name"], r["timestamp"], r["data"]) for r in written
        ]
    finally:
        db.close()

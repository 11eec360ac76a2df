"""Rows written straight to the driver (tidings.db.bulk) read back exactly as the ORM would write them."""

from __future__ import annotations

from typing import Any, cast

import pytest
from sqlalchemy import Select, Table, select

from tidings.db import Database
from tidings.db.bulk import VALUES_UP_TO, insert_new, insert_rows
from tidings.models import Activity, Event
from tidings.workspaces.service import create_workspace

TABLE = cast(Table, Activity.__table__)
EVENTS = cast(Table, Event.__table__)
DEDUP = ("workspace_id", "event_id")


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


def stored(db: Database, query: Select[Any]) -> list[tuple[Any, ...]]:
    with db.read_session() as session:
        return [tuple(row) for row in session.execute(query).all()]


@pytest.mark.parametrize("count", [1, 3, VALUES_UP_TO, VALUES_UP_TO + 1, 250])
def test_rows_read_back_as_written(database_url: str, count: int) -> None:
    db = Database(database_url)
    try:
        workspace_id = db.run(lambda s: create_workspace(s, "w", now=1).workspace_id)
        written = rows(workspace_id, f"c{count}", count)
        db.run(lambda s: insert_rows(s, TABLE, written))
        found = stored(
            db,
            select(Activity.activity_id, Activity.name, Activity.timestamp, Activity.data)
            .where(Activity.workspace_id == workspace_id)
            .order_by(Activity.timestamp),
        )
        assert found == [(r["activity_id"], r["name"], r["timestamp"], r["data"]) for r in written]
    finally:
        db.close()


def test_insert_new_skips_and_reports_colliding_rows(database_url: str) -> None:
    db = Database(database_url)
    try:
        workspace_id = db.run(lambda s: create_workspace(s, "w", now=1).workspace_id)

        def event(event_id: str, n: int) -> dict[str, Any]:
            return {
                "workspace_id": workspace_id,
                "event_id": event_id,
                "person_id": None,
                "anonymous_id": None,
                "type": "event",
                "name": f"e{n}",
                "data": {"n": n, "why": "100% 'quoted'?"},
                "timestamp": n,
                "received_at": n,
                "can_trigger": n % 2 == 0,
                "source": "track",
            }

        def insert(rows: list[dict[str, Any]]) -> list[Any]:
            return db.run(lambda s: insert_new(s, EVENTS, rows, unique=DEDUP, returning="event_id"))

        assert sorted(insert([event("a", 1), event("b", 2)])) == ["a", "b"]
        # "a" is stored already; "c" comes twice in one statement: the first is written, once.
        assert sorted(insert([event("a", 3), event("c", 4), event("c", 5), event("d", 6)])) == ["c", "d"]
        found = stored(
            db,
            select(Event.event_id, Event.name, Event.data, Event.can_trigger)
            .where(Event.workspace_id == workspace_id)
            .order_by(Event.event_id),
        )
        assert found == [
            ("a", "e1", {"n": 1, "why": "100% 'quoted'?"}, False),
            ("b", "e2", {"n": 2, "why": "100% 'quoted'?"}, True),
            ("c", "e4", {"n": 4, "why": "100% 'quoted'?"}, True),
            ("d", "e6", {"n": 6, "why": "100% 'quoted'?"}, True),
        ]
    finally:
        db.close()

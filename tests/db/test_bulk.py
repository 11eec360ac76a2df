"""Rows written straight to the driver (tidings.db.bulk) read back exactly as the ORM would write them."""

from __future__ import annotations

from typing import Any, cast

import pytest
from sqlalchemy import Select, Table, select

from tidings.db import Database
from tidings.db.bulk import VALUES_UP_TO, insert_new, insert_returning, insert_rows, update_rows
from tidings.models import Activity, Event, Person
from tidings.workspaces.service import create_workspace

TABLE = cast(Table, Activity.__table__)
EVENTS = cast(Table, Event.__table__)
DEDUP = ("workspace_id", "event_id")
PEOPLE = cast(Table, Person.__table__)


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


def person_row(workspace_id: int, n: int) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "cio_id": f"cio-{n}",
        "customer_id": f"id-{n}",
        "email": None if n % 2 else f"P{n}@example.com",
        "email_key": None if n % 2 else f"p{n}@example.com",
        "created_at": n,
        "updated_at": n,
        "unsubscribed": n % 3 == 0,
        "attributes": {"n": n, "why": "100% 'quoted'?", "list": [n, None]},
        "attribute_timestamps": {"n": n},
        "subscription_preferences": {},
    }


PERSON = select(
    Person.id, Person.customer_id, Person.email, Person.unsubscribed, Person.attributes, Person.updated_at
)


@pytest.mark.parametrize("count", [1, 3, 40])
def test_inserted_rows_return_their_keys_and_updates_write_each_row(database_url: str, count: int) -> None:
    db = Database(database_url)
    try:
        workspace_id = db.run(lambda s: create_workspace(s, "w", now=1).workspace_id)
        written = [person_row(workspace_id, n) for n in range(count)]
        returned = db.run(lambda s: insert_returning(s, PEOPLE, written, ("cio_id", "id")))
        ids: dict[str, int] = dict(returned)
        assert sorted(ids) == sorted(r["cio_id"] for r in written)
        assert len(set(ids.values())) == count
        with db.read_session() as session:
            keys = session.execute(
                select(Person.id, Person.cio_id).where(Person.workspace_id == workspace_id)
            )
            by_id = {row.id: row.cio_id for row in keys}
        assert by_id == {person_id: cio_id for cio_id, person_id in ids.items()}

        # Every other person changes; each row gets its own values, the others stay as they were.
        changes = [
            {
                "customer_id": f"new-{n}",
                "unsubscribed": not row["unsubscribed"],
                "attributes": {"n": -n, "ü": "100% ok?"},
                "updated_at": 1000 + n,
                "id": ids[row["cio_id"]],
            }
            for n, row in enumerate(written)
            if n % 2 == 0
        ]
        db.run(lambda s: update_rows(s, PEOPLE, changes, key="id"))
        found = stored(db, PERSON.where(Person.workspace_id == workspace_id).order_by(Person.created_at))
        expected = []
        for n, row in enumerate(written):
            if n % 2 == 0:
                expected.append(
                    (
                        ids[row["cio_id"]],
                        f"new-{n}",
                        row["email"],
                        not row["unsubscribed"],
                        {"n": -n, "ü": "100% ok?"},
                        1000 + n,
                    )
                )
            else:
                expected.append(
                    (
                        ids[row["cio_id"]],
                        row["customer_id"],
                        row["email"],
                        row["unsubscribed"],
                        row["attributes"],
                        row["updated_at"],
                    )
                )
        assert found == expected
    finally:
        db.close()

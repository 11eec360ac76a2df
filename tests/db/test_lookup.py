"""Lookups by a list of values straight through the driver (tidings.db.lookup) find exactly the rows the
values name, on both databases, across more values than one statement takes."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table

from tidings.db import Database
from tidings.db.bulk import insert_rows
from tidings.db.lookup import CHUNK, select_in
from tidings.models import Person
from tidings.workspaces.service import create_workspace

PEOPLE = cast(Table, Person.__table__)
SQL = "SELECT id, customer_id FROM people WHERE workspace_id = ? AND customer_id IN (*)"


def person(workspace_id: int, customer_id: str) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "cio_id": f"cio-{customer_id}",
        "customer_id": customer_id,
        "created_at": 1,
        "updated_at": 1,
        "unsubscribed": False,
        "attributes": {},
        "attribute_timestamps": {},
        "subscription_preferences": {},
    }


def test_select_in_finds_the_named_rows_across_chunks(database_url: str) -> None:
    db = Database(database_url)
    try:
        workspace_id, other = db.run(
            lambda s: (
                create_workspace(s, "w", now=1).workspace_id,
                create_workspace(s, "o", now=1).workspace_id,
            )
        )
        # Values that would break text pasted into SQL: quotes, placeholders of both drivers, percent.
        odd = ["it's", "what?", "100%", "%s", "ünï"]
        stored = [f"p{n}" for n in range(CHUNK + 300)] + odd
        db.run(lambda s: insert_rows(s, PEOPLE, [person(workspace_id, value) for value in stored]))
        # The same ids in another workspace must not be found.
        db.run(lambda s: insert_rows(s, PEOPLE, [person(other, value) for value in stored[:10]]))

        wanted = stored[::2] + odd + ["nobody", "p-1"]
        with db.session() as session:
            found = select_in(session, SQL, (workspace_id,), wanted)
        assert sorted(customer_id for _, customer_id in found) == sorted(set(stored[::2] + odd))
        assert len({person_id for person_id, _ in found}) == len(found)
        with db.session() as session:
            assert select_in(session, SQL, (workspace_id,), []) == []
    finally:
        db.close()

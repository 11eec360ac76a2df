"""A statement compiled once and run through psycopg (tidings.db.prepared) returns what SQLAlchemy's own
execution of it returns, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, bindparam, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from tidings.db import Database
from tidings.db.prepared import prepare
from tidings.models import Person
from tidings.workspaces.service import create_workspace


def _people(session: Session, workspace_id: int) -> list[int]:
    people = [
        Person(
            workspace_id=workspace_id,
            cio_id=f"cio{n}",
            customer_id=f"p{n}",
            email=f"p{n}@example.com" if n % 2 else None,
            created_at=1_000 + n,
            updated_at=1_000 + n,
            # Quotes, % and non-ASCII in values the statement holds as constants.
            attributes={"plan": ["pro", "free", "it's 100% ünï"][n % 3], "seats": n},
        )
        for n in range(12)
    ]
    session.add_all(people)
    session.flush()
    return [person.id for person in people]


def test_rows_match_sqlalchemys(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        workspace_id = db.run(lambda s: create_workspace(s, "w", now=1).workspace_id)
        statement = select(
            Person.id,
            Person.attributes["plan"].as_string().in_(["pro", "it's 100% ünï"]),
            Person.attributes["seats"].as_integer() > 4,
            Person.created_at > bindparam("since", type_=BigInteger()),
            Person.email.is_(None),
            literal("constant"),
        ).where(
            Person.workspace_id == workspace_id,
            Person.id == func.any(bindparam("ids", type_=ARRAY(BigInteger()))),
        )
        prepared = prepare(statement)
        # Only the parameters without a value are left for each execution.
        assert {"since", "ids"} <= set(prepared.order)
        assert not {"since", "ids"} & set(prepared.constants)

        def check(session: Session) -> None:
            # People added in this very transaction: the statement runs in it.
            ids = _people(session, workspace_id)
            connection = session.connection()
            # More runs than psycopg needs to switch to a server-side prepared statement.
            for since in (0, 1_004, 1_008, 5_000, 1_003, 1_006, 0):
                values: dict[str, Any] = {"ids": ids[1:], "since": since}
                expected = [tuple(row) for row in connection.execute(statement, values).all()]
                assert prepared.fetch_all(connection, values) == expected
                assert len(expected) == len(ids) - 1
            matching = [row for row in prepared.fetch_all(connection, {"ids": ids, "since": 0}) if row[1]]
            assert len(matching) == 8

        db.run(check)
    finally:
        db.close()

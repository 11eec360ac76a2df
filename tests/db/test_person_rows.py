"""Identifies applied as a set write people as plain rows (tidings.models.PersonRow) straight to the
driver. In a group-commit transaction other units may already hold the same person as an ORM instance,
changed or not: the set must see those changes, and what the transaction reads afterwards must be the
person as the set left them. In process, on both stores, as the writer runs a batch."""

from __future__ import annotations

from dataclasses import fields

from tidings.db import Database
from tidings.models import Person, PersonRow
from tidings.people import service as people
from tidings.people.identifiers import Identifier, find_person
from tidings.workspaces.limits import WorkspaceSettings
from tidings.workspaces.schemas import WorkspaceContext
from tidings.workspaces.service import create_workspace

NOW = 1_700_000_000


def _workspace(db: Database) -> WorkspaceContext:
    with db.session() as session:
        created = create_workspace(session, "rows", now=NOW)
    return WorkspaceContext(
        workspace_id=created.workspace_id,
        site_id=created.site_id,
        name="rows",
        settings=WorkspaceSettings(),
        credential_id=0,
    )


def test_a_set_sees_earlier_orm_changes_and_leaves_no_stale_copy(database_url: str) -> None:
    db = Database(database_url)
    try:
        ws = _workspace(db)
        ana = Identifier("id", "ana")
        with db.session() as session:
            people.identify(session, ws, ana, {"plan": "basic", "team": "red"}, now=NOW)
        with db.session() as session:
            held = find_person(session, ws.workspace_id, ana)
            assert held is not None
            # An earlier unit of the batch changed the person through the ORM, not flushed yet.
            held.attributes = {**held.attributes, "team": "blue"}
            refs = people.Identify.apply_group(session, [people.Identify(ws, ana, {"plan": "pro"}, NOW + 5)])
            assert refs[0] is not None
            assert refs[0].person_id == held.id
            # Later in the same transaction the person reads as the set left them, with both changes.
            again = session.get(Person, held.id)
            assert again is not None
            assert again is not held
            assert again.attributes == {"plan": "pro", "team": "blue"}
        with db.read_session() as session:
            stored = session.get(Person, refs[0].person_id)
            assert stored is not None
            assert stored.attributes == {"plan": "pro", "team": "blue"}
            assert stored.updated_at == NOW + 5
    finally:
        db.close()


def test_a_new_person_from_a_row_gets_its_key_when_stored(database_url: str) -> None:
    assert {field.name for field in fields(PersonRow)} == {column.key for column in Person.__table__.columns}
    db = Database(database_url)
    try:
        ws = _workspace(db)
        with db.session() as session:
            [row] = people.create_named_all(session, ws, [(Identifier("id", "bo"), NOW)])
        assert row.id > 0
        unsaved = PersonRow(**{**{f.name: getattr(row, f.name) for f in fields(PersonRow)}, "id": 0})
        unsaved.cio_id, unsaved.customer_id = "c0ffee000001", "cy"
        with db.session() as session:
            person = unsaved.to_person()
            session.add(person)
            session.flush()
            assert person.id not in (0, row.id)
    finally:
        db.close()

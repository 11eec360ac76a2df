"""Read views of object types and objects for the App API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.errors import InvalidInput, NotFound
from tidings.models import Object, ObjectType, Person, Relationship
from tidings.people.queries import as_attribute_string, decode_cursor


def object_types(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ObjectType).where(ObjectType.workspace_id == workspace_id).order_by(ObjectType.id)
    )
    return [
        {
            "id": int(row.type_id) if row.type_id.isdigit() else row.type_id,
            "name": row.name,
            "singular_name": row.singular,
            "created_at": row.created_at,
        }
        for row in rows
    ]


def lookup_object(session: Session, workspace_id: int, type_id: str, object_id: str, id_type: str) -> Object:
    query = select(Object).where(Object.workspace_id == workspace_id)
    if id_type == "object_id":
        query = query.where(Object.type_id == type_id, Object.object_id == object_id)
    elif id_type == "cio_object_id":
        query = query.where(Object.cio_object_id == object_id)
    else:
        raise InvalidInput("id_type must be object_id or cio_object_id", field="id_type")
    found = session.scalars(query).first()
    if found is None:
        raise NotFound(f"object {object_id!r} of type {type_id} not found")
    return found


def object_view(obj: Object) -> dict[str, Any]:
    attributes = {name: as_attribute_string(value) for name, value in (obj.attributes or {}).items()}
    return {
        "object": {
            "identifiers": {
                "object_type_id": obj.type_id,
                "object_id": obj.object_id,
                "cio_object_id": obj.cio_object_id,
            },
            "attributes": attributes,
            "timestamps": obj.attribute_timestamps,
            "created_at": obj.created_at,
            "updated_at": obj.updated_at,
        }
    }


def object_relationships(session: Session, obj: Object, *, start: str | None, limit: int) -> dict[str, Any]:
    query = (
        select(Relationship, Person)
        .join(Person, Person.id == Relationship.person_id)
        .where(Relationship.object_pk == obj.id)
    )
    cursor = decode_cursor(start)
    if cursor is not None:
        query = query.where(Relationship.id > cursor)
    rows = session.execute(query.order_by(Relationship.id).limit(limit + 1)).all()
    page, more = rows[:limit], len(rows) > limit
    return {
        "cio_relationships": [
            {
                "identifiers": {"id": person.customer_id, "email": person.email, "cio_id": person.cio_id},
                "relationship_attributes": rel.attributes,
            }
            for rel, person in page
        ],
        "next": str(page[-1][0].id) if more else "",
    }

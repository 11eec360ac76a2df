"""Read views of people, shaped as Customer.io's App API returns them."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.errors import InvalidInput, NotFound
from tidings.models import Activity, Device, Object, Person, Relationship
from tidings.people.identifiers import IDENTIFIER_TYPES, Identifier, email_key, find_person, identifiers_of


def as_attribute_string(value: Any) -> str:
    """The App API reports every attribute value as a string."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def lookup(session: Session, workspace_id: int, identifier: str, id_type: str) -> Person:
    if id_type not in IDENTIFIER_TYPES:
        raise InvalidInput("id_type must be id, email or cio_id", field="id_type")
    person = find_person(session, workspace_id, Identifier(id_type, identifier))
    if person is None:
        raise NotFound(f"customer {identifier!r} not found (id_type={id_type})")
    return person


def customer_view(session: Session, person: Person) -> dict[str, Any]:
    attributes = {name: as_attribute_string(value) for name, value in (person.attributes or {}).items()}
    attributes["cio_id"] = person.cio_id
    attributes["created_at"] = str(person.created_at)
    attributes["unsubscribed"] = "true" if person.unsubscribed else "false"
    if person.customer_id is not None:
        attributes["id"] = person.customer_id
    if person.email is not None:
        attributes["email"] = person.email
    if person.subscription_preferences:
        attributes["cio_subscription_preferences"] = as_attribute_string(person.subscription_preferences)
    timestamps = dict(person.attribute_timestamps or {})
    timestamps.setdefault("cio_id", person.created_at)
    timestamps.setdefault("created_at", person.created_at)
    devices = session.scalars(select(Device).where(Device.person_id == person.id).order_by(Device.id))
    return {
        "id": person.customer_id,
        "identifiers": identifiers_of(person),
        "attributes": attributes,
        "timestamps": timestamps,
        "unsubscribed": person.unsubscribed,
        "devices": [
            {"id": d.token, "platform": d.platform, "last_used": d.last_used, "attributes": d.attributes}
            for d in devices
        ],
    }


def find_by_email(session: Session, workspace_id: int, email: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Person).where(Person.workspace_id == workspace_id, Person.email_key == email_key(email))
    )
    return [{"id": p.customer_id, "email": p.email, "cio_id": p.cio_id} for p in rows]


def attributes_of_many(
    session: Session, workspace_id: int, ids: list[str], id_type: str
) -> list[dict[str, Any]]:
    found = []
    for identifier in ids:
        person = find_person(session, workspace_id, Identifier(id_type, identifier))  # type: ignore[arg-type]
        if person is not None:
            found.append({"customer": customer_view(session, person)})
    return found


def decode_cursor(start: str | None) -> int | None:
    if not start:
        return None
    if not start.isdigit():
        raise InvalidInput("start must be a cursor returned as next", field="start")
    return int(start)


def activities(
    session: Session,
    person: Person,
    *,
    start: str | None,
    limit: int,
    type_: str | None,
    name: str | None,
) -> dict[str, Any]:
    """Newest first, paginated with an opaque cursor."""
    query = select(Activity).where(
        Activity.workspace_id == person.workspace_id, Activity.person_id == person.id
    )
    cursor = decode_cursor(start)
    if cursor is not None:
        query = query.where(Activity.id < cursor)
    if type_:
        query = query.where(Activity.type == type_)
    if name:
        query = query.where(Activity.name == name)
    rows = session.scalars(query.order_by(Activity.id.desc()).limit(limit + 1)).all()
    page, more = rows[:limit], len(rows) > limit
    ids = identifiers_of(person)
    return {
        "activities": [
            {
                "id": row.activity_id,
                "customer_id": person.customer_id,
                "customer_identifiers": ids,
                "type": row.type,
                "name": row.name,
                "timestamp": row.timestamp,
                "data": row.data,
                "delivery_id": row.delivery_id,
                "delivery_type": row.delivery_type,
            }
            for row in page
        ],
        "next": str(page[-1].id) if more else "",
    }


def relationships(session: Session, person: Person, *, start: str | None, limit: int) -> dict[str, Any]:
    query = (
        select(Relationship, Object)
        .join(Object, Object.id == Relationship.object_pk)
        .where(Relationship.person_id == person.id)
    )
    cursor = decode_cursor(start)
    if cursor is not None:
        query = query.where(Relationship.id > cursor)
    rows = session.execute(query.order_by(Relationship.id).limit(limit + 1)).all()
    page, more = rows[:limit], len(rows) > limit
    return {
        "cio_relationships": [
            {
                "identifiers": {
                    "object_type_id": obj.type_id,
                    "object_id": obj.object_id,
                    "cio_object_id": obj.cio_object_id,
                },
                "relationship_attributes": rel.attributes,
                "relationship_created_at": rel.created_at,
            }
            for rel, obj in page
        ],
        "next": str(page[-1][0].id) if more else "",
    }

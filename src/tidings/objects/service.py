"""Objects and relationships between people and objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tidings import signals
from tidings.errors import InvalidInput
from tidings.ids import new_cio_id
from tidings.models import Object, ObjectType, Relationship
from tidings.people import activity
from tidings.people.attributes import (
    apply_attributes,
    check_attributes,
    check_identifier,
    value_size,
)
from tidings.segments import realtime
from tidings.workspaces.limits import Limits


@dataclass(frozen=True)
class ObjectRef:
    """``{"object_type_id", "object_id"}`` (may create) or ``{"cio_object_id"}`` (existing only)."""

    type_id: str | None = None
    object_id: str | None = None
    cio_object_id: str | None = None


def parse_object_ref(obj: Any, *, field: str = "identifiers") -> ObjectRef:
    if not isinstance(obj, dict):
        raise InvalidInput(f"{field} must be an object", field=field)
    if obj.get("cio_object_id") not in (None, ""):
        value = obj["cio_object_id"]
        if not isinstance(value, str):
            raise InvalidInput(f"{field}.cio_object_id must be a string", field=f"{field}.cio_object_id")
        return ObjectRef(cio_object_id=value)
    type_id, object_id = obj.get("object_type_id"), obj.get("object_id")
    if isinstance(type_id, int) and not isinstance(type_id, bool):
        type_id = str(type_id)
    if isinstance(object_id, int) and not isinstance(object_id, bool):
        object_id = str(object_id)
    if not isinstance(type_id, str) or not type_id or not isinstance(object_id, str) or not object_id:
        raise InvalidInput(f"{field} needs object_type_id and object_id, or cio_object_id", field=field)
    return ObjectRef(type_id=type_id, object_id=object_id)


def ensure_object_type(session: Session, workspace_id: int, type_id: str, *, now: int) -> ObjectType:
    existing = session.scalars(
        select(ObjectType).where(ObjectType.workspace_id == workspace_id, ObjectType.type_id == type_id)
    ).first()
    if existing is not None:
        return existing
    # Customer.io creates object types in its UI; Tidings creates them on first use and names them
    # after their id until someone renames them.
    object_type = ObjectType(
        workspace_id=workspace_id,
        type_id=type_id,
        name=f"object_type_{type_id}",
        singular=f"object_type_{type_id}",
        created_at=now,
    )
    session.add(object_type)
    session.flush()
    return object_type


def find_object(session: Session, workspace_id: int, ref: ObjectRef) -> Object | None:
    query = select(Object).where(Object.workspace_id == workspace_id)
    if ref.cio_object_id is not None:
        query = query.where(Object.cio_object_id == ref.cio_object_id)
    else:
        query = query.where(Object.type_id == ref.type_id, Object.object_id == ref.object_id)
    return session.scalars(query).first()


def upsert_object(
    session: Session,
    workspace_id: int,
    ref: ObjectRef,
    attributes: Mapping[str, Any] | None,
    *,
    now: int,
    limits: Limits,
    create: bool = True,
) -> Object | None:
    """Create or update an object. A ``cio_object_id`` reference only updates; unknown ⇒ None."""
    attributes = attributes or {}
    check_attributes(attributes, limits, field_prefix="attributes.")
    total = sum(value_size(v) for v in attributes.values() if v is not None)
    if total > limits.max_object_attributes_bytes:
        raise InvalidInput(
            f"object attributes total {total} bytes, more than {limits.max_object_attributes_bytes}",
            field="attributes",
        )
    obj = find_object(session, workspace_id, ref)
    created = obj is None
    if obj is None:
        if ref.cio_object_id is not None or not create:
            return None
        assert ref.type_id is not None
        assert ref.object_id is not None
        check_identifier(ref.object_id, limits, field_name="object_id")
        ensure_object_type(session, workspace_id, ref.type_id, now=now)
        obj = Object(
            workspace_id=workspace_id,
            type_id=ref.type_id,
            object_id=ref.object_id,
            cio_object_id=new_cio_id(),
            attributes={},
            attribute_timestamps={},
            created_at=now,
            updated_at=now,
        )
        session.add(obj)
    new_attrs, stamps, changes = apply_attributes(
        obj.attributes or {}, obj.attribute_timestamps or {}, attributes, at=now, limits=limits
    )
    if changes or obj.id is None:
        obj.attributes, obj.attribute_timestamps, obj.updated_at = new_attrs, stamps, now
    session.flush()
    if changes.changed:
        _touch_related(session, workspace_id, obj, now=now)
    if created or changes.changed:
        signals.note(
            session,
            signals.ObjectChanged(workspace_id, obj.type_id, obj.object_id, dict(changes.changed), created),
            now=now,
        )
    return obj


def _touch_related(session: Session, workspace_id: int, obj: Object, *, now: int) -> None:
    """People related to an object whose attributes changed (or that goes) are re-evaluated for the
    segments that look at objects of its type."""
    related = session.scalars(select(Relationship.person_id).where(Relationship.object_pk == obj.id)).all()
    if related:
        realtime.touched(session, workspace_id, related, [f"object:{obj.type_id}"], now=now)


def delete_object(session: Session, workspace_id: int, ref: ObjectRef, *, now: int) -> bool:
    obj = find_object(session, workspace_id, ref)
    if obj is None:
        return False
    _touch_related(session, workspace_id, obj, now=now)
    session.execute(delete(Relationship).where(Relationship.object_pk == obj.id))
    session.delete(obj)
    session.flush()
    return True


def relate(
    session: Session,
    workspace_id: int,
    person_id: int,
    obj: Object,
    relationship_attributes: Mapping[str, Any] | None,
    *,
    now: int,
    limits: Limits,
) -> None:
    relationship_attributes = relationship_attributes or {}
    check_attributes(relationship_attributes, limits, field_prefix="relationship_attributes.")
    existing = session.scalars(
        select(Relationship).where(Relationship.person_id == person_id, Relationship.object_pk == obj.id)
    ).first()
    if existing is None:
        existing = Relationship(
            workspace_id=workspace_id,
            person_id=person_id,
            object_pk=obj.id,
            attributes={},
            created_at=now,
            updated_at=now,
        )
        session.add(existing)
        activity.record(
            session,
            workspace_id,
            person_id,
            "add_relationship",
            now=now,
            data={"object_type_id": obj.type_id, "object_id": obj.object_id},
        )
        signals.note(
            session,
            signals.RelationshipChanged(workspace_id, person_id, obj.type_id, obj.object_id, True),
            now=now,
        )
    merged, _, _ = apply_attributes(
        existing.attributes or {}, {}, relationship_attributes, at=now, limits=limits
    )
    existing.attributes = merged
    existing.updated_at = now
    session.flush()
    realtime.touched(session, workspace_id, [person_id], [f"object:{obj.type_id}"], now=now)


def unrelate(session: Session, workspace_id: int, person_id: int, obj: Object, *, now: int) -> None:
    result = session.execute(
        delete(Relationship).where(Relationship.person_id == person_id, Relationship.object_pk == obj.id)
    )
    if getattr(result, "rowcount", 0):
        activity.record(
            session,
            workspace_id,
            person_id,
            "delete_relationship",
            now=now,
            data={"object_type_id": obj.type_id, "object_id": obj.object_id},
        )
        realtime.touched(session, workspace_id, [person_id], [f"object:{obj.type_id}"], now=now)
        signals.note(
            session,
            signals.RelationshipChanged(workspace_id, person_id, obj.type_id, obj.object_id, False),
            now=now,
        )


@dataclass(frozen=True)
class ObjectLink:
    """One entry of a person's ``cio_relationships``: the object, and the relationship's attributes."""

    ref: ObjectRef
    attributes: Mapping[str, Any] | None


def parse_object_links(relationships: Any, *, field: str = "cio_relationships") -> list[ObjectLink]:
    """Read ``[{"identifiers": {...}, "relationship_attributes": {...}}, …]`` naming objects."""
    if not isinstance(relationships, list):
        raise InvalidInput(f"{field} must be a list", field=field)
    links = []
    for index, entry in enumerate(relationships):
        if not isinstance(entry, dict):
            raise InvalidInput(f"{field}[{index}] must be an object", field=f"{field}[{index}]")
        ref = parse_object_ref(entry.get("identifiers"), field=f"{field}[{index}].identifiers")
        attrs = entry.get("relationship_attributes")
        if attrs is not None and not isinstance(attrs, dict):
            raise InvalidInput(
                f"{field}[{index}].relationship_attributes must be an object",
                field=f"{field}[{index}].relationship_attributes",
            )
        links.append(ObjectLink(ref, attrs))
    return links


def link_person(
    session: Session,
    workspace_id: int,
    person_id: int,
    links: Sequence[ObjectLink],
    *,
    action: str,
    now: int,
    limits: Limits,
) -> None:
    """Relate (``add_relationships``, creating objects named by type and id) or unrelate one person."""
    for link in links:
        if action == "delete_relationships":
            obj = find_object(session, workspace_id, link.ref)
            if obj is not None:
                unrelate(session, workspace_id, person_id, obj, now=now)
            continue
        obj = upsert_object(session, workspace_id, link.ref, None, now=now, limits=limits)
        if obj is not None:
            relate(session, workspace_id, person_id, obj, link.attributes, now=now, limits=limits)


def apply_person_relationships(
    session: Session,
    workspace_id: int,
    person_id: int,
    relationships: Any,
    *,
    action: str,
    now: int,
    limits: Limits,
    field: str = "cio_relationships",
) -> None:
    """Relate (or unrelate) one person to each ``{"identifiers": {...}, "relationship_attributes": …}``."""
    links = parse_object_links(relationships, field=field)
    link_person(session, workspace_id, person_id, links, action=action, now=now, limits=limits)

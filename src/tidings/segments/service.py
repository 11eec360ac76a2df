"""Manual segments: create, read, delete, and membership changes from the Track API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tidings.errors import InvalidInput, NotFound
from tidings.models import Person, Segment, SegmentMembership
from tidings.people.identifiers import IDENTIFIER_TYPES, email_key
from tidings.workspaces.limits import Limits


def segment_view(segment: Segment) -> dict[str, Any]:
    return {
        "id": segment.id,
        "deduplicate_id": f"{segment.id}:{segment.updated_at}",
        "name": segment.name,
        "description": segment.description,
        "state": segment.state,
        "progress": None,
        "type": segment.type,
        "tags": segment.tags,
        "created_at": segment.created_at,
        "updated_at": segment.updated_at,
    }


def create_manual(session: Session, workspace_id: int, body: Any, *, now: int) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("segment"), dict):
        raise InvalidInput('body must be {"segment": {"name": ...}}', field="segment")
    spec = body["segment"]
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("segment.name is required", field="segment.name")
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise InvalidInput("segment.description must be a string", field="segment.description")
    tags = spec.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise InvalidInput("segment.tags must be a list of strings", field="segment.tags")
    segment = Segment(
        workspace_id=workspace_id,
        name=name.strip(),
        description=description,
        type="manual",
        tags=tags,
        state="finished",
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    session.flush()
    return segment_view(segment)


def get_segment(session: Session, workspace_id: int, segment_id: int) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None or segment.workspace_id != workspace_id:
        raise NotFound(f"segment {segment_id} not found")
    return segment


def list_segments(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(Segment).where(Segment.workspace_id == workspace_id).order_by(Segment.id))
    return [segment_view(row) for row in rows]


def delete_manual(session: Session, workspace_id: int, segment_id: int) -> None:
    segment = get_segment(session, workspace_id, segment_id)
    if segment.type != "manual":
        raise InvalidInput("only manual segments can be deleted through this endpoint")
    session.execute(delete(SegmentMembership).where(SegmentMembership.segment_id == segment.id))
    session.delete(segment)
    session.flush()


def customer_count(session: Session, workspace_id: int, segment_id: int) -> int:
    get_segment(session, workspace_id, segment_id)
    return session.scalar(select(func.count()).where(SegmentMembership.segment_id == segment_id)) or 0


def change_membership(
    session: Session,
    workspace_id: int,
    segment_id: int,
    body: Any,
    *,
    id_type: str,
    add: bool,
    now: int,
    limits: Limits,
) -> int:
    """Add or remove people (named by ``id_type``) to a manual segment; unknown people are ignored."""
    if id_type not in IDENTIFIER_TYPES:
        raise InvalidInput("id_type must be id, email or cio_id", field="id_type")
    if not isinstance(body, dict) or not isinstance(body.get("ids"), list):
        raise InvalidInput('body must be {"ids": [...]}', field="ids")
    ids = body["ids"]
    if not 1 <= len(ids) <= limits.max_manual_segment_ids:
        raise InvalidInput(f"ids must hold 1 to {limits.max_manual_segment_ids} entries", field="ids")
    values = [str(v) for v in ids if isinstance(v, str | int) and not isinstance(v, bool)]
    segment = session.get(Segment, segment_id)
    if segment is None or segment.workspace_id != workspace_id:
        raise InvalidInput(f"segment {segment_id} does not exist", field="segment_id")
    if segment.type != "manual":
        raise InvalidInput(f"segment {segment_id} is not a manual segment", field="segment_id")
    column = {"id": Person.customer_id, "email": Person.email_key, "cio_id": Person.cio_id}[id_type]
    if id_type == "email":
        values = [email_key(v) for v in values]
    person_ids = list(
        session.scalars(select(Person.id).where(Person.workspace_id == workspace_id, column.in_(values)))
    )
    if not person_ids:
        return 0
    existing = set(
        session.scalars(
            select(SegmentMembership.person_id).where(
                SegmentMembership.segment_id == segment_id, SegmentMembership.person_id.in_(person_ids)
            )
        )
    )
    if add:
        for person_id in person_ids:
            if person_id not in existing:
                session.add(
                    SegmentMembership(
                        segment_id=segment_id, person_id=person_id, workspace_id=workspace_id, added_at=now
                    )
                )
        changed = len(set(person_ids) - existing)
    else:
        session.execute(
            delete(SegmentMembership).where(
                SegmentMembership.segment_id == segment_id, SegmentMembership.person_id.in_(existing)
            )
        )
        changed = len(existing)
    segment.updated_at = now
    session.flush()
    return changed

"""Segments: manual (Customer.io's) and data-driven (a ``conditions`` document, Tidings' extension):
create, edit, read, delete, membership reads, and manual membership changes from the Track API.

Saving a data-driven segment bumps the workspace's ``segments_version`` (so every process picks up the new
definition for real-time evaluation) and queues a bulk build (:mod:`tidings.segments.jobs`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.models import (
    Campaign,
    CampaignVersion,
    Person,
    Segment,
    SegmentMembership,
    SegmentTimer,
    Workspace,
)
from tidings.people.identifiers import IDENTIFIER_TYPES, email_key
from tidings.segments import jobs, realtime
from tidings.segments.conditions import ConditionError, Dependencies, dependencies, parse
from tidings.worker import queue
from tidings.workspaces import versions
from tidings.workspaces.limits import Limits

MAX_MEMBERSHIP_PAGE = 30000


def segment_view(segment: Segment) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": segment.id,
        "deduplicate_id": f"{segment.id}:{segment.updated_at}",
        "name": segment.name,
        "description": segment.description,
        "state": segment.state,
        "progress": segment.progress,
        "type": segment.type,
        "tags": segment.tags,
        "created_at": segment.created_at,
        "updated_at": segment.updated_at,
    }
    if segment.type == "dynamic":
        view["conditions"] = segment.conditions
    return view


def create_segment(session: Session, workspace_id: int, body: Any, *, now: int) -> dict[str, Any]:
    """``{"segment": {"name", "description", "tags", "conditions"?}}``: manual without conditions (as in
    Customer.io), data-driven with them."""
    spec = _spec(body)
    segment = Segment(
        workspace_id=workspace_id,
        name=_name(spec),
        description=_description(spec),
        type="manual",
        tags=_tags(spec),
        state="finished",
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    session.flush()
    if spec.get("conditions") is not None:
        _set_conditions(session, workspace_id, segment, spec["conditions"], now=now, first=True)
    session.flush()
    return segment_view(segment)


def update_segment(
    session: Session, workspace_id: int, segment_id: int, body: Any, *, now: int
) -> dict[str, Any]:
    """Change name, description, tags, and (data-driven segments) conditions, which queues a rebuild."""
    segment = get_segment(session, workspace_id, segment_id)
    spec = _spec(body, require_name=False)
    if "name" in spec:
        segment.name = _name(spec)
    if "description" in spec:
        segment.description = _description(spec)
    if "tags" in spec:
        segment.tags = _tags(spec)
    if spec.get("conditions") is not None:
        if segment.type == "manual":
            raise InvalidInput(
                f"segment {segment_id} is a manual segment; it cannot take conditions",
                field="segment.conditions",
            )
        if spec["conditions"] != segment.conditions:
            _set_conditions(session, workspace_id, segment, spec["conditions"], now=now, first=False)
    segment.updated_at = now
    session.flush()
    return segment_view(segment)


def _set_conditions(
    session: Session, workspace_id: int, segment: Segment, document: Any, *, now: int, first: bool
) -> None:
    condition = parse(document, "segment.conditions")
    deps = dependencies(condition)
    _check_references(session, workspace_id, segment.id, deps)
    segment.type = "dynamic"
    segment.conditions = document
    segment.generation = 1 if first else segment.generation + 1
    segment.state, segment.progress = "build_queued", 0
    _bump_version(session, workspace_id)
    session.flush()
    queue.enqueue(
        session,
        jobs.BUILD_JOB,
        run_at=now,
        now=now,
        workspace_id=workspace_id,
        payload={"segment_id": segment.id, "generation": segment.generation, "emit": not first},
    )


def _check_references(session: Session, workspace_id: int, segment_id: int, deps: Dependencies) -> None:
    """Every segment used must exist here, and none may use this one, directly or through others."""
    if not deps.segments:
        return
    rows = session.execute(
        select(Segment.id, Segment.type, Segment.conditions).where(Segment.workspace_id == workspace_id)
    ).all()
    uses = {
        row.id: dependencies(parse(row.conditions)).segments if row.type == "dynamic" else frozenset()
        for row in rows
    }
    for used in sorted(deps.segments):
        if used not in uses:
            raise ConditionError(
                f"segment.conditions: segment {used} does not exist", field="segment.conditions"
            )
    uses[segment_id] = deps.segments
    seen: set[int] = set()
    stack = list(deps.segments)
    while stack:
        current = stack.pop()
        if current == segment_id:
            raise ConditionError(
                "segment.conditions: the segment would depend on itself", field="segment.conditions"
            )
        if current not in seen:
            seen.add(current)
            stack.extend(uses.get(current, ()))


def _bump_version(session: Session, workspace_id: int) -> None:
    session.execute(
        update(Workspace)
        .where(Workspace.id == workspace_id)
        .values(segments_version=Workspace.segments_version + 1)
    )
    versions.forget(session, workspace_id)


def _spec(body: Any, *, require_name: bool = True) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("segment"), dict):
        raise InvalidInput('body must be {"segment": {"name": ...}}', field="segment")
    spec: dict[str, Any] = body["segment"]
    if require_name and "name" not in spec:
        raise InvalidInput("segment.name is required", field="segment.name")
    return spec


def _name(spec: dict[str, Any]) -> str:
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("segment.name must be a non-empty string", field="segment.name")
    return name.strip()


def _description(spec: dict[str, Any]) -> str:
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise InvalidInput("segment.description must be a string", field="segment.description")
    return description


def _tags(spec: dict[str, Any]) -> list[str] | None:
    tags = spec.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise InvalidInput("segment.tags must be a list of strings", field="segment.tags")
    return tags


def get_segment(session: Session, workspace_id: int, segment_id: int) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None or segment.workspace_id != workspace_id:
        raise NotFound(f"segment {segment_id} not found")
    return segment


def list_segments(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(Segment).where(Segment.workspace_id == workspace_id).order_by(Segment.id))
    return [segment_view(row) for row in rows]


def used_by(session: Session, workspace_id: int, segment_id: int) -> dict[str, list[dict[str, Any]]]:
    """What uses a segment: other segments' conditions, and campaigns and broadcasts that are not
    archived (their trigger, filters, goals and workflow conditions)."""
    get_segment(session, workspace_id, segment_id)
    rows = session.execute(
        select(Segment.id, Segment.name, Segment.conditions).where(
            Segment.workspace_id == workspace_id, Segment.type == "dynamic"
        )
    ).all()
    users = [
        {"id": row.id, "name": row.name}
        for row in rows
        if segment_id in dependencies(parse(row.conditions)).segments
    ]
    campaigns = session.execute(
        select(Campaign.id, Campaign.name, Campaign.kind, CampaignVersion.definition)
        .join(
            CampaignVersion,
            (CampaignVersion.campaign_id == Campaign.id) & (CampaignVersion.version == Campaign.version),
        )
        .where(Campaign.workspace_id == workspace_id, Campaign.state != "archived")
        .order_by(Campaign.id)
    ).all()
    used = [row for row in campaigns if segment_id in segments_named(row.definition)]
    return {
        "segments": users,
        "campaigns": [{"id": row.id, "name": row.name} for row in used if row.kind == "campaign"],
        "broadcasts": [{"id": row.id, "name": row.name} for row in used if row.kind == "broadcast"],
    }


def segments_named(document: Any) -> set[int]:
    """Segment ids a campaign definition names anywhere: its trigger and every condition in it."""
    found: set[int] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "segment_id" and isinstance(value, int):
                found.add(value)
            elif key == "segment" and isinstance(value, dict) and isinstance(value.get("id"), int):
                found.add(value["id"])
            else:
                found |= segments_named(value)
    elif isinstance(document, list):
        for item in document:
            found |= segments_named(item)
    return found


def delete_segment(session: Session, workspace_id: int, segment_id: int) -> None:
    """Delete a segment that nothing uses; otherwise refuse, naming the users."""
    segment = get_segment(session, workspace_id, segment_id)
    users = used_by(session, workspace_id, segment_id)
    if any(users.values()):
        names = ", ".join(
            f"{kind[:-1]} {u['id']} ({u['name']})" for kind, items in users.items() for u in items
        )
        raise Conflict(f"segment {segment_id} is used by {names}; remove those uses first")
    for table in (SegmentMembership, SegmentTimer):
        session.execute(delete(table).where(table.segment_id == segment.id))
    session.delete(segment)
    if segment.type == "dynamic":
        _bump_version(session, workspace_id)
    session.flush()


def customer_count(session: Session, workspace_id: int, segment_id: int) -> int:
    get_segment(session, workspace_id, segment_id)
    return session.scalar(select(func.count()).where(SegmentMembership.segment_id == segment_id)) or 0


def membership(
    session: Session, workspace_id: int, segment_id: int, *, start: str | None, limit: int
) -> dict[str, Any]:
    """A page of members in Customer.io's shape; ``next`` is an opaque cursor (the last person key)."""
    get_segment(session, workspace_id, segment_id)
    if not 1 <= limit <= MAX_MEMBERSHIP_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_MEMBERSHIP_PAGE}", field="limit")
    after = _cursor(start)
    rows = session.execute(
        select(Person.id, Person.customer_id, Person.email, Person.cio_id)
        .join(SegmentMembership, SegmentMembership.person_id == Person.id)
        .where(SegmentMembership.segment_id == segment_id, Person.id > after)
        .order_by(Person.id)
        .limit(limit + 1)
    ).all()
    page = rows[:limit]
    return {
        "identifiers": [
            {"id": r.customer_id or "", "email": r.email or "", "cio_id": r.cio_id} for r in page
        ],
        "ids": [r.customer_id or "" for r in page],
        "next": str(page[-1].id) if len(rows) > limit else "",
    }


def _cursor(start: str | None) -> int:
    if not start:
        return 0
    if not start.isdigit():
        raise InvalidInput("start is not a cursor this endpoint returned", field="start")
    return int(start)


def person_segments(session: Session, workspace_id: int, person_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Segment)
        .join(SegmentMembership, SegmentMembership.segment_id == Segment.id)
        .where(SegmentMembership.person_id == person_id, Segment.workspace_id == workspace_id)
        .order_by(Segment.id)
    )
    return [segment_view(row) for row in rows]


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
    # Locked (PostgreSQL) so that none of them is deleted before this commits: memberships have no
    # foreign key to people (see tidings.segments.realtime.lock_for_build).
    person_ids = list(
        session.scalars(
            select(Person.id)
            .where(Person.workspace_id == workspace_id, column.in_(values))
            .order_by(Person.id)
            .with_for_update(key_share=True)
        )
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
        moved = sorted(set(person_ids) - existing)
        for person_id in moved:
            session.add(
                SegmentMembership(
                    segment_id=segment_id, person_id=person_id, workspace_id=workspace_id, added_at=now
                )
            )
    else:
        moved = sorted(existing)
        session.execute(
            delete(SegmentMembership).where(
                SegmentMembership.segment_id == segment_id, SegmentMembership.person_id.in_(existing)
            )
        )
    realtime.record_manual(session, workspace_id, segment_id, moved, entered=add, now=now)
    segment.updated_at = now
    session.flush()
    return len(moved)

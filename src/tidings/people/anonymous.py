"""Anonymous ids: traits kept until identification, and earlier anonymous events merged into the person.

Customer.io merges anonymous events from the last 30 days into the person who is identified with that
``anonymous_id``; merged events may trigger campaigns only if they are at most 72 hours old.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings import signals
from tidings.models import AnonymousProfile, Event, Object, Person
from tidings.objects import service as objects
from tidings.people import activity
from tidings.workspaces.limits import Limits

TRIGGER_WINDOW_SECONDS = 72 * 3600
DAY = 86400


def profile(session: Session, workspace_id: int, anonymous_id: str, *, now: int) -> AnonymousProfile:
    found = session.scalars(
        select(AnonymousProfile).where(
            AnonymousProfile.workspace_id == workspace_id, AnonymousProfile.anonymous_id == anonymous_id
        )
    ).first()
    if found is None:
        found = AnonymousProfile(
            workspace_id=workspace_id,
            anonymous_id=anonymous_id,
            traits={},
            pending_relationships=[],
            created_at=now,
        )
        session.add(found)
        session.flush()
    return found


def linked_person_id(session: Session, workspace_id: int, anonymous_id: str) -> int | None:
    return session.scalar(
        select(AnonymousProfile.person_id).where(
            AnonymousProfile.workspace_id == workspace_id, AnonymousProfile.anonymous_id == anonymous_id
        )
    )


def remember_traits(
    session: Session, workspace_id: int, anonymous_id: str, traits: dict[str, Any], *, now: int
) -> None:
    found = profile(session, workspace_id, anonymous_id, now=now)
    found.traits = {**(found.traits or {}), **traits}


def relate_when_identified(
    session: Session,
    workspace_id: int,
    anonymous_id: str,
    obj: Object,
    attributes: dict[str, Any] | None,
    *,
    now: int,
    limits: Limits,
) -> None:
    """Relate ``obj`` to whoever is identified with ``anonymous_id`` — now if someone already is."""
    person_id = linked_person_id(session, workspace_id, anonymous_id)
    if person_id is not None:
        objects.relate(session, workspace_id, person_id, obj, attributes, now=now, limits=limits)
        return
    found = profile(session, workspace_id, anonymous_id, now=now)
    pending = [p for p in (found.pending_relationships or []) if p["object_pk"] != obj.id]
    found.pending_relationships = [*pending, {"object_pk": obj.id, "attributes": attributes or {}}]


def link(
    session: Session,
    person: Person,
    anonymous_id: str,
    *,
    now: int,
    limits: Limits,
    retention_days: int = 30,
) -> dict[str, Any]:
    """Attach ``anonymous_id`` to ``person``: merge its recent events and apply the relationships it
    declared. Return the traits the anonymous visitor had."""
    found = profile(session, person.workspace_id, anonymous_id, now=now)
    found.person_id = person.id
    found.linked_at = now
    pending = session.scalars(
        select(Event).where(
            Event.workspace_id == person.workspace_id,
            Event.anonymous_id == anonymous_id,
            Event.person_id.is_(None),
            Event.timestamp >= now - retention_days * DAY,
        )
    ).all()
    for event in pending:
        event.person_id = person.id
        event.can_trigger = event.can_trigger and event.timestamp >= now - TRIGGER_WINDOW_SECONDS
        activity.record(
            session,
            person.workspace_id,
            person.id,
            event.type if event.type in ("page", "screen") else "event",
            now=event.timestamp,
            name=event.name,
            data={
                "event_id": event.event_id,
                "anonymous_id": anonymous_id,
                "merged": True,
                **(event.data or {}),
            },
        )
        # A merged event still young enough may trigger campaigns, as it would have for a known person.
        signals.note(
            session,
            signals.EventRecorded(
                person.workspace_id,
                person.id,
                event.event_id,
                event.name,
                event.type,
                dict(event.data or {}),
                event.timestamp,
                event.can_trigger,
            ),
            now=now,
        )
    for pending_link in found.pending_relationships or []:
        obj = session.get(Object, pending_link["object_pk"])
        if obj is not None:
            objects.relate(
                session,
                person.workspace_id,
                person.id,
                obj,
                pending_link["attributes"],
                now=now,
                limits=limits,
            )
    found.pending_relationships = []
    session.flush()
    traits = dict(found.traits or {})
    found.traits = {}
    return traits

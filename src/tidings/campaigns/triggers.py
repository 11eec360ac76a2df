"""Campaign triggers: what ingestion noted in a transaction (see tidings.signals) becomes journeys, in
the same transaction, just before it commits.

- an event (at most 72 hours old) starts the campaigns it triggers when its data passes their filters;
- a segment entry or exit, an attribute change, a relationship added or removed start theirs;
- journeys waiting for that event are woken (the engine checks their match keys), and journeys waiting on
  a condition are woken by any change to their person, to look again;
- an event that is a campaign's goal, or a change that meets a goal condition, converts the person's
  journeys whose last message is in the window;
- leaving a segment wakes journeys whose campaign exits people who leave it.

Nothing is evaluated here beyond that: a triggered journey is a row, due now; the engine checks entry
filters and re-entry rules when it claims it (milliseconds later). The live campaigns of a workspace are
cached per process and reloaded when ``workspaces.campaigns_version`` moves.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from tidings import signals
from tidings.campaigns import timers
from tidings.campaigns.definition import Definition, event_matches
from tidings.journeys.engine import convert, definition_of
from tidings.models import Campaign, Journey, Object, Relationship, Workspace
from tidings.segments.search import holds
from tidings.worker import wake
from tidings.workspaces import versions

LIVE = ("active", "paused")


@dataclass(frozen=True)
class Live:
    campaign_id: int
    version: int
    trigger: dict[str, Any]


@dataclass
class Index:
    version: int
    # Whether the workspace has any campaign that can hold journeys (else nothing here costs a query).
    any: bool = False
    events: dict[tuple[str, str], list[Live]] = field(default_factory=lambda: defaultdict(list))
    segments: dict[int, list[Live]] = field(default_factory=lambda: defaultdict(list))
    attributes: dict[str, list[Live]] = field(default_factory=lambda: defaultdict(list))
    relationships: dict[str, list[Live]] = field(default_factory=lambda: defaultdict(list))
    objects: dict[str, list[Live]] = field(default_factory=lambda: defaultdict(list))
    # Date-attribute triggers: a change of the attribute moves the person's timer.
    dates: dict[str, list[Live]] = field(default_factory=lambda: defaultdict(list))
    goal_events: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    # Campaigns whose goal is a condition: campaign id → (condition, window).
    goal_conditions: dict[int, tuple[Any, int]] = field(default_factory=dict)
    leave_exits: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))


_cache: dict[tuple[str, int], Index] = {}
_lock = threading.Lock()


def index(session: Session, workspace_id: int) -> Index:
    _, version = versions.read(session, workspace_id)
    key = (str(session.get_bind().engine.url), workspace_id)
    found = _cache.get(key)
    if found is not None and found.version == version:
        return found
    found = _load(session, workspace_id, version)
    with _lock:
        _cache[key] = found
    return found


def _load(session: Session, workspace_id: int, version: int) -> Index:

    built = Index(version)
    rows = session.execute(
        select(Campaign.id, Campaign.version, Campaign.state).where(
            Campaign.workspace_id == workspace_id, Campaign.state.in_(LIVE)
        )
    ).all()
    built.any = bool(rows)
    for campaign_id, current, state in rows:
        definition: Definition = definition_of(session, campaign_id, current)
        goal = definition.goal
        if goal is not None and "event" in goal:
            built.goal_events[goal["event"]].append((campaign_id, goal["within"]))
        elif goal is not None:
            built.goal_conditions[campaign_id] = (goal["condition"], goal["within"])
        if definition.exit["on_leave_segment"]:
            built.leave_exits[definition.trigger["segment_id"]].append(campaign_id)
        if state != "active":
            continue  # paused: journeys hold, nobody new enters
        live = Live(campaign_id, current, definition.trigger)
        trigger = definition.trigger
        kind = trigger["type"]
        if kind == "event":
            built.events[(trigger["event_type"], trigger["event"])].append(live)
        elif kind == "segment":
            built.segments[trigger["segment_id"]].append(live)
        elif kind == "attribute":
            built.attributes[trigger["attribute"]].append(live)
        elif kind == "relationship":
            built.relationships[trigger["object_type_id"]].append(live)
        elif kind == "object":
            built.objects[trigger["object_type_id"]].append(live)
        elif kind == "date":
            built.dates[trigger["attribute"]].append(live)
    return built


def bump(session: Session, workspace_id: int) -> None:
    """A campaign changed state or workflow: every process reloads the workspace's index."""
    session.execute(
        update(Workspace)
        .where(Workspace.id == workspace_id)
        .values(campaigns_version=Workspace.campaigns_version + 1)
    )
    versions.forget(session, workspace_id)


def _attribute_matches(live: Live, change: dict[str, Any]) -> bool:
    trigger = live.trigger
    if "from" in trigger and change.get("from") != trigger["from"]:
        return False
    return not ("to" in trigger and change.get("to") != trigger["to"])


@signals.react
def react(session: Session, notes: list[signals.Signal], now: int) -> None:
    by_workspace: dict[int, list[signals.Signal]] = defaultdict(list)
    for note in notes:
        by_workspace[note.workspace_id].append(note)
    for workspace_id, items in by_workspace.items():
        found = index(session, workspace_id)
        if found.any:
            _react(session, workspace_id, found, items, now)


def _react(session: Session, workspace_id: int, found: Index, notes: list[signals.Signal], now: int) -> None:
    starts: list[dict[str, Any]] = []
    changed: set[int] = set()
    events: list[signals.EventRecorded] = []

    def start(live: Live, person_id: int, trigger: dict[str, Any]) -> None:
        starts.append(
            {
                "workspace_id": workspace_id,
                "campaign_id": live.campaign_id,
                "version": live.version,
                "person_id": person_id,
                "state": "pending",
                "due_at": now,
                "trigger": trigger,
                "attributes": {},
                "steps": 0,
                "created_at": now,
            }
        )

    for note in notes:
        if isinstance(note, signals.EventRecorded):
            changed.add(note.person_id)
            events.append(note)
            if note.can_trigger:
                event = {
                    "id": note.event_id,
                    "name": note.name,
                    "type": note.type,
                    "data": note.data,
                    "timestamp": note.timestamp,
                }
                for live in found.events.get((note.type, note.name), ()):
                    if event_matches(live.trigger["filters"], note.data):
                        start(live, note.person_id, {"event": event})
        elif isinstance(note, signals.AttributesChanged):
            changed.add(note.person_id)
            for name, change in note.changes.items():
                for live in found.attributes.get(name, ()):
                    if _attribute_matches(live, change):
                        start(live, note.person_id, {"data": {"attribute": name, **change}})
                for live in found.dates.get(name, ()):
                    timers.set_timer(
                        session,
                        workspace_id,
                        live.campaign_id,
                        live.trigger,
                        note.person_id,
                        change.get("to"),
                        now,
                    )
        elif isinstance(note, signals.SegmentMoved):
            changed.add(note.person_id)
            for live in found.segments.get(note.segment_id, ()):
                if (live.trigger["on"] == "entered") == note.entered:
                    start(live, note.person_id, {"data": {"segment_id": note.segment_id}})
            exiting = found.leave_exits.get(note.segment_id)
            if exiting and not note.entered:
                # The engine sees they left and ends the journeys (logged, counted).
                session.execute(
                    update(Journey)
                    .where(
                        Journey.person_id == note.person_id,
                        Journey.campaign_id.in_(exiting),
                        Journey.state.in_(("active", "waiting")),
                    )
                    .values(due_at=now)
                )
                wake.soon(session)
        elif isinstance(note, signals.RelationshipChanged):
            changed.add(note.person_id)
            for live in found.relationships.get(note.object_type_id, ()):
                if (live.trigger["on"] == "added") == note.added:
                    obj = {"object_type_id": note.object_type_id, "object_id": note.object_id}
                    start(live, note.person_id, {"object": obj, "data": obj})
        elif isinstance(note, signals.ObjectChanged):
            for live in found.objects.get(note.object_type_id, ()):
                wanted = live.trigger["on"]
                attribute = live.trigger.get("attribute")
                if (wanted == "created") != note.created or (
                    attribute is not None and attribute not in note.changes
                ):
                    continue
                obj = {"object_type_id": note.object_type_id, "object_id": note.object_id}
                for person_id in _related_people(session, workspace_id, note.object_type_id, note.object_id):
                    start(live, person_id, {"object": obj, "data": {**obj, "changes": note.changes}})
    if starts:
        session.execute(insert(Journey), starts)
        wake.soon(session)
    for recorded in events:
        _deliver_event(session, found, recorded, now)
    if changed and found.goal_conditions:
        _condition_goals(session, workspace_id, found, sorted(changed), now)
    if changed:
        # Journeys waiting on a condition look again (their person changed).
        result = session.execute(
            update(Journey)
            .where(Journey.person_id.in_(sorted(changed)), Journey.wake_on == "change")
            .values(due_at=now)
        )
        if getattr(result, "rowcount", 0):
            wake.soon(session)


def _condition_goals(session: Session, workspace_id: int, found: Index, people: list[int], now: int) -> None:
    """A change may meet a campaign's goal condition: convert the person's journeys whose last message
    is inside the goal's window (running or finished)."""
    journeys = list(
        session.scalars(
            select(Journey).where(
                Journey.person_id.in_(people),
                Journey.campaign_id.in_(sorted(found.goal_conditions)),
                Journey.converted_at.is_(None),
                Journey.last_sent_at.is_not(None),
            )
        )
    )
    for journey in journeys:
        condition, within = found.goal_conditions[journey.campaign_id]
        if journey.person_id is None or (journey.last_sent_at or 0) < now - within:
            continue
        if holds(session, workspace_id, condition, [journey.person_id], now=now):
            convert(session, journey, now)
            if journey.state in ("active", "waiting"):
                journey.due_at = now  # exits on the goal, if the campaign says so
                wake.soon(session)


def _related_people(session: Session, workspace_id: int, type_id: str, object_id: str) -> list[int]:
    return list(
        session.scalars(
            select(Relationship.person_id)
            .join(Object, Object.id == Relationship.object_pk)
            .where(
                Object.workspace_id == workspace_id, Object.type_id == type_id, Object.object_id == object_id
            )
        )
    )


def _deliver_event(session: Session, found: Index, event: signals.EventRecorded, now: int) -> None:
    """Wake the person's journeys waiting for this event, and count it toward goals."""
    waiting = list(
        session.scalars(
            select(Journey).where(Journey.person_id == event.person_id, Journey.wake_on == event.name)
        )
    )
    for journey in waiting:
        expected = (journey.wait or {}).get("match") or {}
        if all(str(event.data.get(key)) == str(value) for key, value in expected.items()):
            journey.woken_by = {"id": event.event_id, "name": event.name, "data": event.data}
            journey.due_at = now
            wake.soon(session)
    goals = found.goal_events.get(event.name)
    if not goals:
        return

    for campaign_id, within in goals:
        journeys = session.scalars(
            select(Journey).where(
                Journey.person_id == event.person_id,
                Journey.campaign_id == campaign_id,
                Journey.converted_at.is_(None),
                Journey.last_sent_at >= now - within,
            )
        )
        for journey in journeys:
            convert(session, journey, now)
            if journey.due_at is None or journey.due_at > now:
                journey.due_at = now if journey.state in ("active", "waiting") else journey.due_at
                wake.soon(session)

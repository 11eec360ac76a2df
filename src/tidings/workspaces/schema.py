"""What data a workspace holds: the attributes and events seen, with their types and a few examples, so
an agent (or a person) can write filters that match real data. A sample of the most recently changed
people and the most recent events is read, so the answer costs the same on any workspace size."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.ai import data_index
from tidings.models import Event, Person

PEOPLE_SAMPLE = 2000
EVENTS_SAMPLE = 5000
EXAMPLES = 3


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string" if value is not None else "null"


def _note(found: dict[str, dict[str, Any]], name: str, value: Any) -> None:
    entry = found.setdefault(name, {"types": set(), "examples": [], "seen": 0})
    entry["seen"] += 1
    entry["types"].add(_type(value))
    if len(entry["examples"]) < EXAMPLES and value not in entry["examples"] and len(str(value)) <= 80:
        entry["examples"].append(value)


def _finish(found: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": name, **entry, "types": sorted(entry["types"])} for name, entry in sorted(found.items())]


def describe(session: Session, workspace_id: int) -> dict[str, Any]:
    attributes: dict[str, dict[str, Any]] = {}
    for values in session.scalars(
        select(Person.attributes)
        .where(Person.workspace_id == workspace_id)
        .order_by(Person.updated_at.desc())
        .limit(PEOPLE_SAMPLE)
    ):
        for name, value in (values or {}).items():
            _note(attributes, name, value)
    described = {entry["name"]: entry for entry in data_index.attributes(session, workspace_id)}
    people = _finish(attributes)
    for entry in people:
        if entry["name"] in described:
            entry["description"] = described[entry["name"]]["description"]
    events: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, name, data in session.execute(
        select(Event.type, Event.name, Event.data)
        .where(Event.workspace_id == workspace_id)
        .order_by(Event.id.desc())
        .limit(EVENTS_SAMPLE)
    ):
        entry = events.setdefault((kind, name), {"seen": 0, "data": {}})
        entry["seen"] += 1
        for key, value in (data or {}).items():
            _note(entry["data"], key, value)
    return {
        "attributes": people,
        "events": [
            {"type": kind, "name": name, "seen": entry["seen"], "data": _finish(entry["data"])}
            for (kind, name), entry in sorted(events.items())
        ],
        "sampled": {"people": PEOPLE_SAMPLE, "events": EVENTS_SAMPLE},
    }

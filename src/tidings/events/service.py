"""Events: person events, anonymous and invite events, page and screen views, form submissions."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from tidings import signals
from tidings.db.bulk import insert_new
from tidings.errors import InvalidInput
from tidings.ids import new_ulid
from tidings.models import Event, Form
from tidings.people import activity, anonymous
from tidings.people import service as people
from tidings.people.attributes import byte_len, check_identifier
from tidings.people.identifiers import Identifier, find_person_ids, refuse_suppressed
from tidings.segments import realtime
from tidings.workspaces.limits import Limits
from tidings.workspaces.schemas import WorkspaceContext

EVENT_TYPES = frozenset({"event", "page", "screen"})
TRIGGER_WINDOW_SECONDS = anonymous.TRIGGER_WINDOW_SECONDS


@dataclass(frozen=True)
class EventInput:
    name: str
    type: str = "event"
    event_id: str | None = None
    timestamp: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


def parse_event(body: Any, limits: Limits, *, data_key: str = "data") -> EventInput:
    """Validate a Track event body (``name``, ``type``, ``id``, ``timestamp``, ``data``)."""
    if not isinstance(body, dict):
        raise InvalidInput("event must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name is required", field="name")
    name = name.strip()
    if byte_len(name) > limits.max_event_name_bytes:
        raise InvalidInput(f"name is longer than {limits.max_event_name_bytes} bytes", field="name")
    type_ = body.get("type") or "event"
    if type_ not in EVENT_TYPES:
        raise InvalidInput("type must be event, page or screen", field="type")
    event_id = body.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not event_id or byte_len(event_id) > 150):
        raise InvalidInput("id must be a non-empty string (a ULID)", field="id")
    timestamp = people.as_unix(body.get("timestamp"), "timestamp")
    data = body.get(data_key)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{data_key} must be an object", field=data_key)
    check_event_data(data, limits, field_name=data_key)
    return EventInput(name=name, type=type_, event_id=event_id, timestamp=timestamp, data=data)


def check_event_data(data: dict[str, Any], limits: Limits, *, field_name: str = "data") -> None:
    size = len(orjson.dumps(data))
    if size > limits.max_event_data_bytes:
        raise InvalidInput(
            f"{field_name} is {size} bytes, more than {limits.max_event_data_bytes}", field=field_name
        )


# RETURNING rather than rowcount: psycopg reports -1 for ON CONFLICT DO NOTHING.
_EVENTS = cast(Table, Event.__table__)
_DEDUP = ("workspace_id", "event_id")


def _insert_event(session: Session, values: dict[str, Any]) -> bool:
    """Insert unless an event with the same id was seen (ULID dedup). True when inserted."""
    return bool(insert_new(session, _EVENTS, [values], unique=_DEDUP, returning="id"))


def _event_row(
    workspace_id: int,
    person_id: int | None,
    event: EventInput,
    *,
    now: int,
    source: str,
    anonymous_id: str | None = None,
    type_: str | None = None,
) -> dict[str, Any]:
    """The ``events`` row of an event (a new ULID when the client sent no id)."""
    timestamp = event.timestamp if event.timestamp is not None else now
    return {
        "workspace_id": workspace_id,
        "event_id": event.event_id or new_ulid(),
        "person_id": person_id,
        "anonymous_id": anonymous_id,
        "type": type_ or event.type,
        "name": event.name,
        "data": event.data,
        "timestamp": timestamp,
        "received_at": now,
        "can_trigger": timestamp >= now - TRIGGER_WINDOW_SECONDS,
        "source": source,
    }


def track_person_event(
    session: Session,
    ws: WorkspaceContext,
    ident: Identifier,
    event: EventInput,
    *,
    now: int,
    source: str = "track",
) -> bool:
    """Record an event for a person (creating them when the id or email is new)."""
    person_id = people.ensure_person_id(session, ws, ident, now=now)
    if person_id is None:
        return False
    row = _event_row(ws.workspace_id, person_id, event, now=now, source=source)
    event_id, timestamp = row["event_id"], row["timestamp"]
    inserted = _insert_event(session, row)
    if inserted:
        activity.record(
            session,
            ws.workspace_id,
            person_id,
            event.type,
            now=timestamp,
            name=event.name,
            data={"event_id": event_id, **event.data},
        )
        realtime.touched(session, ws.workspace_id, [person_id], [event_key(event)], now=now)
        _note(session, ws.workspace_id, person_id, event_id, event, timestamp, now=now)
    return inserted


@dataclass(frozen=True)
class PersonEvent:
    """One person event, checked and ready: applied alone by calling it, or with its neighbours in a
    batch by :func:`track_person_events`."""

    ws: WorkspaceContext
    ident: Identifier
    event: EventInput
    now: int
    source: str = "track"

    def __call__(self, session: Session) -> bool:
        return track_person_event(session, self.ws, self.ident, self.event, now=self.now, source=self.source)

    @property
    def group_key(self) -> Hashable:
        return ("person_event", self.ws.workspace_id)

    @staticmethod
    def apply_group(session: Session, units: Sequence[PersonEvent]) -> list[bool]:
        return track_person_events(session, units)


def track_person_events(session: Session, items: Sequence[PersonEvent]) -> list[bool]:
    """Person events of one workspace, with the effects of :func:`track_person_event` for each, in a
    constant number of statements: one lookup of everyone named, one creation of the people named for the
    first time, one insert of the events, one of their activities. Returns, for each, whether it was
    recorded (not a repeated id, not an unknown cio_id)."""
    recorded = [False] * len(items)
    if not items:
        return recorded
    ws = items[0].ws
    found = find_person_ids(session, ws.workspace_id, (item.ident for item in items))
    unknown: dict[tuple[str, str], tuple[Identifier, int]] = {}
    for item in items:
        if item.ident not in found:
            unknown.setdefault(people.ident_key(item.ident), (item.ident, item.now))
    if unknown:
        refuse_suppressed(session, ws.workspace_id, [ident for ident, _ in unknown.values()])
        # An unknown cio_id names nobody and is never created: its events are not recorded.
        new = {named: first for named, first in unknown.items() if first[0].type != "cio_id"}
        created = people.create_named_all(session, ws, list(new.values()))
        by_key = {named: person.id for named, person in zip(new, created, strict=True)}
        for item in items:
            if item.ident not in found and (named := people.ident_key(item.ident)) in by_key:
                found[item.ident] = by_key[named]
    rows: list[dict[str, Any]] = []
    kept: list[tuple[int, PersonEvent, int, str, int]] = []
    for place, item in enumerate(items):
        person_id = found.get(item.ident)
        if person_id is None:
            continue
        row = _event_row(ws.workspace_id, person_id, item.event, now=item.now, source=item.source)
        rows.append(row)
        kept.append((place, item, person_id, row["event_id"], row["timestamp"]))
    if not rows:
        return recorded
    # Many rows in one statement; the ids returned are the events inserted.
    inserted = set(insert_new(session, _EVENTS, rows, unique=_DEDUP, returning="event_id"))
    entries: list[tuple[int | None, str, int, dict[str, Any], str]] = []
    touched: dict[str, list[int]] = {}
    now = max(item.now for item in items)
    for place, item, person_id, event_id, timestamp in kept:
        if event_id not in inserted:
            continue
        inserted.discard(event_id)  # an id sent twice in one batch is one event
        recorded[place] = True
        event = item.event
        entries.append((person_id, event.type, timestamp, {"event_id": event_id, **event.data}, event.name))
        touched.setdefault(event_key(event), []).append(person_id)
        _note(session, ws.workspace_id, person_id, event_id, event, timestamp, now=item.now)
    activity.record_many(session, ws.workspace_id, entries)
    for key, person_ids in touched.items():
        realtime.touched(session, ws.workspace_id, person_ids, [key], now=now)
    return recorded


def _note(
    session: Session,
    workspace_id: int,
    person_id: int,
    event_id: str,
    event: EventInput,
    timestamp: int,
    *,
    now: int,
) -> None:
    """Tell campaigns (triggers, journeys waiting for this event, goals)."""
    signals.note(
        session,
        signals.EventRecorded(
            workspace_id,
            person_id,
            event_id,
            event.name,
            event.type,
            event.data,
            timestamp,
            timestamp >= now - TRIGGER_WINDOW_SECONDS,
        ),
        now=now,
    )


def event_key(event: EventInput) -> str:
    """The dependency key segments looking at this event listen on (see tidings.segments.conditions)."""
    return f"event:{event.type}:{event.name}"


def track_anonymous_event(
    session: Session,
    ws: WorkspaceContext,
    anonymous_id: str | None,
    event: EventInput,
    *,
    now: int,
    source: str = "track",
) -> bool:
    """An event with an ``anonymous_id`` waits to be merged into a person (or goes straight to the person
    already linked to it). Without one it is an invite event, addressed by ``data.recipient``."""
    person_id = None
    if anonymous_id:
        check_identifier(anonymous_id, ws.settings.limits, field_name="anonymous_id")
        person_id = anonymous.linked_person_id(session, ws.workspace_id, anonymous_id)
        if person_id is None:
            anonymous.profile(session, ws.workspace_id, anonymous_id, now=now)
    row = _event_row(
        ws.workspace_id,
        person_id,
        event,
        now=now,
        source=source,
        anonymous_id=anonymous_id or None,
        type_=None if anonymous_id else "invite",
    )
    event_id, timestamp = row["event_id"], row["timestamp"]
    inserted = _insert_event(session, row)
    if inserted and person_id is not None:
        activity.record(
            session,
            ws.workspace_id,
            person_id,
            event.type,
            now=timestamp,
            name=event.name,
            data={"event_id": event_id, "anonymous_id": anonymous_id, **event.data},
        )
        realtime.touched(session, ws.workspace_id, [person_id], [event_key(event)], now=now)
        _note(session, ws.workspace_id, person_id, event_id, event, timestamp, now=now)
    return inserted


FORM_RESERVED = frozenset({"form_id", "form_name", "form_type", "form_url", "form_url_param"})


def submit_form(session: Session, ws: WorkspaceContext, form_id: str, body: Any, *, now: int) -> None:
    """A form submission identifies (or creates) the person by its email or id field, sets the other
    fields as attributes, and is recorded as a ``form`` event that campaigns can trigger on."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise InvalidInput('body must be {"data": {...}}', field="data")
    data: dict[str, Any] = body["data"]
    for key, value in data.items():
        if not isinstance(value, str):
            raise InvalidInput(f"data.{key} must be a string", field=f"data.{key}")
    email, customer_id = data.get("email"), data.get("id")
    if bool(email) == bool(customer_id):
        raise InvalidInput("data must hold exactly one of email or id", field="data")
    ident = Identifier("email", email) if email else Identifier("id", customer_id or "")
    fields = {k: v for k, v in data.items() if k not in FORM_RESERVED and k not in ("email", "id")}
    ref = people.identify(session, ws, ident, fields, now=now)
    form = session.scalars(
        select(Form).where(Form.workspace_id == ws.workspace_id, Form.form_id == form_id)
    ).first()
    if form is None:
        form = Form(
            workspace_id=ws.workspace_id,
            form_id=form_id,
            name=data.get("form_name") or form_id,
            submissions=0,
            created_at=now,
        )
        session.add(form)
    form.submissions += 1
    if ref is not None:
        _insert_event(
            session,
            {
                "workspace_id": ws.workspace_id,
                "event_id": new_ulid(),
                "person_id": ref.person_id,
                "anonymous_id": None,
                "type": "form",
                "name": form_id,
                "data": data,
                "timestamp": now,
                "received_at": now,
                "can_trigger": True,
                "source": "forms",
            },
        )
        activity.record(
            session, ws.workspace_id, ref.person_id, "form_submit", now=now, name=form_id, data=data
        )
        _note(
            session,
            ws.workspace_id,
            ref.person_id,
            new_ulid(),
            EventInput(form_id, "form", data=data),
            now,
            now=now,
        )
    session.flush()

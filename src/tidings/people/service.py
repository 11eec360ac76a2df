"""People: identify, delete, suppress, devices and merge — the semantics of Customer.io's Track API."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session, make_transient_to_detached

from tidings import signals
from tidings.db.bulk import insert_returning, update_rows
from tidings.errors import InvalidInput
from tidings.ids import new_cio_id, new_ulid
from tidings.models import (
    Activity,
    AnonymousProfile,
    CampaignEntry,
    Delivery,
    Device,
    Event,
    Journey,
    JourneyStep,
    Person,
    PersonRow,
    Relationship,
    Segment,
    SegmentMembership,
    SegmentTimer,
    Suppression,
)
from tidings.objects import service as objects
from tidings.people import activity, anonymous
from tidings.people.attributes import apply_attributes, check_attributes, check_identifier, truthy
from tidings.people.identifiers import (
    Identifier,
    email_key,
    find_people,
    find_person,
    find_person_id,
    find_person_ids,
    identifiers_of,
    refuse_suppressed,
    suppression_value,
)
from tidings.segments import realtime
from tidings.webhooks import service as webhooks
from tidings.workspaces.schemas import WorkspaceContext

# Keys of an identify body that are not plain custom attributes.
SPECIAL_KEYS = frozenset(
    {
        "id",
        "email",
        "cio_id",
        "created_at",
        "anonymous_id",
        "_update",
        "_timestamp",
        "unsubscribed",
        "cio_subscription_preferences",
        "cio_relationships",
    }
)
_PEOPLE: Table = Person.__table__  # type: ignore[assignment]
# Every column a new person is written with (the key comes back from the INSERT).
_PERSON_COLUMNS = tuple(column.key for column in _PEOPLE.columns if column.key != "id")
# What an identify may change on a stored person.
_UPDATED_COLUMNS = tuple(name for name in _PERSON_COLUMNS if name not in ("workspace_id", "cio_id"))
# Read as plain rows (see PersonRow), not as ORM instances.
_PEOPLE_BY_ID = select(*_PEOPLE.columns).where(_PEOPLE.c.id.in_(bindparam("ids", expanding=True)))
DEVICE_PLATFORMS = frozenset({"ios", "android"})
# Push tokens are at most a few hundred bytes (APNs 64 hex characters, FCM about 160).
MAX_DEVICE_TOKEN_BYTES = 1000
# Year 5138: anything larger is milliseconds or garbage, not seconds.
MAX_UNIX_SECONDS = 10**11
DAY = 86400


@dataclass(frozen=True)
class PersonRef:
    person_id: int
    created: bool


def as_id(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    return value


def as_unix(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a unix timestamp in seconds", field=field)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise InvalidInput(f"{field} must be a unix timestamp in seconds", field=field)
    if abs(value) > MAX_UNIX_SECONDS:
        raise InvalidInput(f"{field} is out of range for a unix timestamp in seconds", field=field)
    return value


@dataclass(frozen=True)
class _IdentifyRequest:
    """An identify call, checked: what it names and what it sets."""

    ident: Identifier
    body: Mapping[str, Any]
    attrs: dict[str, Any]
    update_only: bool
    stamp: int | None
    new_id: str | None
    new_email: str | None
    created_at: int | None
    prefs: dict[str, Any] | None
    anonymous_id: str | None
    relationships: Any
    relationship_action: str
    # Identifiers in the body naming someone other than the path identifier might.
    body_idents: list[Identifier]

    @property
    def idents(self) -> list[Identifier]:
        return [self.ident, *self.body_idents]

    @property
    def plain_creation(self) -> bool:
        """Whether creating the person needs nothing beyond the person row and its attributes (no
        anonymous merge, relationships, subscription reports or conditional update)."""
        return (
            self.ident.type != "cio_id"
            and not self.update_only
            and self.anonymous_id is None
            and self.relationships is None
            and self.prefs is None
            and "unsubscribed" not in self.body
        )


def _read_identify(
    ws: WorkspaceContext,
    ident: Identifier,
    body: Mapping[str, Any],
    *,
    timestamp: int | None,
    relationships: Any,
    relationship_action: str,
    update_only: bool,
) -> _IdentifyRequest:
    limits = ws.settings.limits
    attrs = {key: value for key, value in body.items() if key not in SPECIAL_KEYS}
    update_only = update_only or truthy(body.get("_update"))
    stamp = as_unix(body.get("_timestamp"), "_timestamp")
    if stamp is None:
        stamp = timestamp
    new_id = as_id(body.get("id"), "id")
    new_email = as_id(body.get("email"), "email")
    created_at = as_unix(body.get("created_at"), "created_at")
    check_identifier(ident.value, limits, field_name="identifier")
    if new_id is not None:
        check_identifier(new_id, limits, field_name="id")
    check_attributes(attrs, limits)
    prefs = body.get("cio_subscription_preferences")
    if prefs is not None and not isinstance(prefs, dict):
        raise InvalidInput(
            "cio_subscription_preferences must be an object", field="cio_subscription_preferences"
        )
    anonymous_id = as_id(body.get("anonymous_id"), "anonymous_id")
    if relationships is None and body.get("cio_relationships") is not None:
        relationships, relationship_action = _v1_relationships(body["cio_relationships"])
    body_idents = [Identifier("id", new_id)] if new_id and ident.type != "id" else []
    if new_email and (ident.type != "email" or email_key(new_email) != email_key(ident.value)):
        body_idents.append(Identifier("email", new_email))
    return _IdentifyRequest(
        ident,
        body,
        attrs,
        update_only,
        stamp,
        new_id,
        new_email,
        created_at,
        prefs,
        anonymous_id,
        relationships,
        relationship_action,
        body_idents,
    )


def identify(
    session: Session,
    ws: WorkspaceContext,
    ident: Identifier,
    body: Mapping[str, Any],
    *,
    now: int,
    timestamp: int | None = None,
    relationships: Any = None,
    relationship_action: str = "add_relationships",
    update_only: bool = False,
) -> PersonRef | None:
    """Create or update a person. Returns None when the call is dropped (unknown cio_id, or ``_update``
    for nobody); conflicting identifiers are logged as an "Attribute Update Failure" activity."""
    request = _read_identify(
        ws,
        ident,
        body,
        timestamp=timestamp,
        relationships=relationships,
        relationship_action=relationship_action,
        update_only=update_only,
    )
    return _identify(session, ws, request, now=now)


def _identify(
    session: Session, ws: WorkspaceContext, request: _IdentifyRequest, *, now: int
) -> PersonRef | None:
    ident, body_idents = request.ident, request.body_idents
    found = find_people(session, ws.workspace_id, request.idents)
    refuse_suppressed(session, ws.workspace_id, [i for i in request.idents if i not in found])
    person = found.get(ident)
    others = {found[i].id: found[i] for i in body_idents if i in found}
    created = False
    if person is None:
        if ident.type == "cio_id":
            return None
        if others:
            # Path identifier unknown, a body identifier known: that person takes the path identifier.
            person = next(iter(others.values()))
            others.pop(person.id)
            _set_identifier(person, ident)
        elif request.update_only:
            activity.record(
                session,
                ws.workspace_id,
                None,
                "failed_attribute_change",
                now=now,
                data={"reason": f"no person with {ident}", "identifiers": {ident.type: ident.value}},
            )
            return None
        else:
            person = _new_person(ws, request, now=now).to_person()
            session.add(person)
            created = True
    conflicting = [other for other in others.values() if other.id != person.id]
    if conflicting:
        activity.record(
            session,
            ws.workspace_id,
            person.id,
            "failed_attribute_change",
            now=now,
            data={
                "reason": "identifiers belong to different people",
                "identifiers": {i.type: i.value for i in body_idents},
                "conflicting_cio_ids": [other.cio_id for other in conflicting],
            },
        )
        return PersonRef(person.id, created)

    anonymous_traits: dict[str, Any] = {}
    if request.anonymous_id is not None:
        session.flush()
        anonymous_traits = anonymous.link(
            session, person, request.anonymous_id, now=now, limits=ws.settings.limits
        )
    changes = _apply_identify(person, request, ws, now=now, anonymous_traits=anonymous_traits)
    if "unsubscribed" in changes or "cio_subscription_preferences" in changes:
        _report_subscription(session, ws.workspace_id, person, changes, now=now)
    if created or changes:
        session.flush()
        activity.record(
            session,
            ws.workspace_id,
            person.id,
            "attribute_change",
            now=now,
            data={"created": created, "changes": changes},
        )
    session.flush()
    if created or changes:
        signals.note(
            session, signals.AttributesChanged(ws.workspace_id, person.id, changes, created), now=now
        )
    keys = _changed_keys(changes, created)
    if request.anonymous_id is not None:
        # The anonymous id's earlier events, now the person's, may match anything.
        keys.append(realtime.EVERYTHING)
    if keys:
        realtime.touched(session, ws.workspace_id, [person.id], keys, now=now)
    if request.relationships is not None:
        objects.apply_person_relationships(
            session,
            ws.workspace_id,
            person.id,
            request.relationships,
            action=request.relationship_action,
            now=now,
            limits=ws.settings.limits,
        )
    return PersonRef(person.id, created)


def _new_person(ws: WorkspaceContext, request: _IdentifyRequest, *, now: int) -> PersonRow:
    """The person an identify creates, not yet stored: its attributes are set before the INSERT."""
    ident = request.ident
    email = ident.value if ident.type == "email" else None
    return PersonRow(
        workspace_id=ws.workspace_id,
        cio_id=new_cio_id(),
        customer_id=ident.value if ident.type == "id" else None,
        email=email,
        email_key=email_key(email) if email else None,
        created_at=request.created_at or now,
        updated_at=request.created_at or now,
        unsubscribed=False,
        attributes={},
        attribute_timestamps={},
        subscription_preferences={},
    )


def _apply_identify(
    person: Person | PersonRow,
    request: _IdentifyRequest,
    ws: WorkspaceContext,
    *,
    now: int,
    anonymous_traits: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Set what the call sets on ``person``; return the changes, as the activity log shows them."""
    stamp, body = request.stamp, request.body
    changes: dict[str, dict[str, Any]] = {}
    if request.new_id is not None and request.ident.type != "id" and person.customer_id != request.new_id:
        changes["id"] = {"from": person.customer_id, "to": request.new_id}
        person.customer_id = request.new_id
    if request.new_email is not None and person.email != request.new_email:
        changes["email"] = {"from": person.email, "to": request.new_email}
        person.email, person.email_key = request.new_email, email_key(request.new_email)
    if request.created_at is not None and person.created_at != request.created_at:
        changes["created_at"] = {"from": person.created_at, "to": request.created_at}
        person.created_at = request.created_at
    if "unsubscribed" in body:
        value = truthy(body["unsubscribed"])
        if value != person.unsubscribed:
            changes["unsubscribed"] = {"from": person.unsubscribed, "to": value}
            person.unsubscribed = value
    if request.prefs is not None:
        merged = _merge_preferences(person.subscription_preferences or {}, request.prefs)
        if merged != person.subscription_preferences:
            changes["cio_subscription_preferences"] = {"from": person.subscription_preferences, "to": merged}
            person.subscription_preferences = merged
    attrs = request.attrs
    if anonymous_traits:
        attrs = dict(attrs)
        for name, value in anonymous_traits.items():
            if name not in SPECIAL_KEYS:
                attrs.setdefault(name, value)
    if attrs:
        new_attrs, stamps, attr_changes = apply_attributes(
            person.attributes or {},
            person.attribute_timestamps or {},
            attrs,
            at=stamp or now,
            limits=ws.settings.limits,
            ordered=stamp is not None,
        )
        person.attributes, person.attribute_timestamps = new_attrs, stamps
        changes.update(attr_changes.changed)
    if changes:
        stamps = dict(person.attribute_timestamps or {})
        for name in ("id", "email", "created_at", "unsubscribed"):
            if name in changes:
                stamps[name] = stamp or now
        person.attribute_timestamps = stamps
        person.updated_at = now
    return changes


def _changed_keys(changes: Mapping[str, Any], created: bool) -> list[str]:
    """The dependency keys (see tidings.segments.conditions) an identify's changes touch."""
    keys = [f"attr:{name}" for name in changes]
    if created:
        keys.extend(realtime.CREATED_KEYS)
    return keys


@dataclass(frozen=True)
class Identify:
    """A plain identify call, ready: applied alone by calling it, or with its neighbours in a batch by
    :func:`identify_all`."""

    ws: WorkspaceContext
    ident: Identifier
    body: Mapping[str, Any]
    now: int
    timestamp: int | None = None

    def __call__(self, session: Session) -> PersonRef | None:
        return identify(session, self.ws, self.ident, self.body, now=self.now, timestamp=self.timestamp)

    @property
    def group_key(self) -> Hashable:
        return ("identify", self.ws.workspace_id)

    @staticmethod
    def apply_group(session: Session, units: Sequence[Identify]) -> list[PersonRef | None]:
        return identify_all(session, units)

    def read(self) -> _IdentifyRequest:
        return _read_identify(
            self.ws,
            self.ident,
            self.body,
            timestamp=self.timestamp,
            relationships=None,
            relationship_action="add_relationships",
            update_only=False,
        )


def identify_all(session: Session, items: Sequence[Identify]) -> list[PersonRef | None]:
    """Identify calls of one workspace, with the effects of :func:`identify` for each. Two kinds of call
    are applied as sets, in a constant number of statements: those creating a person, and plain updates
    of one existing person, when no other call of the run names that person or any of the call's
    identifiers. The others run one at a time, in order; since the sets share no identifier or person
    with anything else in the run, the order between the three cannot show."""
    if not items:
        return []
    ws = items[0].ws
    requests = [item.read() for item in items]
    named = Counter(ident_key(ident) for request in requests for ident in request.idents)
    found = find_person_ids(session, ws.workspace_id, {i for request in requests for i in request.idents})
    alone = [all(named[ident_key(ident)] == 1 for ident in request.idents) for request in requests]
    people_named = Counter(
        p for request in requests for p in {found[i] for i in request.idents if i in found}
    )
    creating: list[int] = []
    updating: list[tuple[int, int]] = []
    for place, request in enumerate(requests):
        if not alone[place] or not request.plain_creation:
            continue
        ids = {found[ident] for ident in request.idents if ident in found}
        if not ids:
            creating.append(place)
        elif (
            len(ids) == 1
            and request.ident in found
            and request.relationships is None
            and people_named[found[request.ident]] == 1
        ):
            updating.append((place, found[request.ident]))
    results: list[PersonRef | None] = [None] * len(items)
    if creating or updating:
        refuse_suppressed(
            session,
            ws.workspace_id,
            [
                i
                for place in (*creating, *(p for p, _ in updating))
                for i in requests[place].idents
                if i not in found
            ],
        )
    if creating:
        created = _create_set(session, ws, [(requests[place], items[place].now) for place in creating])
        for place, person in zip(creating, created, strict=True):
            results[place] = PersonRef(person.id, True)
    if updating:
        _update_set(
            session, ws, [(requests[place], items[place].now, person_id) for place, person_id in updating]
        )
        for place, person_id in updating:
            results[place] = PersonRef(person_id, False)
    done = {*creating, *(place for place, _ in updating)}
    for place, request in enumerate(requests):
        if place not in done:
            results[place] = _identify(session, ws, request, now=items[place].now)
    return results


def _update_set(
    session: Session, ws: WorkspaceContext, requests: Sequence[tuple[_IdentifyRequest, int, int]]
) -> None:
    """Apply plain identify calls to existing people, one call per person (checked against suppressions
    already): one SELECT of the people, their UPDATEs in one executemany, one INSERT of the activities,
    one real-time evaluation per set of changed keys."""
    ids = [person_id for _, _, person_id in requests]
    # Read as stored: anything an earlier unit of this transaction changed through the ORM is written
    # first (a plain SELECT does not flush by itself).
    session.flush()
    people = {row.id: PersonRow(**row._mapping) for row in session.execute(_PEOPLE_BY_ID, {"ids": ids})}
    changed: list[tuple[PersonRow, dict[str, dict[str, Any]], int]] = []
    for request, now, person_id in requests:
        person = people[person_id]
        changes = _apply_identify(person, request, ws, now=now, anonymous_traits={})
        if "unsubscribed" in changes or "cio_subscription_preferences" in changes:
            _report_subscription(session, ws.workspace_id, person, changes, now=now)
        if changes:
            changed.append((person, changes, now))
    if changed:
        # One executemany straight to the driver, instead of the ORM's flush (its change tracking and
        # per-row processing were a fifth of B1's writer). Copies of these people the session already
        # holds are now out of date: they leave it, so anything later in the transaction reads them back.
        update_rows(
            session,
            _PEOPLE,
            [
                {**{name: getattr(person, name) for name in _UPDATED_COLUMNS}, "id": person.id}
                for person, _, _ in changed
            ],
            key="id",
        )
        for person, _, _ in changed:
            held = session.identity_map.get(session.identity_key(Person, person.id))
            if held is not None:
                session.expunge(held)
        _record_set(session, ws, changed, created=False, latest=max(now for _, now, _ in requests))


def create_named_all(
    session: Session, ws: WorkspaceContext, named: Sequence[tuple[Identifier, int]]
) -> list[PersonRow]:
    """People named (by id or email, with the instant) for the first time by calls that set nothing on
    them, such as events: created as a set. They must name nobody yet, no two the same person, and have
    been checked against suppressions."""
    requests = []
    for ident, now in named:
        check_identifier(ident.value, ws.settings.limits, field_name="identifier")
        request = _read_identify(
            ws,
            ident,
            {},
            timestamp=None,
            relationships=None,
            relationship_action="add_relationships",
            update_only=False,
        )
        requests.append((request, now))
    return _create_set(session, ws, requests)


def _create_set(
    session: Session,
    ws: WorkspaceContext,
    requests: Sequence[tuple[_IdentifyRequest, int]],
) -> list[PersonRow]:
    """Create the people of plain creations (checked against suppressions already) in a constant number
    of statements: one INSERT of the people, one of their activities, one real-time evaluation per set
    of changed keys. The rows returned are a record of what was written, outside the session."""
    created: list[tuple[PersonRow, dict[str, dict[str, Any]], int]] = []
    for request, now in requests:
        person = _new_person(ws, request, now=now)
        changes = _apply_identify(person, request, ws, now=now, anonymous_traits={})
        created.append((person, changes, now))
    # One INSERT … RETURNING straight to the driver: the ORM's flush of new objects (its unit of work,
    # attribute events, per-row parameter processing) was a third of the writer's time in B1.
    rows = [{name: getattr(person, name) for name in _PERSON_COLUMNS} for person, _, _ in created]
    ids: dict[str, int] = dict(insert_returning(session, _PEOPLE, rows, ("cio_id", "id")))
    for person, _, _ in created:
        person.id = ids[person.cio_id]
    _record_set(session, ws, created, created=True, latest=max(now for _, now in requests))
    return [person for person, _, _ in created]


def _record_set(
    session: Session,
    ws: WorkspaceContext,
    people: Sequence[tuple[PersonRow, dict[str, dict[str, Any]], int]],
    *,
    created: bool,
    latest: int,
) -> None:
    """What follows a set of people created or changed (each with its changes and instant): their
    activities in one INSERT, their signals, one real-time evaluation per set of changed keys."""
    activity.record_many(
        session,
        ws.workspace_id,
        [
            (person.id, "attribute_change", now, {"created": created, "changes": changes})
            for person, changes, now in people
        ],
    )
    touched: dict[tuple[str, ...], list[int]] = {}
    for person, changes, now in people:
        signals.note(
            session, signals.AttributesChanged(ws.workspace_id, person.id, changes, created), now=now
        )
        touched.setdefault(tuple(_changed_keys(changes, created)), []).append(person.id)
    for keys, person_ids in touched.items():
        realtime.touched(session, ws.workspace_id, person_ids, keys, now=latest)


def ident_key(ident: Identifier) -> tuple[str, str]:
    """Identifiers with equal keys name the same person."""
    return ident.type, suppression_value(ident)


def _v1_relationships(value: Any) -> tuple[Any, str]:
    if not isinstance(value, dict):
        raise InvalidInput("cio_relationships must be an object", field="cio_relationships")
    action = value.get("action", "add_relationships")
    if action not in ("add_relationships", "delete_relationships"):
        raise InvalidInput(
            "cio_relationships.action must be add_relationships or delete_relationships",
            field="cio_relationships.action",
        )
    return value.get("relationships", []), action


def _set_identifier(person: Person, ident: Identifier) -> None:
    if ident.type == "id":
        person.customer_id = ident.value
    elif ident.type == "email":
        person.email, person.email_key = ident.value, email_key(ident.value)


def _report_subscription(
    session: Session, workspace_id: int, person: Person | PersonRow, changes: dict[str, Any], *, now: int
) -> None:
    """Reporting webhooks hear of subscription changes made through the data APIs too."""
    data = webhooks.customer_data(person)
    if "unsubscribed" in changes:
        metric = "unsubscribed" if person.unsubscribed else "subscribed"
        webhooks.emit(session, workspace_id, object_type="customer", metric=metric, timestamp=now, data=data)
    if "cio_subscription_preferences" in changes:
        content = orjson.dumps(person.subscription_preferences).decode()
        webhooks.emit(
            session,
            workspace_id,
            object_type="customer",
            metric="cio_subscription_preferences_changed",
            timestamp=now,
            data={**data, "content": content},
        )


def _merge_preferences(current: dict[str, Any], update_: dict[str, Any]) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in current.items()}
    for key, value in update_.items():
        if key in ("topics", "channels"):
            if not isinstance(value, dict):
                raise InvalidInput(
                    f"cio_subscription_preferences.{key} must be an object",
                    field=f"cio_subscription_preferences.{key}",
                )
            section = dict(merged.get(key) or {})
            for name, flag in value.items():
                if not isinstance(flag, bool):
                    raise InvalidInput(
                        f"cio_subscription_preferences.{key}.{name} must be true or false",
                        field=f"cio_subscription_preferences.{key}.{name}",
                    )
                section[name] = flag
            merged[key] = section
        else:
            merged[key] = value
    return merged


def ensure_person_id(session: Session, ws: WorkspaceContext, ident: Identifier, *, now: int) -> int | None:
    """Like :func:`ensure_person`, but only the key: no person is loaded when one exists."""
    person_id = find_person_id(session, ws.workspace_id, ident)
    if person_id is not None:
        return person_id
    refuse_suppressed(session, ws.workspace_id, [ident])
    if ident.type == "cio_id":
        return None
    return create_named_all(session, ws, [(ident, now)])[0].id


def ensure_person(session: Session, ws: WorkspaceContext, ident: Identifier, *, now: int) -> Person | None:
    """The person named by ``ident``, created when an id or email is new (a cio_id must exist)."""
    person = find_person(session, ws.workspace_id, ident)
    if person is not None:
        return person
    refuse_suppressed(session, ws.workspace_id, [ident])
    if ident.type == "cio_id":
        return None
    # Attached as if loaded: the caller goes on changing the person, and the session flushes that.
    person = create_named_all(session, ws, [(ident, now)])[0].to_person()
    make_transient_to_detached(person)
    session.add(person)
    return person


def delete_person(session: Session, ws: WorkspaceContext, ident: Identifier) -> bool:
    person = find_person(session, ws.workspace_id, ident)
    if person is None:
        return False
    _erase(session, person)
    return True


def _erase(session: Session, person: Person) -> None:
    realtime.leaving(session, person.workspace_id, person.id)
    # Memberships and timers have no foreign key to people: nothing may be writing theirs meanwhile.
    realtime.lock_for_deletion(session, person.workspace_id, person.id)
    # Explicit deletes keep this correct even where a connection forgot to enable SQLite foreign keys.
    for table in (Event, Activity, Device, Relationship, SegmentMembership, AnonymousProfile):
        session.execute(delete(table).where(table.person_id == person.id))
    # Timers are keyed by segment then person: one probe per segment of the workspace.
    segments = select(Segment.id).where(Segment.workspace_id == person.workspace_id)
    session.execute(
        delete(SegmentTimer).where(SegmentTimer.segment_id.in_(segments), SegmentTimer.person_id == person.id)
    )
    session.delete(person)
    session.flush()


def suppress(session: Session, ws: WorkspaceContext, ident: Identifier, *, now: int) -> None:
    """Delete the person and refuse their identifiers from now on."""
    person = find_person(session, ws.workspace_id, ident)
    idents = [ident]
    if person is not None:
        idents = [
            Identifier(kind, value)  # type: ignore[arg-type]
            for kind, value in identifiers_of(person).items()
            if value
        ]
        _erase(session, person)
    group = new_ulid()
    for item in idents:
        value = suppression_value(item)
        exists = session.scalar(
            select(Suppression.id).where(
                Suppression.workspace_id == ws.workspace_id,
                Suppression.identifier_type == item.type,
                Suppression.value == value,
            )
        )
        if exists is None:
            session.add(
                Suppression(
                    workspace_id=ws.workspace_id,
                    identifier_type=item.type,
                    value=value,
                    group_key=group,
                    created_at=now,
                )
            )
    session.flush()


def unsuppress(session: Session, ws: WorkspaceContext, ident: Identifier) -> None:
    group = session.scalar(
        select(Suppression.group_key).where(
            Suppression.workspace_id == ws.workspace_id,
            Suppression.identifier_type == ident.type,
            Suppression.value == suppression_value(ident),
        )
    )
    if group is not None:
        session.execute(
            delete(Suppression).where(
                Suppression.workspace_id == ws.workspace_id, Suppression.group_key == group
            )
        )


# -- devices ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInput:
    token: str
    platform: str
    last_used: int | None
    attributes: dict[str, Any]


def parse_device(device: Any, *, token_key: str) -> DeviceInput:
    """Read a device object. v1 names the token ``id``, v2 ``token``. Extra top-level keys (the Python
    client's style) and an ``attributes`` object (node/go style) both become attributes."""
    if not isinstance(device, dict):
        raise InvalidInput("device must be an object", field="device")
    token = device.get(token_key)
    if not isinstance(token, str) or not token:
        raise InvalidInput(f"device.{token_key} is required", field=f"device.{token_key}")
    if len(token.encode()) > MAX_DEVICE_TOKEN_BYTES:
        raise InvalidInput(
            f"device.{token_key} is longer than {MAX_DEVICE_TOKEN_BYTES} bytes", field=f"device.{token_key}"
        )
    platform = device.get("platform")
    if not isinstance(platform, str) or platform.lower() not in DEVICE_PLATFORMS:
        raise InvalidInput("device.platform must be ios or android", field="device.platform")
    last_used = as_unix(device.get("last_used"), "device.last_used")
    attributes = device.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise InvalidInput("device.attributes must be an object", field="device.attributes")
    extras = {
        key: value
        for key, value in device.items()
        if key not in (token_key, "platform", "last_used", "attributes", "_last_status")
    }
    merged = {
        key: value if isinstance(value, str) else _stringify(value)
        for key, value in {**extras, **attributes}.items()
    }
    return DeviceInput(token=token, platform=platform.lower(), last_used=last_used, attributes=merged)


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def add_device(
    session: Session, ws: WorkspaceContext, ident: Identifier, device: DeviceInput, *, now: int
) -> None:
    person = ensure_person(session, ws, ident, now=now)
    if person is None:
        return
    existing = session.scalars(
        select(Device).where(Device.workspace_id == ws.workspace_id, Device.token == device.token)
    ).first()
    if existing is None:
        existing = Device(
            workspace_id=ws.workspace_id,
            person_id=person.id,
            token=device.token,
            platform=device.platform,
            last_used=device.last_used or now,
            attributes=device.attributes,
            created_at=now,
        )
        session.add(existing)
    else:
        # A token belongs to one person: re-registering it under someone else moves it.
        existing.person_id = person.id
        existing.platform = device.platform
        existing.last_used = device.last_used or now
        existing.attributes = {**(existing.attributes or {}), **device.attributes}
    activity.record(
        session,
        ws.workspace_id,
        person.id,
        "device_change",
        now=now,
        data={"token": device.token, "platform": device.platform, "attributes": device.attributes},
    )
    session.flush()
    realtime.touched(session, ws.workspace_id, [person.id], ["device"], now=now)


def delete_device(session: Session, ws: WorkspaceContext, ident: Identifier, token: str, *, now: int) -> None:
    person = find_person(session, ws.workspace_id, ident)
    if person is None:
        return
    result = session.execute(
        delete(Device).where(
            Device.workspace_id == ws.workspace_id, Device.person_id == person.id, Device.token == token
        )
    )
    if getattr(result, "rowcount", 0):
        activity.record(session, ws.workspace_id, person.id, "device_deleted", now=now, data={"token": token})
        realtime.touched(session, ws.workspace_id, [person.id], ["device"], now=now)


# -- merge -----------------------------------------------------------------------------------------


def merge(
    session: Session,
    ws: WorkspaceContext,
    primary_ident: Identifier,
    secondary_ident: Identifier,
    *,
    now: int,
) -> bool:
    """Merge the secondary person into the primary and delete the secondary.

    Moves: attributes the primary lacks, the last 30 days of events (they can no longer trigger
    campaigns), manual segment memberships, devices, relationships, anonymous ids and history, delivery
    history and campaign journeys (as Customer.io does).
    """
    primary = find_person(session, ws.workspace_id, primary_ident)
    secondary = find_person(session, ws.workspace_id, secondary_ident)
    if primary is None or secondary is None or primary.id == secondary.id:
        return False
    missing = {k: v for k, v in (secondary.attributes or {}).items() if k not in (primary.attributes or {})}
    stamps = {k: (secondary.attribute_timestamps or {}).get(k, now) for k in missing}
    primary.attributes = {**(primary.attributes or {}), **missing}
    primary.attribute_timestamps = {**(primary.attribute_timestamps or {}), **stamps}
    moved_email = primary.email is None and secondary.email is not None
    moved_id = primary.customer_id is None and secondary.customer_id is not None
    email, customer_id = secondary.email, secondary.customer_id
    secondary.email = secondary.email_key = None
    secondary.customer_id = None
    session.flush()
    if moved_email and email:
        primary.email, primary.email_key = email, email_key(email)
    if moved_id:
        primary.customer_id = customer_id
    primary.unsubscribed = primary.unsubscribed or secondary.unsubscribed
    primary.subscription_preferences = _merge_missing(
        secondary.subscription_preferences or {}, primary.subscription_preferences or {}
    )
    primary.updated_at = now
    session.execute(
        update(Event)
        .where(Event.person_id == secondary.id, Event.timestamp >= now - 30 * DAY)
        .values(person_id=primary.id, can_trigger=False)
    )
    # Manual memberships move; data-driven ones follow from re-evaluating the merged person.
    for membership in session.scalars(
        select(SegmentMembership)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(SegmentMembership.person_id == secondary.id, Segment.type == "manual")
    ).all():
        if session.get(SegmentMembership, (membership.segment_id, primary.id)) is None:
            session.add(
                SegmentMembership(
                    segment_id=membership.segment_id,
                    person_id=primary.id,
                    workspace_id=ws.workspace_id,
                    added_at=now,
                )
            )
            realtime.record_manual(
                session, ws.workspace_id, membership.segment_id, [primary.id], entered=True, now=now
            )
    session.execute(update(Device).where(Device.person_id == secondary.id).values(person_id=primary.id))
    session.execute(
        update(AnonymousProfile)
        .where(AnonymousProfile.person_id == secondary.id)
        .values(person_id=primary.id)
    )
    session.execute(update(Activity).where(Activity.person_id == secondary.id).values(person_id=primary.id))
    _move_messaging(session, ws.workspace_id, secondary.id, primary.id)
    primary_objects = set(
        session.scalars(select(Relationship.object_pk).where(Relationship.person_id == primary.id))
    )
    session.execute(
        update(Relationship)
        .where(Relationship.person_id == secondary.id, Relationship.object_pk.not_in(primary_objects or {-1}))
        .values(person_id=primary.id)
    )
    activity.record(
        session,
        ws.workspace_id,
        primary.id,
        "merged_customer",
        now=now,
        data={"secondary": {"id": customer_id, "email": email, "cio_id": secondary.cio_id}},
    )
    session.flush()
    _erase(session, secondary)
    realtime.touched(session, ws.workspace_id, [primary.id], [realtime.EVERYTHING], now=now)
    return True


def _move_messaging(session: Session, workspace_id: int, secondary_id: int, primary_id: int) -> None:
    """Delivery history and journeys go to the primary: a journey in flight goes on for them, and its
    next message reaches the merged person. A campaign both had entered counts both people's entries
    and running journeys, so its re-entry and concurrency rules see every journey the merged person has."""
    for model in (Delivery, Journey, JourneyStep):
        session.execute(update(model).where(model.person_id == secondary_id).values(person_id=primary_id))
    theirs = session.scalars(select(CampaignEntry).where(CampaignEntry.person_id == secondary_id)).all()
    for entry in theirs:
        # Locked: the re-entry rules update this row under the same lock.
        mine = session.get(CampaignEntry, (entry.campaign_id, primary_id), with_for_update=True)
        if mine is None:
            session.add(
                CampaignEntry(
                    campaign_id=entry.campaign_id,
                    person_id=primary_id,
                    workspace_id=workspace_id,
                    entries=entry.entries,
                    running=entry.running,
                    last_entered_at=entry.last_entered_at,
                )
            )
            continue
        mine.entries += entry.entries
        mine.running += entry.running
        stamps = [at for at in (mine.last_entered_at, entry.last_entered_at) if at is not None]
        mine.last_entered_at = max(stamps) if stamps else None
    for entry in theirs:
        session.delete(entry)


def _merge_missing(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    merged = dict(target)
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**value, **merged[key]}
        else:
            merged.setdefault(key, value)
    return merged

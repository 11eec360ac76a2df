"""Track API v2 entities: one ``{"type", "action", "identifiers", …}`` operation on a person, an object or a
delivery, applied to the store.

:func:`prepare` checks an entity's shape without the database and returns the unit of work that applies
it; :func:`apply_batch` runs many such units in one transaction, each in its own savepoint, so a failing
item rolls back only itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, cast

import orjson
from sqlalchemy.orm import Session

from tidings.db.isolation import apply_each
from tidings.deliveries import service as deliveries
from tidings.errors import InvalidInput, PayloadTooLarge, TidingsError
from tidings.events import service as events
from tidings.objects import service as objects
from tidings.people import anonymous
from tidings.people import service as people
from tidings.people.identifiers import Identifier, find_person, identifier_from_object
from tidings.workspaces.schemas import WorkspaceContext

Operation = Callable[[Session], object]
Preparer = Callable[[dict[str, Any], WorkspaceContext, int], Operation]
# A ``cio_relationships`` entry: its field path, its identifiers as sent, its relationship attributes.
RelationshipEntry = tuple[str, Any, Mapping[str, Any] | None]


@dataclass(frozen=True)
class ItemError:
    """Why the batch item at ``index`` was rejected."""

    index: int
    error: TidingsError


@dataclass(frozen=True)
class PreparedBatch:
    operations: list[tuple[int, Operation]]
    errors: list[ItemError]


@dataclass(frozen=True)
class PersonLink:
    """An object's relationship to a person, named by id, email or cio_id."""

    ident: Identifier
    attributes: Mapping[str, Any] | None


@dataclass(frozen=True)
class AnonymousLink:
    """An object's relationship to whoever is (or will be) identified with ``anonymous_id``."""

    anonymous_id: str
    attributes: Mapping[str, Any] | None


def prepare(entity: Any, ws: WorkspaceContext, *, now: int) -> Operation:
    """Validate one entity and return the unit of work that applies it."""
    if not isinstance(entity, dict):
        raise InvalidInput("an entity must be a JSON object")
    kind = entity.get("type")
    if not isinstance(kind, str) or kind not in PREPARERS:
        raise InvalidInput("type must be person, object or delivery", field="type")
    action = entity.get("action")
    preparer = PREPARERS[kind].get(action) if isinstance(action, str) else None
    if preparer is None:
        raise InvalidInput(
            f"action must be one of {', '.join(PREPARERS[kind])} for type {kind}", field="action"
        )
    return preparer(entity, ws, now)


def prepare_batch(items: Sequence[Any], ws: WorkspaceContext, *, now: int) -> PreparedBatch:
    """Validate every item of a batch on its own; the valid ones become operations."""
    limit = ws.settings.limits.max_batch_item_bytes
    operations: list[tuple[int, Operation]] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            size = len(orjson.dumps(item))
            if size > limit:
                raise PayloadTooLarge(f"batch item is {size} bytes, more than {limit}")
            operations.append((index, prepare(item, ws, now=now)))
        except TidingsError as exc:
            errors.append(ItemError(index, exc))
    return PreparedBatch(operations, errors)


def apply_batch(session: Session, operations: Sequence[tuple[int, Operation]]) -> list[ItemError]:
    """Apply every operation; a rejected one is rolled back alone and reported."""
    refused = apply_each(
        session, operations, lambda entry: entry[1](session), together=lambda all_: _apply_runs(session, all_)
    )
    return [ItemError(index, exc) for (index, _), exc in refused]


def _apply_runs(session: Session, operations: Sequence[tuple[int, Operation]]) -> None:
    """Apply operations in order, each run of consecutive person events, or of consecutive plain
    identifies, as one set (the shapes of most batches: a stream of events, an import of people)."""
    for kind, run in groupby((operation for _, operation in operations), key=type):
        if kind is events.PersonEvent:
            events.track_person_events(session, cast(list[events.PersonEvent], list(run)))
        elif kind is people.Identify:
            people.identify_all(session, cast(list[people.Identify], list(run)))
        else:
            for operation in run:
                operation(session)


# -- reading the envelope --------------------------------------------------------------------------


def person_identifier(value: Any, *, field: str = "identifiers") -> Identifier:
    """Exactly one of id, email or cio_id. Phone numbers are not an identifier in Tidings."""
    if isinstance(value, dict) and set(value) == {"phone"}:
        raise InvalidInput(
            f"{field}.phone: phone numbers are not enabled as an identifier; use id, email or cio_id",
            field=f"{field}.phone",
        )
    return identifier_from_object(value, field=field)


def object_ref(value: Any, *, field: str = "identifiers") -> objects.ObjectRef:
    """Either object_type_id with object_id, or cio_object_id — never both."""
    if isinstance(value, dict) and set(value) not in ({"object_type_id", "object_id"}, {"cio_object_id"}):
        raise InvalidInput(
            f"{field} must hold object_type_id with object_id, or cio_object_id alone", field=field
        )
    return objects.parse_object_ref(value, field=field)


def _optional_object(entity: dict[str, Any], key: str) -> dict[str, Any]:
    value = entity.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{key} must be an object", field=key)
    return value


def _relationship_entries(value: Any, *, required: bool) -> list[RelationshipEntry]:
    field = "cio_relationships"
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list", field=field)
    entries: list[RelationshipEntry] = []
    for index, entry in enumerate(value):
        path = f"{field}[{index}]"
        if not isinstance(entry, dict):
            raise InvalidInput(f"{path} must be an object", field=path)
        attributes = entry.get("relationship_attributes")
        if attributes is not None and not isinstance(attributes, dict):
            raise InvalidInput(
                f"{path}.relationship_attributes must be an object", field=f"{path}.relationship_attributes"
            )
        entries.append((f"{path}.identifiers", entry.get("identifiers"), attributes))
    return entries


def _person_links(value: Any, *, required: bool) -> list[PersonLink]:
    return [
        PersonLink(person_identifier(identifiers, field=path), attributes)
        for path, identifiers, attributes in _relationship_entries(value, required=required)
    ]


def _anonymous_links(value: Any) -> list[AnonymousLink]:
    links = []
    for path, identifiers, attributes in _relationship_entries(value, required=False):
        if not isinstance(identifiers, dict) or set(identifiers) != {"anonymous_id"}:
            raise InvalidInput(f"{path} must hold anonymous_id alone", field=path)
        anonymous_id = identifiers["anonymous_id"]
        if not isinstance(anonymous_id, str) or not anonymous_id:
            raise InvalidInput(
                f"{path}.anonymous_id must be a non-empty string", field=f"{path}.anonymous_id"
            )
        links.append(AnonymousLink(anonymous_id, attributes))
    return links


# -- people ------------------------------------------------------------------------------------------


def _person_identify(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ident = person_identifier(entity.get("identifiers"))
    attributes = _optional_object(entity, "attributes")
    timestamp = people.as_unix(entity.get("timestamp"), "timestamp")
    relationships = entity.get("cio_relationships")
    if relationships is not None:
        objects.parse_object_links(relationships)
    if relationships is None:
        return people.Identify(ws, ident, attributes, now, timestamp)
    return lambda session: people.identify(
        session, ws, ident, attributes, now=now, timestamp=timestamp, relationships=relationships
    )


def _person_delete(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ident = person_identifier(entity.get("identifiers"))
    return lambda session: people.delete_person(session, ws, ident)


def _person_event(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    """``event``, ``page`` and ``screen``: the action is the event type, the data is in ``attributes``."""
    ident = person_identifier(entity.get("identifiers"))
    event = events.parse_event(
        {**entity, "type": entity["action"]}, ws.settings.limits, data_key="attributes"
    )
    return events.PersonEvent(ws, ident, event, now)


def _person_relationships(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ident = person_identifier(entity.get("identifiers"))
    links = objects.parse_object_links(entity.get("cio_relationships"))
    action: str = entity["action"]

    def run(session: Session) -> None:
        if action == "add_relationships":
            person = people.ensure_person(session, ws, ident, now=now)
        else:
            person = find_person(session, ws.workspace_id, ident)
        if person is not None:
            objects.link_person(
                session,
                ws.workspace_id,
                person.id,
                links,
                action=action,
                now=now,
                limits=ws.settings.limits,
            )

    return run


def _person_add_device(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ident = person_identifier(entity.get("identifiers"))
    device = people.parse_device(entity.get("device"), token_key="token")
    return lambda session: people.add_device(session, ws, ident, device, now=now)


def _person_delete_device(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ident = person_identifier(entity.get("identifiers"))
    device = entity.get("device")
    if not isinstance(device, dict):
        raise InvalidInput("device must be an object", field="device")
    token = device.get("token")
    if not isinstance(token, str) or not token:
        raise InvalidInput("device.token is required", field="device.token")
    return lambda session: people.delete_device(session, ws, ident, token, now=now)


def _person_merge(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    primary = person_identifier(entity.get("primary"), field="primary")
    secondary = person_identifier(entity.get("secondary"), field="secondary")
    return lambda session: people.merge(session, ws, primary, secondary, now=now)


def _person_suppress(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ident = person_identifier(entity.get("identifiers"))
    return lambda session: people.suppress(session, ws, ident, now=now)


def _person_unsuppress(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ident = person_identifier(entity.get("identifiers"))
    return lambda session: people.unsuppress(session, ws, ident)


# -- objects -----------------------------------------------------------------------------------------


def _object_identify(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    """Create or update by object_type_id and object_id; a cio_object_id only updates an existing object."""
    ref = object_ref(entity.get("identifiers"))
    attributes = _optional_object(entity, "attributes")
    links = _person_links(entity.get("cio_relationships"), required=False)
    return _upsert_and_relate(ref, attributes, links, ws, now)


def _upsert_and_relate(
    ref: objects.ObjectRef,
    attributes: Mapping[str, Any] | None,
    links: Sequence[PersonLink],
    ws: WorkspaceContext,
    now: int,
) -> Operation:
    """Relate people (created when their id or email is new) to the object (created likewise)."""
    limits = ws.settings.limits

    def run(session: Session) -> None:
        obj = objects.upsert_object(session, ws.workspace_id, ref, attributes, now=now, limits=limits)
        if obj is None:
            return
        for link in links:
            person = people.ensure_person(session, ws, link.ident, now=now)
            if person is not None:
                objects.relate(
                    session, ws.workspace_id, person.id, obj, link.attributes, now=now, limits=limits
                )

    return run


def _object_identify_anonymous(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    """Relationships go to the person an anonymous id is linked to; for an anonymous id nobody has been
    identified with yet, they wait on its profile and apply when someone is."""
    ref = object_ref(entity.get("identifiers"))
    attributes = _optional_object(entity, "attributes")
    links = _anonymous_links(entity.get("cio_relationships"))
    limits = ws.settings.limits

    def run(session: Session) -> None:
        obj = objects.upsert_object(session, ws.workspace_id, ref, attributes, now=now, limits=limits)
        if obj is None:
            return
        for link in links:
            anonymous.relate_when_identified(
                session,
                ws.workspace_id,
                link.anonymous_id,
                obj,
                dict(link.attributes or {}),
                now=now,
                limits=limits,
            )

    return run


def _object_delete(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ref = object_ref(entity.get("identifiers"))
    return lambda session: objects.delete_object(session, ws.workspace_id, ref, now=now)


def _object_add_relationships(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ref = object_ref(entity.get("identifiers"))
    links = _person_links(entity.get("cio_relationships"), required=True)
    return _upsert_and_relate(ref, None, links, ws, now)


def _object_delete_relationships(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    ref = object_ref(entity.get("identifiers"))
    links = _person_links(entity.get("cio_relationships"), required=True)

    def run(session: Session) -> None:
        obj = objects.find_object(session, ws.workspace_id, ref)
        if obj is None:
            return
        for link in links:
            person = find_person(session, ws.workspace_id, link.ident)
            if person is not None:
                objects.unrelate(session, ws.workspace_id, person.id, obj, now=now)

    return run


# -- deliveries --------------------------------------------------------------------------------------


def _delivery_event(entity: dict[str, Any], ws: WorkspaceContext, now: int) -> Operation:
    """A push metric (opened, converted, delivered) for a delivery, from the device it reached."""
    identifiers = entity.get("identifiers")
    if not isinstance(identifiers, dict) or set(identifiers) != {"id"}:
        raise InvalidInput("identifiers must hold the delivery id alone", field="identifiers")
    delivery_id = identifiers["id"]
    if not isinstance(delivery_id, str) or not delivery_id:
        raise InvalidInput("identifiers.id must be a non-empty string", field="identifiers.id")
    name = entity.get("name")
    if name not in deliveries.PUSH_EVENTS:
        raise InvalidInput("name must be opened, converted or delivered", field="name")
    token = _optional_object(entity, "attributes").get("device_token")
    if not isinstance(token, str) or not token:
        raise InvalidInput("attributes.device_token is required", field="attributes.device_token")
    report = {
        "delivery_id": delivery_id,
        "event": name,
        "device_id": token,
        "timestamp": people.as_unix(entity.get("timestamp"), "timestamp"),
    }
    return lambda session: deliveries.report_push_event(session, ws.workspace_id, report, now=now)


PREPARERS: dict[str, dict[str, Preparer]] = {
    "person": {
        "identify": _person_identify,
        "delete": _person_delete,
        "event": _person_event,
        "screen": _person_event,
        "page": _person_event,
        "add_relationships": _person_relationships,
        "delete_relationships": _person_relationships,
        "add_device": _person_add_device,
        "delete_device": _person_delete_device,
        "merge": _person_merge,
        "suppress": _person_suppress,
        "unsuppress": _person_unsuppress,
    },
    "object": {
        "identify": _object_identify,
        "identify_anonymous": _object_identify_anonymous,
        "delete": _object_delete,
        "add_relationships": _object_add_relationships,
        "delete_relationships": _object_delete_relationships,
    },
    "delivery": {"event": _delivery_event},
}
ACTIONS = sorted({action for actions in PREPARERS.values() for action in actions})

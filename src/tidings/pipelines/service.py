"""Pipelines (Customer.io's CDP API, Segment spec): apply one message to a session.

A message is an ``identify``, ``track``, ``page``, ``screen``, ``group`` or ``alias`` call. Each becomes the
domain calls the Track API makes, so both surfaces mean the same thing: ``userId`` is a person's id,
``anonymousId`` an anonymous id, ``traits`` are attributes, and the semantic ``track`` events
(``User Deleted``, ``Device Created or Updated``, …) perform the action they name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tidings.db.isolation import apply_each
from tidings.deliveries import service as deliveries
from tidings.errors import InvalidInput, TidingsError
from tidings.events import service as events
from tidings.events.service import EventInput
from tidings.models import Person, PipelinesMessage
from tidings.objects import service as objects
from tidings.objects.service import ObjectRef
from tidings.people import anonymous
from tidings.people import service as people
from tidings.people.attributes import check_attributes, check_identifier
from tidings.people.identifiers import Identifier, find_person
from tidings.workspaces.limits import Limits
from tidings.workspaces.schemas import WorkspaceContext

CALLS = ("identify", "track", "page", "screen", "group", "alias")
SOURCE = "pipelines"
# PipelinesMessage.message_id holds 190 characters; a longer messageId is remembered by its digest.
MAX_MESSAGE_ID = 190
PREFERENCES = "cio_subscription_preferences"
# Traits with a meaning of their own. ``id`` is ignored: ``userId`` names the person.
RESERVED_TRAITS = people.SPECIAL_KEYS | {"createdAt"}
GROUP_TRAITS = frozenset({"object_type_id", "objectTypeId", "relationshipAttributes"})


@dataclass(frozen=True)
class Message:
    """A call's common Segment fields, checked; ``fields`` is the message as sent."""

    call: str
    user_id: str | None
    anonymous_id: str | None
    message_id: str | None
    timestamp: int | None
    fields: Mapping[str, Any]

    def object(self, key: str) -> dict[str, Any]:
        return as_object(self.fields.get(key), key)


@dataclass(frozen=True)
class BatchItem:
    index: int
    call: str
    message: dict[str, Any]


@dataclass(frozen=True)
class Dropped:
    """A batch item that was not applied, and why."""

    index: int
    reason: str


def as_object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object", field=field)
    return value


def _required_text(value: Any, field: str) -> str:
    text = people.as_id(value, field)
    if text is None:
        raise InvalidInput(f"{field} is required", field=field)
    return text


def unix_time(value: Any, field: str) -> int | None:
    """Pipelines dates are ISO-8601 strings; one without a zone is read as UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be an ISO-8601 date-time", field=field)
    try:
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = int(parsed.timestamp())
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"{field} must be an ISO-8601 date-time", field=field) from exc
    if abs(seconds) > people.MAX_UNIX_SECONDS:
        raise InvalidInput(f"{field} is out of range", field=field)
    return seconds


def _parse(raw: Any, call: str, limits: Limits) -> Message:
    if not isinstance(raw, dict):
        raise InvalidInput("a message must be a JSON object")
    user_id = people.as_id(raw.get("userId"), "userId")
    anonymous_id = people.as_id(raw.get("anonymousId"), "anonymousId")
    for name, value in (("userId", user_id), ("anonymousId", anonymous_id)):
        if value is not None:
            check_identifier(value, limits, field_name=name)
    # Segment libraries always send ``timestamp``; ``originalTimestamp`` is the device's own clock.
    stamp_key = "timestamp" if raw.get("timestamp") not in (None, "") else "originalTimestamp"
    return Message(
        call=call,
        user_id=user_id,
        anonymous_id=anonymous_id,
        message_id=people.as_id(raw.get("messageId"), "messageId"),
        timestamp=unix_time(raw.get(stamp_key), stamp_key),
        fields=raw,
    )


def apply(session: Session, ws: WorkspaceContext, raw: Any, *, call: str, now: int) -> None:
    """Apply one message; one whose ``messageId`` was already processed is skipped."""
    message = _parse(raw, call, ws.settings.limits)
    if message.message_id is None or _first_time(session, ws.workspace_id, message.message_id, now):
        HANDLERS[message.call](session, ws, message, now)


def _stored_message_id(message_id: str | None) -> str | None:
    if message_id is not None and len(message_id) > MAX_MESSAGE_ID:
        return "sha256:" + hashlib.sha256(message_id.encode()).hexdigest()
    return message_id


def _first_time(session: Session, workspace_id: int, message_id: str, now: int) -> bool:
    message_id = _stored_message_id(message_id) or message_id
    if session.get(PipelinesMessage, (workspace_id, message_id)) is not None:
        return False
    # Written in the message's own transaction or savepoint: the id is remembered exactly when the
    # message's effects are committed. A concurrent twin fails on the primary key and is re-run.
    session.add(PipelinesMessage(workspace_id=workspace_id, message_id=message_id, received_at=now))
    session.flush()
    return True


# -- batch -----------------------------------------------------------------------------------------


def split_batch(body: Any, limits: Limits) -> tuple[list[BatchItem], list[Dropped]]:
    """Read a ``/batch`` body: the items to apply, with the batch's ``context`` merged into each (an
    item's own keys win), and the items dropped up front (not an object, too large, unknown type)."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise InvalidInput("batch must be a list of messages", field="batch")
    shared_context = as_object(body.get("context"), "context")
    items: list[BatchItem] = []
    dropped: list[Dropped] = []
    for index, item in enumerate(batch):
        if not isinstance(item, dict):
            dropped.append(Dropped(index, "a message must be a JSON object"))
            continue
        size = len(orjson.dumps(item))
        if size > limits.max_batch_item_bytes:
            dropped.append(
                Dropped(index, f"message is {size} bytes, more than {limits.max_batch_item_bytes}")
            )
            continue
        call = item.get("type")
        if not isinstance(call, str) or call.lower() not in CALLS:
            dropped.append(Dropped(index, f"type must be one of {', '.join(CALLS)}"))
            continue
        message = dict(item)
        if shared_context:
            own = item.get("context")
            message["context"] = {**shared_context, **own} if isinstance(own, dict) else shared_context
        items.append(BatchItem(index, call.lower(), message))
    return items, dropped


def apply_batch(session: Session, ws: WorkspaceContext, items: list[BatchItem], *, now: int) -> list[Dropped]:
    """Apply every item: an invalid item is dropped without losing the others."""
    refused = apply_each(
        session,
        items,
        lambda item: apply(session, ws, item.message, call=item.call, now=now),
        together=lambda all_: _apply_runs(session, ws, all_, now),
    )
    return [Dropped(item.index, exc.message) for item, exc in refused]


def _apply_runs(session: Session, ws: WorkspaceContext, items: Sequence[BatchItem], now: int) -> None:
    """Apply items in order, each run of consecutive plain person events (track, page and screen calls
    with a userId) as one set; anything else goes through :func:`apply` on its own."""
    run: list[tuple[str | None, events.PersonEvent]] = []
    for item in items:
        plain = _plain_person_event(ws, item, now)
        if plain is not None:
            run.append(plain)
            continue
        _apply_run(session, ws, run, now)
        run = []
        apply(session, ws, item.message, call=item.call, now=now)
    _apply_run(session, ws, run, now)


def _plain_person_event(
    ws: WorkspaceContext, item: BatchItem, now: int
) -> tuple[str | None, events.PersonEvent] | None:
    """The item as a person event with its messageId, when it is one; None sends it down the usual path
    (which also reports whatever makes it invalid)."""
    if item.call not in ("track", "page", "screen"):
        return None
    try:
        message = _parse(item.message, item.call, ws.settings.limits)
        if message.user_id is None:
            return None
        if item.call == "track":
            name = _required_text(message.fields.get("event"), "event")
            if name in SEMANTIC_EVENTS:
                return None
            event = _event(name, "event", message.object("properties"), message, ws.settings.limits)
        else:
            event = _view_event(message, item.call, ws.settings.limits)
    except TidingsError:
        return None
    person_event = events.PersonEvent(ws, Identifier("id", message.user_id), event, now, SOURCE)
    return _stored_message_id(message.message_id), person_event


_REMEMBER = {
    is_postgres: insert_for(PipelinesMessage)
    .on_conflict_do_nothing(index_elements=["workspace_id", "message_id"])
    .returning(PipelinesMessage.message_id)
    for is_postgres, insert_for in ((False, sqlite_insert), (True, pg_insert))
}


def _apply_run(
    session: Session, ws: WorkspaceContext, run: Sequence[tuple[str | None, events.PersonEvent]], now: int
) -> None:
    """A run of person events: the messageIds seen before (or earlier in the run) are skipped, the new
    ones remembered, the events recorded as a set."""
    if not run:
        return
    rows: dict[str, dict[str, Any]] = {}
    for message_id, _ in run:
        if message_id is not None:
            rows.setdefault(
                message_id, {"workspace_id": ws.workspace_id, "message_id": message_id, "received_at": now}
            )
    connection = session.connection()
    # Remembering and checking in one statement: the ids returned are the ones not seen before.
    first_seen = (
        set(
            connection.execute(
                _REMEMBER[connection.dialect.name == "postgresql"], list(rows.values())
            ).scalars()
        )
        if rows
        else set()
    )
    fresh: list[events.PersonEvent] = []
    for message_id, person_event in run:
        if message_id is not None:
            if message_id not in first_seen:
                continue
            first_seen.discard(message_id)  # the same id later in the run is a repeat
        fresh.append(person_event)
    events.track_person_events(session, fresh)


# -- who a message is about --------------------------------------------------------------------------


def _known_person(session: Session, ws: WorkspaceContext, message: Message) -> Identifier | None:
    """The person a message is about: its ``userId``, else the person its ``anonymousId`` was linked to."""
    if message.user_id is not None:
        return Identifier("id", message.user_id)
    if message.anonymous_id is not None:
        person_id = anonymous.linked_person_id(session, ws.workspace_id, message.anonymous_id)
        person = session.get(Person, person_id) if person_id is not None else None
        if person is not None:
            return Identifier("cio_id", person.cio_id)
    return None


def _required_person(session: Session, ws: WorkspaceContext, message: Message) -> Identifier:
    ident = _known_person(session, ws, message)
    if ident is None:
        raise InvalidInput(f"{message.call} needs a userId", field="userId")
    return ident


# -- identify ----------------------------------------------------------------------------------------


def _identify(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    body = _profile_body(message.object("traits"))
    ident = _known_person(session, ws, message)
    email = body.get("email")
    if ident is None and isinstance(email, str) and email:
        # Customer.io identifies a person by the email trait when the call carries no userId.
        ident = Identifier("email", email)
    if ident is None:
        if message.anonymous_id is None:
            raise InvalidInput("userId, anonymousId or traits.email is required", field="userId")
        # Remembered traits become plain attributes when the anonymous id is identified, so only
        # plain ones are kept.
        plain = {key: value for key, value in body.items() if key not in people.SPECIAL_KEYS}
        check_attributes(plain, ws.settings.limits)
        anonymous.remember_traits(session, ws.workspace_id, message.anonymous_id, plain, now=now)
        return
    if message.anonymous_id is not None:
        # Links the anonymous id: its earlier events and traits merge into the person.
        body["anonymous_id"] = message.anonymous_id
    people.identify(session, ws, ident, body, now=now, timestamp=message.timestamp)


def _profile_body(traits: dict[str, Any]) -> dict[str, Any]:
    """Traits as a Track identify body: plain traits are attributes; ``email``, ``createdAt``,
    ``unsubscribed`` and ``cio_subscription_preferences`` keep their Track meaning."""
    body = {
        key: value
        for key, value in traits.items()
        if key not in RESERVED_TRAITS and not key.startswith(f"{PREFERENCES}.")
    }
    for key in ("email", "unsubscribed"):
        if key in traits:
            body[key] = traits[key]
    created = traits.get("createdAt", traits.get("created_at"))
    if isinstance(created, str) and not created.strip().isdigit():
        created = unix_time(created, "traits.createdAt")
    if created is not None:
        body["created_at"] = created
    preferences = _preferences(traits)
    if preferences is not None:
        body[PREFERENCES] = preferences
    return body


def _preferences(traits: dict[str, Any]) -> Any:
    """``cio_subscription_preferences`` as an object, updated by its dot-notation keys
    (``"cio_subscription_preferences.topics.topic_1": true`` changes one topic and keeps the others)."""
    preferences = traits.get(PREFERENCES)
    dotted = {
        key[len(PREFERENCES) + 1 :]: value
        for key, value in traits.items()
        if key.startswith(f"{PREFERENCES}.")
    }
    if not dotted:
        return preferences
    merged = dict(as_object(preferences, f"traits.{PREFERENCES}"))
    for path, value in dotted.items():
        section, _, name = path.partition(".")
        if not name:
            merged[section] = value
            continue
        current = merged.get(section)
        merged[section] = {**(current if isinstance(current, dict) else {}), name: value}
    return merged


# -- track, page, screen -------------------------------------------------------------------------------


def _track(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    name = _required_text(message.fields.get("event"), "event")
    semantic = SEMANTIC_EVENTS.get(name)
    if semantic is not None:
        semantic(session, ws, message, now)
        return
    event = _event(name, "event", message.object("properties"), message, ws.settings.limits)
    _record(session, ws, message, event, now)


def _page(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    _view(session, ws, message, now, "page")


def _screen(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    _view(session, ws, message, now, "screen")


def _view(session: Session, ws: WorkspaceContext, message: Message, now: int, type_: str) -> None:
    _record(session, ws, message, _view_event(message, type_, ws.settings.limits), now)


def _view_event(message: Message, type_: str, limits: Limits) -> EventInput:
    properties = message.object("properties")
    name = people.as_id(message.fields.get("name"), "name")
    if name is None and type_ == "page":
        # analytics.js may send a page call without a name; the page's path (else its URL) names it.
        page = message.object("context").get("page")
        page = page if isinstance(page, dict) else {}
        candidates = (properties.get("path"), properties.get("url"), page.get("path"), page.get("url"))
        name = next((value for value in candidates if isinstance(value, str) and value), None)
    if name is None:
        raise InvalidInput("name is required", field="name")
    category = message.fields.get("category")
    if isinstance(category, str) and category:
        # The Python library sends a page's category beside its name rather than in its properties.
        properties = {"category": category, **properties}
    return _event(name, type_, properties, message, limits)


def _event(name: str, type_: str, data: dict[str, Any], message: Message, limits: Limits) -> EventInput:
    return events.parse_event(
        {"name": name, "type": type_, "timestamp": message.timestamp, "data": data}, limits
    )


def _record(session: Session, ws: WorkspaceContext, message: Message, event: EventInput, now: int) -> None:
    if message.user_id is not None:
        ident = Identifier("id", message.user_id)
        events.track_person_event(session, ws, ident, event, now=now, source=SOURCE)
    elif message.anonymous_id is not None:
        events.track_anonymous_event(session, ws, message.anonymous_id, event, now=now, source=SOURCE)
    else:
        raise InvalidInput("userId or anonymousId is required", field="userId")


# -- semantic events ------------------------------------------------------------------------------------


def _user_deleted(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    people.delete_person(session, ws, _required_person(session, ws, message))


def _user_suppressed(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    people.suppress(session, ws, _required_person(session, ws, message), now=now)


def _user_unsuppressed(session: Session, ws: WorkspaceContext, message: Message, _now: int) -> None:
    people.unsuppress(session, ws, _required_person(session, ws, message))


def _device_fields(message: Message) -> dict[str, Any]:
    """Mobile libraries send the device in ``context.device``; the JavaScript snippet in
    ``properties.device``."""
    for device in (message.object("context").get("device"), message.object("properties").get("device")):
        if isinstance(device, dict) and device.get("token"):
            return device
    raise InvalidInput("context.device.token is required", field="context.device.token")


def _device_created(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    ident = _required_person(session, ws, message)
    device = _device_fields(message)
    platform = device.get("type")
    if not isinstance(platform, str) or platform.lower() not in people.DEVICE_PLATFORMS:
        raise InvalidInput("context.device.type must be ios or android", field="context.device.type")
    # The event's other properties (app_version, push_enabled, …) are the device's attributes.
    attributes = {key: value for key, value in message.object("properties").items() if key != "device"}
    parsed = people.parse_device(
        {
            "token": device["token"],
            "platform": platform,
            "last_used": message.timestamp,
            "attributes": attributes,
        },
        token_key="token",
    )
    people.add_device(session, ws, ident, parsed, now=now)


def _device_deleted(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    ident = _required_person(session, ws, message)
    token = _required_text(_device_fields(message)["token"], "context.device.token")
    people.delete_device(session, ws, ident, token, now=now)


def _object_ref(object_id: Any, type_id: Any, *, id_field: str, type_field: str) -> ObjectRef:
    """An object named by id and type; the type defaults to ``1``, as in Customer.io."""
    type_text = people.as_id(type_id, type_field) or "1"
    if not (type_text.isascii() and type_text.isdigit()) or len(type_text) > 32:
        raise InvalidInput(f"{type_field} must be an object type id (an integer)", field=type_field)
    return ObjectRef(type_id=type_text, object_id=_required_text(object_id, id_field))


def _properties_object_ref(message: Message) -> ObjectRef:
    properties = message.object("properties")
    return _object_ref(
        properties.get("objectId"),
        properties.get("objectTypeId"),
        id_field="properties.objectId",
        type_field="properties.objectTypeId",
    )


def _relationship_deleted(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    ident = _required_person(session, ws, message)
    ref = _properties_object_ref(message)
    person = find_person(session, ws.workspace_id, ident)
    obj = objects.find_object(session, ws.workspace_id, ref)
    if person is not None and obj is not None:
        objects.unrelate(session, ws.workspace_id, person.id, obj, now=now)


def _object_deleted(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    objects.delete_object(session, ws.workspace_id, _properties_object_ref(message), now=now)


def _report_delivery(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    properties = message.object("properties")
    body = {
        "delivery_id": properties.get("deliveryId"),
        "metric": properties.get("metric"),
        "recipient": properties.get("recipient"),
        "reason": properties.get("reason"),
        "href": properties.get("href"),
        "timestamp": message.timestamp,
    }
    deliveries.report_metric(session, ws.workspace_id, body, now=now, source=SOURCE)


# -- group and alias ------------------------------------------------------------------------------------


def _group(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    """Create or update the object ``groupId`` and relate the message's person to it."""
    limits = ws.settings.limits
    traits = message.object("traits")
    ref = _object_ref(
        message.fields.get("groupId"),
        traits.get("object_type_id", traits.get("objectTypeId")),
        id_field="groupId",
        type_field="traits.object_type_id",
    )
    relationship = as_object(traits.get("relationshipAttributes"), "traits.relationshipAttributes")
    attributes = {key: value for key, value in traits.items() if key not in GROUP_TRAITS}
    ident = _known_person(session, ws, message)
    person = people.ensure_person(session, ws, ident, now=now) if ident is not None else None
    obj = objects.upsert_object(session, ws.workspace_id, ref, attributes, now=now, limits=limits)
    if obj is None:
        return
    if person is not None:
        objects.relate(session, ws.workspace_id, person.id, obj, relationship, now=now, limits=limits)
    elif message.anonymous_id is not None:
        # Nobody is identified with this visitor yet: the relationship applies when someone is.
        anonymous.relate_when_identified(
            session, ws.workspace_id, message.anonymous_id, obj, relationship, now=now, limits=limits
        )


def _alias(session: Session, ws: WorkspaceContext, message: Message, now: int) -> None:
    """``previousId`` becomes ``userId``.

    A person with id ``previousId`` is renamed to ``userId`` when nobody has that id yet (keeping their
    cio_id and history), else merged into the ``userId`` person. Any other ``previousId`` is an anonymous
    id: it is linked to the ``userId`` person (created if new), which merges its events and traits.
    """
    previous = _required_text(message.fields.get("previousId"), "previousId")
    check_identifier(previous, ws.settings.limits, field_name="previousId")
    if message.user_id is None:
        raise InvalidInput("userId is required", field="userId")
    if previous == message.user_id:
        return
    target = Identifier("id", message.user_id)
    source = find_person(session, ws.workspace_id, Identifier("id", previous))
    if source is None:
        people.identify(session, ws, target, {"anonymous_id": previous}, now=now)
    elif find_person(session, ws.workspace_id, target) is None:
        people.identify(session, ws, Identifier("cio_id", source.cio_id), {"id": message.user_id}, now=now)
    else:
        people.merge(session, ws, target, Identifier("id", previous), now=now)


Handler = Callable[[Session, WorkspaceContext, Message, int], None]

HANDLERS: dict[str, Handler] = {
    "identify": _identify,
    "track": _track,
    "page": _page,
    "screen": _screen,
    "group": _group,
    "alias": _alias,
}

SEMANTIC_EVENTS: dict[str, Handler] = {
    "User Deleted": _user_deleted,
    "User Suppressed": _user_suppressed,
    "User Unsuppressed": _user_unsuppressed,
    "Device Created or Updated": _device_created,
    "Device Deleted": _device_deleted,
    "Relationship Deleted": _relationship_deleted,
    "Object Deleted": _object_deleted,
    "Report Delivery Event": _report_delivery,
}

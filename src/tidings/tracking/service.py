"""What the links in a message do, and the subscription data behind them.

The public pages (:mod:`tidings.api.tracking`) carry no credentials: a signed token is the capability (see
:mod:`tidings.tracking.links`). Every function here takes the workspace id from the URL and the token, and
refuses (:class:`LinkNotFound`) a token that the workspace's keys did not sign for that purpose, so a token
of one workspace is worthless under another's id and a click token cannot be replayed as an unsubscribe.

Tokens come in two kinds:

* delivery-bound, put into a message by :class:`~tidings.tracking.links.DeliveryLinks`: the payload names
  the delivery (and, for clicks, the URL); they never expire, like the message that carries them;
* person-bound (:data:`PERSON_PREFERENCES`), made by the App API's
  ``GET /v1/subscription_center/{customer_id}/token`` for a subscription center outside any message, served
  at ``/p/{workspace_id}/person/{token}`` (a path of its own, so neither kind is tried as the other). The
  payload is ``[cio_id, expires_at]``: the cio_id because it never changes (an id or email may), the expiry
  because such a link is handed out on request (24 hours, as Customer.io's).

Subscription changes are applied the way identify applies the same attributes (an ``attribute_change``
activity, real-time segment keys ``attr:unsubscribed`` / ``attr:cio_subscription_preferences``) and are
reported to reporting webhooks as ``customer_*`` events; delivery metrics go through
:func:`tidings.deliveries.lifecycle.record` only.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from tidings.deliveries import lifecycle
from tidings.errors import Conflict, InvalidInput, NotFound, TidingsError
from tidings.models import AddressSuppression, Delivery, Person, SubscriptionTopic
from tidings.people import activity
from tidings.people.identifiers import IDENTIFIER_TYPES, Identifier, email_key, find_person
from tidings.segments import realtime
from tidings.tracking import links
from tidings.webhooks import service as webhooks

# The salt of person-bound subscription center tokens (every purpose has its own; see links).
PERSON_PREFERENCES = "person-preferences"
PERSON_TOKEN_SECONDS = 86400
# A click token holds its URL, so it is as long as the URL and then some; nothing legitimate is longer.
MAX_TOKEN_CHARS = 16_000
# Bigint ids: anything outside cannot exist, and PostgreSQL would refuse to compare with it.
MAX_ID = 2**63 - 1
SUPPRESSION_TYPES = ("bounces", "blocks", "spam_reports", "invalid_emails")
MAX_SUPPRESSION_PAGE = 1000
MAX_EMAIL_CHARS = 320
MAX_TOPIC_NAME_CHARS = 255
MAX_TOPIC_DESCRIPTION_CHARS = 2000
PREFERENCES_KEY = "cio_subscription_preferences"

PreferencesKind = Literal["delivery", "person"]


class LinkNotFound(NotFound):
    """A token that does not verify, or names something that is gone. Deliberately one answer for every
    cause, so a guesser learns nothing."""

    def __init__(self, message: str = "this link is not valid") -> None:
        super().__init__(message)


class LinkExpired(TidingsError):
    status_code = 410
    name = "link_expired"

    def __init__(self) -> None:
        super().__init__("this link has expired; ask for a new one")


# -- tokens --------------------------------------------------------------------------------------------


def workspace_id_of(raw: str) -> int:
    """The workspace id of a public URL; anything that is not one is simply not found."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 0 < int(raw) <= MAX_ID:
        raise LinkNotFound()
    return int(raw)


def check_link(session: Session, workspace_id: int, purpose: str, token: str) -> list[Any]:
    """The payload of ``token`` if the workspace signed it for ``purpose``. Read-only: keys are never
    created here, so a workspace that never sent a message has no valid tokens."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise LinkNotFound()
    keys = links.link_keys(session, workspace_id, create=False)
    try:
        payload = links.verify(keys, purpose, token)
    except links.BadLink as exc:
        fresh = links.link_keys(session, workspace_id, create=False, cached=False)
        if fresh == keys:
            raise LinkNotFound() from exc
        try:
            payload = links.verify(fresh, purpose, token)
        except links.BadLink as again:
            raise LinkNotFound() from again
    if not isinstance(payload, list) or not payload:
        raise LinkNotFound()
    return payload


def _delivery_id(session: Session, workspace_id: int, purpose: str, token: str) -> str:
    payload = check_link(session, workspace_id, purpose, token)
    delivery_id = payload[0]
    if not isinstance(delivery_id, str) or not delivery_id:
        raise LinkNotFound()
    return delivery_id


def _delivery(session: Session, workspace_id: int, delivery_id: str) -> Delivery | None:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.workspace_id != workspace_id:
        return None
    return delivery


def _click_payload(session: Session, workspace_id: int, token: str) -> tuple[str, str]:
    payload = check_link(session, workspace_id, links.CLICK, token)
    if len(payload) != 2 or not all(isinstance(item, str) and item for item in payload):
        raise LinkNotFound()
    delivery_id, url = payload
    # Only web links are ever signed (see rewrite); checking again costs nothing and means no signed
    # token, however it was made, can send a browser to javascript: or data:.
    if not url.lower().startswith(("http://", "https://")):
        raise LinkNotFound()
    return delivery_id, url


def person_token(session: Session, workspace_id: int, cio_id: str, *, now: int) -> str:
    key = links.link_keys(session, workspace_id)[0]
    return links.sign(key, PERSON_PREFERENCES, [cio_id, now + PERSON_TOKEN_SECONDS])


def preferences_url(public_url: str, workspace_id: int, kind: PreferencesKind, token: str) -> str:
    middle = "person/" if kind == "person" else ""
    return f"{public_url.rstrip('/')}/p/{workspace_id}/{middle}{token}"


# -- open pixel and click redirects ----------------------------------------------------------------------


def open(session: Session, workspace_id: int, token: str, now: int) -> bool:
    """Record an open of the delivery; True on its first. Every open is logged; a delivery that no longer
    exists is not an error (the pixel still answers)."""
    delivery = _delivery(session, workspace_id, _delivery_id(session, workspace_id, links.OPEN, token))
    if delivery is None:
        return False
    return lifecycle.record(session, delivery, "opened", now=now, source="tracking")


def click_target(session: Session, workspace_id: int, token: str) -> str:
    """Where a click token leads, without recording anything."""
    return _click_payload(session, workspace_id, token)[1]


def click(session: Session, workspace_id: int, token: str, now: int) -> str:
    """Record a click and return the URL to redirect to: always the one signed into the token."""
    delivery_id, url = _click_payload(session, workspace_id, token)
    delivery = _delivery(session, workspace_id, delivery_id)
    if delivery is not None:
        lifecycle.record(
            session,
            delivery,
            "clicked",
            now=now,
            source="tracking",
            href=url,
            extra={"link_id": links.link_id(url)},
        )
    return url


# -- view in browser -------------------------------------------------------------------------------------


def view(session: Session, workspace_id: int, token: str) -> str | None:
    """The message as sent, as an HTML document; None when its content was not kept."""
    delivery = _delivery(session, workspace_id, _delivery_id(session, workspace_id, links.VIEW, token))
    if delivery is None:
        raise LinkNotFound()
    content = delivery.rendered
    if delivery.forgotten or not content:
        return None
    body = content.get("html")
    if isinstance(body, str) and body:
        return body
    text = content.get("text") or content.get("body")
    if isinstance(text, str) and text:
        title = html.escape(delivery.subject or "Message")
        return (
            f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f'<body><pre style="white-space:pre-wrap">{html.escape(text)}</pre></body></html>'
        )
    return None


# -- unsubscribe and resubscribe -------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """What the unsubscribe page shows. ``preferences_token`` opens the same delivery's subscription
    center; it is None when the person is gone (nothing left to manage)."""

    email: str | None
    unsubscribed: bool
    preferences_token: str | None


def _subscription(session: Session, person: Person | None, delivery: Delivery) -> Subscription:
    if person is None:
        return Subscription(email=delivery.recipient, unsubscribed=True, preferences_token=None)
    key = links.link_keys(session, delivery.workspace_id, create=False)[0]
    return Subscription(
        email=person.email or delivery.recipient,
        unsubscribed=person.unsubscribed,
        preferences_token=links.sign(key, links.PREFERENCES, [delivery.id]),
    )


def _unsubscribe_target(session: Session, workspace_id: int, token: str) -> tuple[Delivery, Person | None]:
    delivery = _delivery(session, workspace_id, _delivery_id(session, workspace_id, links.UNSUBSCRIBE, token))
    if delivery is None:
        raise LinkNotFound()
    person = session.get(Person, delivery.person_id) if delivery.person_id is not None else None
    return delivery, person


def subscription(session: Session, workspace_id: int, token: str) -> Subscription:
    """For the unsubscribe page (GET): changes nothing, since mail scanners fetch every link."""
    delivery, person = _unsubscribe_target(session, workspace_id, token)
    return _subscription(session, person, delivery)


def unsubscribe(session: Session, workspace_id: int, token: str, now: int) -> Subscription:
    """Unsubscribe the delivery's person, attributed to the delivery. Idempotent: posting again (clients
    retry one-click posts) records nothing more while the person stays unsubscribed."""
    delivery, person = _unsubscribe_target(session, workspace_id, token)
    if delivery.unsubscribed_at is None or (person is not None and not person.unsubscribed):
        lifecycle.record(session, delivery, "unsubscribed", now=now, source="unsubscribe")
    if person is not None:
        change_subscription(session, person, delivery, unsubscribed=True, now=now, source="unsubscribe_link")
    return _subscription(session, person, delivery)


def resubscribe(session: Session, workspace_id: int, token: str, now: int) -> Subscription:
    delivery, person = _unsubscribe_target(session, workspace_id, token)
    if person is not None:
        change_subscription(session, person, delivery, unsubscribed=False, now=now, source="unsubscribe_link")
    return _subscription(session, person, delivery)


# -- subscription preferences ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicChoice:
    id: int
    name: str
    description: str
    subscribed: bool


@dataclass(frozen=True)
class Preferences:
    """What the subscription center shows: the person's choice for every topic of the workspace (the
    topic's default where they made none) and the global unsubscribe."""

    email: str | None
    unsubscribed: bool
    topics: list[TopicChoice]


def _preferences_target(
    session: Session, workspace_id: int, kind: PreferencesKind, token: str, now: int
) -> tuple[Person, Delivery | None]:
    if kind == "person":
        payload = check_link(session, workspace_id, PERSON_PREFERENCES, token)
        if len(payload) != 2 or not isinstance(payload[0], str) or not isinstance(payload[1], int):
            raise LinkNotFound()
        cio_id, expires_at = payload
        if now > expires_at:
            raise LinkExpired()
        person = find_person(session, workspace_id, Identifier("cio_id", cio_id))
        if person is None:
            raise LinkNotFound()
        return person, None
    delivery = _delivery(session, workspace_id, _delivery_id(session, workspace_id, links.PREFERENCES, token))
    found = session.get(Person, delivery.person_id) if delivery and delivery.person_id is not None else None
    if delivery is None or found is None:
        raise LinkNotFound()
    return found, delivery


def _topics(session: Session, workspace_id: int) -> list[SubscriptionTopic]:
    return list(
        session.scalars(
            select(SubscriptionTopic)
            .where(SubscriptionTopic.workspace_id == workspace_id)
            .order_by(SubscriptionTopic.id)
        )
    )


def _preferences(session: Session, person: Person, delivery: Delivery | None) -> Preferences:
    choices = (person.subscription_preferences or {}).get("topics") or {}
    topics = []
    for topic in _topics(session, person.workspace_id):
        chosen = choices.get(f"topic_{topic.id}")
        subscribed = chosen if isinstance(chosen, bool) else topic.default_subscribed
        topics.append(TopicChoice(topic.id, topic.name, topic.description or "", subscribed))
    email = person.email or (delivery.recipient if delivery is not None else None)
    return Preferences(email=email, unsubscribed=person.unsubscribed, topics=topics)


def preferences(
    session: Session, workspace_id: int, kind: PreferencesKind, token: str, *, now: int
) -> Preferences:
    person, delivery = _preferences_target(session, workspace_id, kind, token, now)
    return _preferences(session, person, delivery)


def update_preferences(
    session: Session,
    workspace_id: int,
    kind: PreferencesKind,
    token: str,
    *,
    topics: dict[int, bool],
    unsubscribed: bool,
    now: int,
) -> Preferences:
    """Save the subscription center: a choice for each topic named in ``topics`` (topics not in the
    workspace are ignored) and the global unsubscribe."""
    person, delivery = _preferences_target(session, workspace_id, kind, token, now)
    known = {topic.id for topic in _topics(session, workspace_id)}
    choices = {f"topic_{topic_id}": flag for topic_id, flag in topics.items() if topic_id in known}
    if unsubscribed and not person.unsubscribed and delivery is not None:
        lifecycle.record(session, delivery, "unsubscribed", now=now, source="unsubscribe")
    change_subscription(
        session,
        person,
        delivery,
        unsubscribed=unsubscribed,
        topics=choices,
        now=now,
        source="subscription_center",
    )
    return _preferences(session, person, delivery)


def change_subscription(
    session: Session,
    person: Person,
    delivery: Delivery | None,
    *,
    unsubscribed: bool,
    topics: dict[str, bool] | None = None,
    now: int,
    source: str,
) -> None:
    """Apply a person's own subscription choices as identify would apply the same attributes."""
    workspace_id = person.workspace_id
    changes: dict[str, dict[str, Any]] = {}
    if unsubscribed != person.unsubscribed:
        changes["unsubscribed"] = {"from": person.unsubscribed, "to": unsubscribed}
        person.unsubscribed = unsubscribed
        stamps = dict(person.attribute_timestamps or {})
        stamps["unsubscribed"] = now
        person.attribute_timestamps = stamps
    current: dict[str, Any] = person.subscription_preferences or {}
    if topics:
        merged = {key: dict(value) if isinstance(value, dict) else value for key, value in current.items()}
        merged["topics"] = {**(merged.get("topics") or {}), **topics}
        if merged != current:
            changes[PREFERENCES_KEY] = {"from": current, "to": merged}
            # A new dict, not an in-place edit: JSON columns only notice assignment.
            person.subscription_preferences = merged
    if not changes:
        return
    person.updated_at = now
    session.flush()
    delivery_id = delivery.id if delivery is not None else None
    data: dict[str, Any] = {"created": False, "changes": changes, "source": source}
    if delivery_id is not None:
        data["delivery_id"] = delivery_id
    activity.record(
        session,
        workspace_id,
        person.id,
        "attribute_change",
        now=now,
        data=data,
        delivery_id=delivery_id,
        delivery_type=delivery.channel if delivery is not None else None,
    )
    realtime.touched(session, workspace_id, [person.id], [f"attr:{name}" for name in changes], now=now)
    # Customer.io's customer_(un)subscribed data names the person only; the preferences event also names
    # the message the change came from.
    event = webhooks.customer_data(person)
    if "unsubscribed" in changes:
        webhooks.emit(
            session,
            workspace_id,
            object_type="customer",
            metric="unsubscribed" if unsubscribed else "subscribed",
            timestamp=now,
            data=dict(event),
        )
    if PREFERENCES_KEY in changes:
        if delivery_id is not None:
            event["delivery_id"] = delivery_id
        webhooks.emit(
            session,
            workspace_id,
            object_type="customer",
            metric="cio_subscription_preferences_changed",
            timestamp=now,
            data={**event, "content": orjson.dumps(person.subscription_preferences).decode()},
        )


def subscription_center_token(
    session: Session, workspace_id: int, identifier: str, id_type: str | None, *, now: int, public_url: str
) -> dict[str, str]:
    """A person-bound subscription center link. Without ``id_type`` the identifier is tried as an id and,
    when it looks like one, as an email (Customer.io takes either)."""
    if id_type is not None and id_type not in IDENTIFIER_TYPES:
        raise InvalidInput("id_type must be id, email or cio_id", field="id_type")
    person = None
    for kind in IDENTIFIER_TYPES:
        wanted = kind == id_type if id_type else kind == "id" or (kind == "email" and "@" in identifier)
        if wanted:
            person = find_person(session, workspace_id, Identifier(kind, identifier))
            if person is not None:
                break
    if person is None:
        # Customer.io answers 400 for an identifier that matches nobody.
        raise InvalidInput(f"no person has identifier {identifier!r}", field="customer_id")
    token = person_token(session, workspace_id, person.cio_id, now=now)
    return {"token": token, "url": preferences_url(public_url, workspace_id, "person", token)}


# -- topics (App API) ------------------------------------------------------------------------------------


def topic_view(topic: SubscriptionTopic) -> dict[str, Any]:
    return {
        "id": topic.id,
        "identifier": f"topic_{topic.id}",
        "name": topic.name,
        "description": topic.description or "",
        "subscribed_by_default": topic.default_subscribed,
    }


def list_topics(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    return [topic_view(topic) for topic in _topics(session, workspace_id)]


def _topic(session: Session, workspace_id: int, topic_id: int) -> SubscriptionTopic:
    topic = session.get(SubscriptionTopic, topic_id) if 0 < topic_id <= MAX_ID else None
    if topic is None or topic.workspace_id != workspace_id:
        raise NotFound(f"subscription topic {topic_id} not found")
    return topic


def get_topic(session: Session, workspace_id: int, topic_id: int) -> dict[str, Any]:
    return topic_view(_topic(session, workspace_id, topic_id))


def _topic_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    # Accept the topic bare or wrapped as {"topic": {...}}, like other App API resources.
    if isinstance(body.get("topic"), dict):
        body = body["topic"]
    fields: dict[str, Any] = {}
    if "name" in body or creating:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("name must be a non-empty string", field="name")
        if len(name) > MAX_TOPIC_NAME_CHARS:
            raise InvalidInput(f"name is longer than {MAX_TOPIC_NAME_CHARS} characters", field="name")
        fields["name"] = name.strip()
    if body.get("description") is not None:
        description = body["description"]
        if not isinstance(description, str):
            raise InvalidInput("description must be a string", field="description")
        if len(description) > MAX_TOPIC_DESCRIPTION_CHARS:
            raise InvalidInput(
                f"description is longer than {MAX_TOPIC_DESCRIPTION_CHARS} characters", field="description"
            )
        fields["description"] = description
    if body.get("subscribed_by_default") is not None:
        flag = body["subscribed_by_default"]
        if not isinstance(flag, bool):
            raise InvalidInput("subscribed_by_default must be true or false", field="subscribed_by_default")
        fields["default_subscribed"] = flag
    return fields


def _name_taken(session: Session, workspace_id: int, name: str, topic_id: int | None) -> None:
    other = session.scalar(
        select(SubscriptionTopic.id).where(
            SubscriptionTopic.workspace_id == workspace_id, SubscriptionTopic.name == name
        )
    )
    if other is not None and other != topic_id:
        raise Conflict(f"a subscription topic named {name!r} exists already (id {other})")


def create_topic(session: Session, workspace_id: int, body: dict[str, Any], *, now: int) -> dict[str, Any]:
    fields = _topic_fields(body, creating=True)
    _name_taken(session, workspace_id, fields["name"], None)
    topic = SubscriptionTopic(
        workspace_id=workspace_id,
        name=fields["name"],
        description=fields.get("description", ""),
        default_subscribed=fields.get("default_subscribed", True),
        created_at=now,
    )
    session.add(topic)
    session.flush()
    return topic_view(topic)


def update_topic(session: Session, workspace_id: int, topic_id: int, body: dict[str, Any]) -> dict[str, Any]:
    topic = _topic(session, workspace_id, topic_id)
    fields = _topic_fields(body, creating=False)
    if "name" in fields:
        _name_taken(session, workspace_id, fields["name"], topic.id)
    for name, value in fields.items():
        setattr(topic, name, value)
    session.flush()
    return topic_view(topic)


def delete_topic(session: Session, workspace_id: int, topic_id: int, *, now: int) -> None:
    """Delete a topic and forget people's choices about it. SQLite hands a deleted highest id to the next
    row, so a stale ``topic_<id>`` choice would otherwise silently apply to a new, unrelated topic."""
    topic = _topic(session, workspace_id, topic_id)
    key = f"topic_{topic.id}"
    # A text match narrows the scan on both stores; the exact key is checked below (LIKE's "_" matches
    # any character).
    people = session.scalars(
        select(Person).where(
            Person.workspace_id == workspace_id,
            cast(Person.subscription_preferences, Text).like(f'%"{key}"%'),
        )
    ).all()
    touched = []
    for person in people:
        prefs = person.subscription_preferences or {}
        choices = prefs.get("topics")
        if isinstance(choices, dict) and key in choices:
            person.subscription_preferences = {
                **prefs,
                "topics": {name: flag for name, flag in choices.items() if name != key},
            }
            touched.append(person.id)
    session.delete(topic)
    session.flush()
    if touched:
        realtime.touched(session, workspace_id, touched, [f"attr:{PREFERENCES_KEY}"], now=now)


# -- ESP suppression (App API) ---------------------------------------------------------------------------


def _suppression_type(kind: str) -> str:
    if kind not in SUPPRESSION_TYPES:
        raise InvalidInput(
            f"suppression type must be one of {', '.join(SUPPRESSION_TYPES)}", field="suppression_type"
        )
    return kind


def _address(email: str) -> str:
    key = email_key(email)
    if not key or "@" not in key or len(key) > MAX_EMAIL_CHARS or any(c.isspace() for c in key):
        raise InvalidInput("email_address must be an email address", field="email_address")
    return key


def suppression_view(row: AddressSuppression) -> dict[str, Any]:
    return {"email": row.address, "created": row.created_at, "reason": row.reason or ""}


def list_suppressions(
    session: Session, workspace_id: int, kind: str, *, limit: int, offset: int
) -> dict[str, Any]:
    kind = _suppression_type(kind)
    rows = session.scalars(
        select(AddressSuppression)
        .where(AddressSuppression.workspace_id == workspace_id, AddressSuppression.type == kind)
        .order_by(AddressSuppression.created_at, AddressSuppression.address)
        .limit(limit)
        .offset(offset)
    )
    return {"category": kind, "suppressions": [suppression_view(row) for row in rows]}


def add_suppression(
    session: Session, workspace_id: int, kind: str, email: str, *, now: int, reason: str | None = None
) -> dict[str, Any]:
    """Suppress an address. An address is on one list at a time (the table's key is the address): adding
    it to another list moves it there, since either way it is not mailed."""
    kind, address = _suppression_type(kind), _address(email)
    row = session.get(AddressSuppression, (workspace_id, address))
    text = reason or "added through the App API"
    if row is None:
        row = AddressSuppression(
            workspace_id=workspace_id, address=address, type=kind, reason=text, created_at=now
        )
        session.add(row)
    elif row.type != kind:
        row.type, row.reason, row.delivery_id, row.created_at = kind, text, None, now
    session.flush()
    return suppression_view(row)


def remove_suppression(session: Session, workspace_id: int, kind: str, email: str) -> None:
    kind, address = _suppression_type(kind), _address(email)
    row = session.get(AddressSuppression, (workspace_id, address))
    if row is None or row.type != kind:
        raise NotFound(f"{address} is not on the {kind} list")
    session.delete(row)
    session.flush()


def search_suppression(session: Session, workspace_id: int, email: str) -> dict[str, Any]:
    row = session.get(AddressSuppression, (workspace_id, _address(email)))
    found = [] if row is None else [{**suppression_view(row), "type": row.type}]
    return {"suppressions": found}

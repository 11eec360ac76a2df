"""Reporting webhooks: the endpoints a workspace configures (App API ``/v1/reporting_webhooks``) and the
events Tidings emits to them.

:func:`emit` runs inside the transaction that made the event happen and writes one ``WebhookPost`` per
subscribed webhook (an outbox), so an event is posted if and only if what caused it committed, and a
request never waits on somebody else's endpoint. :mod:`tidings.webhooks.sender` posts the outbox.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import delete, event, func, select
from sqlalchemy.orm import Session, SessionTransaction

from tidings.errors import InvalidInput, NotFound
from tidings.ids import new_ulid
from tidings.models import (
    Delivery,
    DeliveryMetricReport,
    Device,
    Person,
    PersonRow,
    ReportingWebhook,
    WebhookPost,
)

# Customer.io's event types (reference §6), by object type. Config-side names are ``<object_type>_<metric>``.
EVENTS: dict[str, tuple[str, ...]] = {
    "customer": ("subscribed", "unsubscribed", "cio_subscription_preferences_changed"),
    "email": (
        "drafted",
        "attempted",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "converted",
        "unsubscribed",
        "bounced",
        "dropped",
        "failed",
        "undeliverable",
        "spammed",
    ),
    "push": (
        "drafted",
        "attempted",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "converted",
        "bounced",
        "dropped",
        "failed",
        "undeliverable",
    ),
    "in_app": ("drafted", "attempted", "sent", "opened", "clicked", "converted", "failed", "undeliverable"),
    "sms": (
        "drafted",
        "attempted",
        "sent",
        "delivered",
        "clicked",
        "converted",
        "bounced",
        "failed",
        "undeliverable",
        "replied",
    ),
    "whatsapp": (
        "drafted",
        "attempted",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "converted",
        "bounced",
        "dropped",
        "failed",
        "undeliverable",
        "replied",
    ),
    "slack": ("drafted", "attempted", "sent", "clicked", "failed", "undeliverable"),
    "webhook": ("drafted", "attempted", "sent", "clicked", "failed", "undeliverable"),
}
KNOWN_EVENTS = frozenset(
    f"{object_type}_{metric}" for object_type, metrics in EVENTS.items() for metric in metrics
)
# Without full_resolution a webhook only hears of a delivery's first open and first click.
UNIQUE_METRICS = frozenset({"opened", "clicked"})
# Metrics whose report reason is the event's failure_message.
FAILURE_METRICS = frozenset({"attempted", "bounced", "dropped", "failed", "undeliverable"})
# Every emit writes one row per subscribed webhook, so their number bounds the write amplification.
MAX_WEBHOOKS_PER_WORKSPACE = 100
MAX_NAME_CHARS = 255
MAX_ENDPOINT_BYTES = 2048
FLAGS = ("disabled", "full_resolution", "with_content")
# Bigint ids: anything outside cannot exist, and PostgreSQL would refuse to compare with it.
_MAX_ID = 2**63 - 1


# -- configuration -----------------------------------------------------------------------------------


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("name must be a non-empty string", field="name")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidInput(f"name is longer than {MAX_NAME_CHARS} characters", field="name")
    return value


def _endpoint(value: Any) -> str:
    """An absolute http(s) URL. Whether it may be called (SSRF) is decided at each post, since what a host
    name resolves to can change after it was configured."""
    problem = "endpoint must be an http or https URL"
    if not isinstance(value, str) or not value:
        raise InvalidInput(problem, field="endpoint")
    if len(value.encode()) > MAX_ENDPOINT_BYTES:
        raise InvalidInput(f"endpoint is longer than {MAX_ENDPOINT_BYTES} bytes", field="endpoint")
    if any(char.isspace() or ord(char) < 32 for char in value):
        raise InvalidInput(f"{problem}, without spaces or control characters", field="endpoint")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number in range
        httpx.URL(value)
    except (ValueError, httpx.InvalidURL) as exc:
        raise InvalidInput(f"{problem}: {exc}", field="endpoint") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{problem}, not {value!r}", field="endpoint")
    return value


def _events(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput("events must be a list of event names such as email_opened", field="events")
    for item in value:
        if item not in KNOWN_EVENTS:
            raise InvalidInput(
                f"unknown event {item!r}: events are <object_type>_<metric> names such as email_opened",
                field="events",
            )
    return list(dict.fromkeys(value))


def _fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The settable fields present in ``body``, validated. Other keys (``id``, ``status`` from a GET that
    is sent back as it was) are ignored."""
    if creating:
        for required in ("name", "endpoint", "events"):
            if body.get(required) is None:
                raise InvalidInput(f"{required} is required", field=required)
    fields: dict[str, Any] = {}
    if "name" in body:
        fields["name"] = _name(body["name"])
    if "endpoint" in body:
        fields["endpoint"] = _endpoint(body["endpoint"])
    if "events" in body:
        fields["events"] = _events(body["events"])
    for flag in FLAGS:
        if flag in body:
            if not isinstance(body[flag], bool):
                raise InvalidInput(f"{flag} must be true or false", field=flag)
            fields[flag] = body[flag]
    return fields


def webhook_view(webhook: ReportingWebhook, pending: int) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "name": webhook.name,
        "endpoint": webhook.endpoint,
        "events": list(webhook.events or []),
        "disabled": webhook.disabled,
        "full_resolution": webhook.full_resolution,
        "with_content": webhook.with_content,
        # Tidings' addition: whether posts are getting through, and how many wait. last_error is the most
        # recent failure and stays after later successes (failing_since says whether it is current).
        "status": {
            "failing_since": webhook.failing_since,
            "last_status": webhook.last_status,
            "last_error": webhook.last_error,
            "last_success_at": webhook.last_success_at,
            "pending": pending,
        },
    }


def _pending(session: Session, webhook_ids: list[int]) -> dict[int, int]:
    if not webhook_ids:
        return {}
    rows = session.execute(
        select(WebhookPost.webhook_id, func.count())
        .where(WebhookPost.webhook_id.in_(webhook_ids), WebhookPost.state == "pending")
        .group_by(WebhookPost.webhook_id)
    )
    return dict(rows.all())


def _load(session: Session, workspace_id: int, webhook_id: int) -> ReportingWebhook:
    webhook = None
    if 0 < webhook_id <= _MAX_ID:
        webhook = session.scalar(
            select(ReportingWebhook).where(
                ReportingWebhook.id == webhook_id, ReportingWebhook.workspace_id == workspace_id
            )
        )
    if webhook is None:
        raise NotFound(f"reporting webhook {webhook_id} not found", field="webhook_id")
    return webhook


def list_webhooks(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    webhooks = list(
        session.scalars(
            select(ReportingWebhook)
            .where(ReportingWebhook.workspace_id == workspace_id)
            .order_by(ReportingWebhook.id)
        )
    )
    pending = _pending(session, [webhook.id for webhook in webhooks])
    return [webhook_view(webhook, pending.get(webhook.id, 0)) for webhook in webhooks]


def get_webhook(session: Session, workspace_id: int, webhook_id: int) -> dict[str, Any]:
    webhook = _load(session, workspace_id, webhook_id)
    return webhook_view(webhook, _pending(session, [webhook.id]).get(webhook.id, 0))


def create_webhook(session: Session, workspace_id: int, body: dict[str, Any], *, now: int) -> dict[str, Any]:
    fields = _fields(body, creating=True)
    count = session.scalar(
        select(func.count())
        .select_from(ReportingWebhook)
        .where(ReportingWebhook.workspace_id == workspace_id)
    )
    if (count or 0) >= MAX_WEBHOOKS_PER_WORKSPACE:
        raise InvalidInput(f"a workspace may have at most {MAX_WEBHOOKS_PER_WORKSPACE} reporting webhooks")
    webhook = ReportingWebhook(
        workspace_id=workspace_id,
        name=fields["name"],
        endpoint=fields["endpoint"],
        events=fields["events"],
        disabled=fields.get("disabled", False),
        full_resolution=fields.get("full_resolution", False),
        with_content=fields.get("with_content", False),
        created_at=now,
        updated_at=now,
    )
    session.add(webhook)
    session.flush()
    _forget_enabled(session)
    return webhook_view(webhook, 0)


def update_webhook(
    session: Session, workspace_id: int, webhook_id: int, body: dict[str, Any], *, now: int
) -> dict[str, Any]:
    """Replace the fields ``body`` gives; the others keep their values. Re-enabling a webhook lets its
    waiting posts go out."""
    webhook = _load(session, workspace_id, webhook_id)
    for key, value in _fields(body, creating=False).items():
        setattr(webhook, key, value)
    webhook.updated_at = now
    session.flush()
    _forget_enabled(session)
    return webhook_view(webhook, _pending(session, [webhook.id]).get(webhook.id, 0))


def delete_webhook(session: Session, workspace_id: int, webhook_id: int) -> None:
    """Its waiting posts go with it (the foreign key cascades)."""
    webhook = _load(session, workspace_id, webhook_id)
    session.execute(
        delete(ReportingWebhook)
        .where(ReportingWebhook.id == webhook.id)
        .execution_options(synchronize_session=False)
    )
    session.expunge(webhook)
    _forget_enabled(session)


# -- emitting ----------------------------------------------------------------------------------------


_CACHE_KEY = "tidings.webhooks.enabled"


def _enabled(session: Session, workspace_id: int) -> list[ReportingWebhook]:
    """The workspace's enabled webhooks, read once per transaction: a sending batch records many metrics,
    and a query per metric would also flush (and so un-batch) every pending insert."""
    cache: dict[int, list[ReportingWebhook]] = session.info.setdefault(_CACHE_KEY, {})
    found = cache.get(workspace_id)
    if found is None:
        found = cache[workspace_id] = list(
            session.scalars(
                select(ReportingWebhook)
                .where(ReportingWebhook.workspace_id == workspace_id, ReportingWebhook.disabled.is_(False))
                .order_by(ReportingWebhook.id)
            )
        )
    return found


def _forget_enabled(session: Session) -> None:
    session.info.pop(_CACHE_KEY, None)


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    # The root transaction and savepoints (a rolled-back one may have created or changed a webhook); not
    # the inner transactions every flush opens, or the cache would not outlive a flush.
    if transaction.parent is None or transaction.nested:
        _forget_enabled(session)


def _listening(webhooks: list[ReportingWebhook], object_type: str, metric: str) -> list[ReportingWebhook]:
    key = f"{object_type}_{metric}"
    return [webhook for webhook in webhooks if key in (webhook.events or [])]


def _subscribed(session: Session, workspace_id: int, object_type: str, metric: str) -> list[ReportingWebhook]:
    if f"{object_type}_{metric}" not in KNOWN_EVENTS:
        # Nobody can subscribe to it (email "deferred", say): skip the query.
        return []
    return _listening(_enabled(session, workspace_id), object_type, metric)


def _content_fields(object_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """The rendered message (``Delivery.rendered``) as §6 puts it into a ``_sent`` event: email gets its body
    as ``content`` and its custom headers as ``headers`` (name → list of values); push and webhook get the
    stringified payload; the other channels their body."""
    if object_type == "email":
        fields: dict[str, Any] = {}
        body = content.get("html") or content.get("text") or content.get("body")
        if isinstance(body, str):
            fields["content"] = body
        headers = content.get("headers")
        if isinstance(headers, dict) and headers:
            fields["headers"] = {
                str(name): [str(item) for item in value] if isinstance(value, list) else [str(value)]
                for name, value in headers.items()
            }
        return fields
    if object_type == "webhook" and isinstance(content.get("body"), str):
        return {"content": content["body"]}
    if object_type in ("push", "webhook"):
        payload = {key: value for key, value in content.items() if key != "devices"}
        return {"content": orjson.dumps(payload).decode()}
    body = content.get("body")
    return {"content": body if isinstance(body, str) else orjson.dumps(content).decode()}


def _enqueue(
    session: Session,
    webhooks: list[ReportingWebhook],
    *,
    object_type: str,
    metric: str,
    timestamp: int,
    data: dict[str, Any],
    unique: bool,
    content: dict[str, Any] | None,
    now: float,
) -> None:
    if metric in UNIQUE_METRICS and not unique:
        webhooks = [webhook for webhook in webhooks if webhook.full_resolution]
    if not webhooks:
        return
    # One event, one event_id, whichever endpoints hear of it: it is the receivers' dedup key.
    event_id = new_ulid()
    bodies: dict[bool, str] = {}
    for webhook in webhooks:
        with_content = metric == "sent" and content is not None and webhook.with_content
        if with_content not in bodies:
            event_data = (
                {**data, **_content_fields(object_type, content)} if with_content and content else data
            )
            envelope = {
                "event_id": event_id,
                "object_type": object_type,
                "metric": metric,
                "timestamp": timestamp,
                "data": event_data,
            }
            # Serialised once: the stored text is exactly what is signed and sent on every attempt.
            bodies[with_content] = orjson.dumps(envelope).decode()
        session.add(
            WebhookPost(
                workspace_id=webhook.workspace_id,
                webhook_id=webhook.id,
                event_id=event_id,
                body=bodies[with_content],
                payload={"object_type": object_type, "metric": metric},
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=int(now),
            )
        )


def emit(
    session: Session,
    workspace_id: int,
    *,
    object_type: str,
    metric: str,
    timestamp: int,
    data: dict[str, Any] | Callable[[], dict[str, Any]],
    unique: bool = True,
    content: dict[str, Any] | None = None,
    now: float | None = None,
) -> None:
    """Queue the event ``<object_type>_<metric>`` for every enabled webhook of the workspace subscribed to it,
    in the caller's transaction.

    ``unique`` is False for a delivery's second and later opens or clicks: only full_resolution webhooks get
    those. ``content`` is the rendered message of a ``sent`` event; webhooks with with_content get it (as
    §6 shapes it). ``now`` is when the post becomes due and its 7-day retry window starts; it defaults to
    ``timestamp``, right for callers reporting what just happened (not for back-dated reports). ``data``
    may be a function, called only when a webhook listens.
    """
    webhooks = _subscribed(session, workspace_id, object_type, metric)
    if webhooks:
        _enqueue(
            session,
            webhooks,
            object_type=object_type,
            metric=metric,
            timestamp=timestamp,
            # Built only when someone listens: most workspaces have no webhooks.
            data=data() if callable(data) else data,
            unique=unique,
            content=content,
            now=float(timestamp if now is None else now),
        )


# -- event data --------------------------------------------------------------------------------------


def _person_fields(person: Person | PersonRow | None) -> dict[str, Any]:
    """``customer_id`` (legacy: blank when the person is gone) and ``identifiers`` (every identifier a
    Tidings workspace has, null when not set)."""
    if person is None:
        return {"customer_id": "", "identifiers": {"id": None, "email": None}}
    return {
        "customer_id": person.customer_id or "",
        "identifiers": {"id": person.customer_id, "email": person.email, "cio_id": person.cio_id},
    }


def customer_data(person: Person | PersonRow) -> dict[str, Any]:
    """The ``data`` of a ``customer_*`` event."""
    return {**_person_fields(person), "email_address": person.email}


def _push_recipients(session: Session, workspace_id: int, tokens: list[str]) -> list[dict[str, str]]:
    if not tokens:
        return []
    platforms = dict(
        session.execute(
            select(Device.token, Device.platform).where(
                Device.workspace_id == workspace_id, Device.token.in_(tokens)
            )
        ).all()
    )
    recipients = []
    for token in tokens:
        recipient = {"device_id": token}
        if platforms.get(token) in ("ios", "android"):
            recipient["device_platform"] = platforms[token]
        recipients.append(recipient)
    return recipients


def delivery_data(session: Session, delivery: Delivery) -> dict[str, Any]:
    """The ``data`` every event about ``delivery`` starts with: its id, the person's identifiers, where it
    came from (transactional message, campaign, broadcast, newsletter) and whom it went to. Callers add the
    metric's own keys (``href``, ``failure_message``, ...)."""
    person = session.get(Person, delivery.person_id) if delivery.person_id is not None else None
    data: dict[str, Any] = {"delivery_id": delivery.id, **_person_fields(person)}
    origin = {
        "transactional_message_id": delivery.template_id,
        "campaign_id": delivery.campaign_id,
        "broadcast_id": delivery.broadcast_id,
        "newsletter_id": delivery.newsletter_id,
        "action_id": delivery.action_id,
        "trigger_event_id": delivery.trigger_event_id,
    }
    data.update({key: value for key, value in origin.items() if value is not None})
    if delivery.channel == "push":
        devices = (delivery.rendered or {}).get("devices")
        if isinstance(devices, list) and devices:
            data["recipients"] = [
                {"device_id": device["token"], "device_platform": device["platform"]}
                if device.get("platform") in ("ios", "android")
                else {"device_id": device["token"]}
                for device in devices
                if isinstance(device, dict) and isinstance(device.get("token"), str)
            ]
        else:
            tokens = [token for token in (delivery.recipient or "").split(",") if token]
            data["recipients"] = _push_recipients(session, delivery.workspace_id, tokens)
    elif delivery.channel == "email":
        # The spec makes recipient and subject required on email events; a draft has neither yet.
        data["recipient"] = delivery.recipient or (person.email if person is not None else None) or ""
        data["subject"] = delivery.subject or ""
    elif delivery.recipient is not None:
        data["recipient"] = delivery.recipient
    return data


def emit_report(session: Session, report: DeliveryMetricReport, *, now: int) -> None:
    """Emit the event for a metric reported from outside (Track ``/metrics``, push events, Pipelines, the
    unsubscribe link). Call it before ``report`` is added: whether an open or click is the delivery's first
    is judged against the reports already logged."""
    # Most workspaces have no webhooks: find that out before reading the delivery and the person.
    enabled = _enabled(session, report.workspace_id)
    if not enabled:
        return
    delivery = session.get(Delivery, report.delivery_id)
    if delivery is not None and delivery.workspace_id != report.workspace_id:
        delivery = None
    # A delivery Tidings does not know (a client reporting for messages it sent itself) is taken as email.
    object_type = delivery.channel if delivery is not None else "email"
    webhooks = _listening(enabled, object_type, report.metric)
    if not webhooks:
        return
    unique = True
    if report.metric in UNIQUE_METRICS:
        earlier = session.scalar(
            select(DeliveryMetricReport.id)
            .where(
                DeliveryMetricReport.workspace_id == report.workspace_id,
                DeliveryMetricReport.delivery_id == report.delivery_id,
                DeliveryMetricReport.metric == report.metric,
            )
            .limit(1)
        )
        unique = earlier is None
    if delivery is not None:
        data = delivery_data(session, delivery)
    else:
        data = {"delivery_id": report.delivery_id, **_person_fields(None)}
    if object_type == "push":
        if report.device_token:
            data["recipients"] = _push_recipients(session, report.workspace_id, [report.device_token])
        else:
            data.setdefault("recipients", [])
    elif report.recipient:
        data["recipient"] = report.recipient
    if report.href is not None:
        data["href"] = report.href
    if report.metric in FAILURE_METRICS:
        data["failure_message"] = report.reason or ""
    _enqueue(
        session,
        webhooks,
        object_type=object_type,
        metric=report.metric,
        timestamp=report.timestamp,
        data=data,
        unique=unique,
        content=None,
        now=float(now),
    )


def emit_customer(session: Session, person: Person, metric: str, *, timestamp: int, now: int) -> None:
    """Emit ``customer_<metric>`` (subscribed, unsubscribed) for ``person``."""
    webhooks = _subscribed(session, person.workspace_id, "customer", metric)
    if webhooks:
        _enqueue(
            session,
            webhooks,
            object_type="customer",
            metric=metric,
            timestamp=timestamp,
            data=customer_data(person),
            unique=True,
            content=None,
            now=float(now),
        )

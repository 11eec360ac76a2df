"""Delivery metrics reported from outside Tidings (Track ``/metrics``, legacy push events, Pipelines
``Report Delivery Event``, ``POST /unsubscribe/{delivery_id}``). Metrics about deliveries Tidings sent go
through the delivery lifecycle; the others are logged as reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.deliveries import lifecycle
from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.models import Delivery, DeliveryMetricReport, Person
from tidings.people.service import as_unix
from tidings.segments import realtime
from tidings.tracking import service as subscriptions
from tidings.webhooks import service as webhooks

# Metrics Customer.io accepts on ``/api/v1/metrics``, across channels.
METRICS = frozenset(
    {
        "bounced",
        "clicked",
        "converted",
        "deferred",
        "delivered",
        "dropped",
        "opened",
        "spammed",
        "unsubscribed",
    }
)
PUSH_EVENTS = frozenset({"opened", "converted", "delivered"})
MAX_DELIVERY_ID_BYTES = 190


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string", field=key)
    return value


def _delivery_id(body: dict[str, Any]) -> str:
    delivery_id = body.get("delivery_id")
    if not isinstance(delivery_id, str) or not delivery_id:
        raise InvalidInput("delivery_id is required", field="delivery_id")
    if len(delivery_id.encode()) > MAX_DELIVERY_ID_BYTES:
        raise InvalidInput(f"delivery_id is longer than {MAX_DELIVERY_ID_BYTES} bytes", field="delivery_id")
    return delivery_id


def _workspace_of(session: Session, workspace_id: int | None, delivery_id: str) -> int:
    """Metrics may arrive without credentials (as Customer.io allows); the delivery names the workspace."""
    if workspace_id is not None:
        return workspace_id
    owner = session.scalar(select(Delivery.workspace_id).where(Delivery.id == delivery_id))
    if owner is None:
        raise InvalidInput(
            f"unknown delivery {delivery_id}: send Track credentials to report metrics for it",
            field="delivery_id",
        )
    return owner


def _known(session: Session, workspace_id: int, delivery_id: str) -> Delivery | None:
    delivery = session.get(Delivery, delivery_id)
    return delivery if delivery is not None and delivery.workspace_id == workspace_id else None


def _report(session: Session, report: DeliveryMetricReport, *, now: int) -> None:
    """A metric about a delivery: through the lifecycle when Tidings sent it; otherwise (a client reporting
    on messages it sent itself) logged as it is, for segments and webhooks."""
    delivery = _known(session, report.workspace_id, report.delivery_id)
    if delivery is not None and report.metric in lifecycle.METRICS:
        lifecycle.record(
            session,
            delivery,
            report.metric,
            now=now,
            at=report.timestamp,
            source=report.source,
            href=report.href,
            reason=report.reason,
            recipient=report.recipient,
            device_token=report.device_token,
        )
        return
    if delivery is not None and delivery.person_id is not None:
        realtime.touched(session, report.workspace_id, [delivery.person_id], ["message"], now=now)
    # Before the add: an open or click is unique when no earlier report of it is logged.
    webhooks.emit_report(session, report, now=now)
    session.add(report)


def report_metric(session: Session, workspace_id: int | None, body: Any, *, now: int, source: str) -> None:
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object")
    delivery_id = _delivery_id(body)
    metric = body.get("metric")
    if metric not in METRICS:
        raise InvalidInput(f"metric must be one of {', '.join(sorted(METRICS))}", field="metric")
    owner = _workspace_of(session, workspace_id, delivery_id)
    report = DeliveryMetricReport(
        workspace_id=owner,
        delivery_id=delivery_id,
        metric=metric,
        timestamp=as_unix(body.get("timestamp"), "timestamp") or now,
        recipient=_optional_str(body, "recipient"),
        reason=_optional_str(body, "reason"),
        href=_optional_str(body, "href"),
        source=source,
        received_at=now,
    )
    _report(session, report, now=now)


def report_push_event(session: Session, workspace_id: int | None, body: Any, *, now: int) -> None:
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object")
    delivery_id = _delivery_id(body)
    event = body.get("event")
    if event not in PUSH_EVENTS:
        raise InvalidInput("event must be opened, converted or delivered", field="event")
    owner = _workspace_of(session, workspace_id, delivery_id)
    report = DeliveryMetricReport(
        workspace_id=owner,
        delivery_id=delivery_id,
        metric=event,
        timestamp=as_unix(body.get("timestamp"), "timestamp") or now,
        device_token=_optional_str(body, "device_id"),
        source="push_events",
        received_at=now,
    )
    _report(session, report, now=now)


def unsubscribe(session: Session, delivery_id: str, body: Any, *, now: int) -> None:
    """``POST /unsubscribe/{delivery_id}``: unsubscribe the delivery's person, attributed to it."""
    # The flag is optional: posting at all is the request (RFC 8058 one-click sends a form body).
    flag = body.get("unsubscribe", True) if isinstance(body, dict) else True
    if not isinstance(flag, bool):
        raise InvalidInput("unsubscribe must be true or false", field="unsubscribe")
    if not is_delivery_id(delivery_id):
        raise InvalidInput("malformed delivery id", field="delivery_id")
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise InvalidInput(f"unknown delivery {delivery_id}", field="delivery_id")
    if not flag:
        return
    person = session.get(Person, delivery.person_id) if delivery.person_id is not None else None
    if delivery.unsubscribed_at is None or (person is not None and not person.unsubscribed):
        lifecycle.record(session, delivery, "unsubscribed", now=now, source="unsubscribe")
    if person is not None:
        subscriptions.change_subscription(
            session, person, delivery, unsubscribed=True, now=now, source="unsubscribe"
        )
    session.flush()


def send_draft(session: Session, workspace_id: int, delivery_id: str, *, now: int) -> dict[str, Any]:
    """Release a draft (``queue_draft``, or a message whose template queues drafts) for sending now."""
    delivery = _known(session, workspace_id, delivery_id)
    if delivery is None:
        raise NotFound(f"message {delivery_id} not found")
    if delivery.state != "drafted":
        raise Conflict(f"message {delivery_id} is {delivery.state}, not a draft")
    delivery.state, delivery.due_at = "queued", now
    session.flush()
    return {"delivery_id": delivery.id, "queued_at": now}


def is_delivery_id(value: str) -> bool:
    return 8 <= len(value) <= 64 and all(c.isalnum() or c in "-_=" for c in value)

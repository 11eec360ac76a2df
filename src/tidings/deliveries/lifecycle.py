"""A delivery's lifecycle: every metric goes through :func:`record`, whoever observed it (the sender, the
open pixel and click redirects, a client reporting through Track ``/metrics``, an unsubscribe).

Recording a metric, in the caller's transaction: the metric's timestamp column (first occurrence kept),
the delivery's state, a row in the metric log (segments on message activity read it), the person's
activity feed, real-time segment re-evaluation, and the reporting-webhook posts. Bounces and spam
complaints also put the address on the workspace's suppression list, so it is not mailed again.
"""

from __future__ import annotations

from email.utils import getaddresses
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.models import AddressSuppression, Delivery, DeliveryMetricReport
from tidings.people import activity
from tidings.segments import realtime
from tidings.webhooks import service as webhooks

METRICS = (
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
    "spammed",
    "undeliverable",
    "unsubscribed",
)
# Forward-only progress; a later report of an earlier step (a late "delivered") does not move it back.
PROGRESS = ("drafted", "queued", "sending", "sent", "delivered", "opened", "clicked", "converted")
# Outcomes that end the delivery's progress.
NEGATIVE = frozenset({"bounced", "dropped", "failed", "spammed", "undeliverable", "unsubscribed"})
FAILURES = frozenset({"attempted", "bounced", "dropped", "failed", "undeliverable"})
SUPPRESS = {"bounced": "bounces", "spammed": "spam_reports"}
# Where the sender is done with a delivery: its content may be forgotten from here on.
SETTLED = frozenset({"sent", "failed", "dropped", "undeliverable"})


def _advance(delivery: Delivery, metric: str) -> None:
    if metric in NEGATIVE or (
        metric in PROGRESS
        and delivery.state in PROGRESS
        and PROGRESS.index(metric) > PROGRESS.index(delivery.state)
    ):
        delivery.state = metric


def record(
    session: Session,
    delivery: Delivery,
    metric: str,
    *,
    now: int,
    source: str,
    at: int | None = None,
    href: str | None = None,
    reason: str | None = None,
    recipient: str | None = None,
    device_token: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Record ``metric`` for ``delivery`` as happening ``at`` (default: now, when it was learned); True when
    it is the delivery's first of that metric."""
    at = now if at is None else at
    column = f"{metric}_at"
    first = getattr(delivery, column) is None
    if first or metric == "attempted":
        setattr(delivery, column, at)
    _advance(delivery, metric)
    if reason and metric in FAILURES:
        delivery.failure_message = reason
    workspace_id = delivery.workspace_id
    session.add(
        DeliveryMetricReport(
            workspace_id=workspace_id,
            delivery_id=delivery.id,
            metric=metric,
            timestamp=at,
            recipient=recipient or delivery.recipient,
            reason=reason,
            href=href,
            device_token=device_token,
            source=source,
            received_at=now,
        )
    )
    if metric in SUPPRESS and delivery.channel == "email":
        suppress_address(
            session,
            workspace_id,
            recipient or delivery.recipient,
            SUPPRESS[metric],
            now=now,
            reason=reason,
            delivery_id=delivery.id,
        )
    if delivery.person_id is not None:
        data: dict[str, Any] = {"delivery_id": delivery.id}
        if href:
            data["href"] = href
        if reason:
            data["reason"] = reason
        activity.record(
            session,
            workspace_id,
            delivery.person_id,
            # Customer.io's feed names message activity "sent_email", "opened_push", …; an unsubscribe
            # keeps its own type, as for unsubscribes that come with no message.
            "unsubscribed" if metric == "unsubscribed" else f"{metric}_{delivery.channel}",
            now=at,
            data=data,
            delivery_id=delivery.id,
            delivery_type=delivery.channel,
        )
        realtime.touched(session, workspace_id, [delivery.person_id], ["message"], now=now)
    details: dict[str, Any] = dict(extra or {})
    if recipient:
        details["recipient"] = recipient
    if href:
        details["href"] = href
    if metric in FAILURES:
        # Customer.io's envelope requires it on failures, empty when no reason was given.
        details["failure_message"] = reason or ""
    content = None
    if metric == "sent" and delivery.rendered is not None and delivery.retain_content:
        content = delivery.rendered
    webhooks.emit(
        session,
        workspace_id,
        object_type=delivery.channel,
        metric=metric,
        timestamp=at,
        data=lambda: {**webhooks.delivery_data(session, delivery), **details},
        unique=first,
        content=content,
        now=now,
    )
    if metric in SETTLED and not delivery.retain_content:
        # disable_message_retention: the message is not kept once it is out (or will never go out).
        delivery.rendered, delivery.request, delivery.forgotten = None, None, True
    return first


def created(session: Session, delivery: Delivery, *, now: int) -> None:
    """A delivery was just written: a draft is reported as drafted; segments see nothing until sent."""
    if delivery.state == "drafted":
        record(session, delivery, "drafted", now=now, source="tidings")


def suppress_address(
    session: Session,
    workspace_id: int,
    address: str | None,
    kind: str,
    *,
    now: int,
    reason: str | None = None,
    delivery_id: str | None = None,
) -> None:
    """Suppress every address in ``address`` (a To header value may hold display names and several)."""
    if not address:
        return
    for _name, bare in getaddresses([address]):
        key = bare.strip().lower()
        if "@" not in key or session.get(AddressSuppression, (workspace_id, key)) is not None:
            continue
        session.add(
            AddressSuppression(
                workspace_id=workspace_id,
                address=key,
                type=kind,
                reason=reason,
                delivery_id=delivery_id,
                created_at=now,
            )
        )
        session.flush()


def suppressed_addresses(session: Session, workspace_id: int, addresses: list[str]) -> list[str]:
    keys = [address.strip().lower() for address in addresses]
    if not keys:
        return []
    return list(
        session.scalars(
            select(AddressSuppression.address).where(
                AddressSuppression.workspace_id == workspace_id, AddressSuppression.address.in_(keys)
            )
        )
    )

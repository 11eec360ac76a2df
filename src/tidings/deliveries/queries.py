"""Read views of deliveries, shaped as Customer.io's App API returns messages, their archived content and
metrics series (``/v1/messages``, ``/v1/customers/{id}/messages``, ``/v1/transactional/{id}/messages``,
``/metrics`` and ``/metrics/links``).

Lists are newest first and paged with an opaque keyset cursor on ``(created_at, id)``: rows written
after a client started paging never shift the pages it has not read yet, so it sees no duplicates and
no gaps. Metrics series count the per-metric timestamp columns (each delivery at most once per metric,
as Customer.io counts deliveries) of the deliveries in a ``Scope`` (one transactional template, campaign,
broadcast or action, optionally one channel), in ``steps`` buckets that end now, oldest first, or in
buckets aligned to a resolution in a time zone (``aligned_edges``). Journey metrics count the journeys
of a campaign the same way.
"""

from __future__ import annotations

import base64
import binascii
import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from tidings.deliveries import lifecycle
from tidings.errors import InvalidInput, NotFound
from tidings.models import Delivery, DeliveryMetricReport, Journey, Person
from tidings.tracking import links

# Every metric a delivery keeps a timestamp for (the lifecycle's list) plus ``created``; the metrics series
# report each of them, and the ``metric`` filter takes Customer.io's list: all of them but ``drafted``
# (``created`` matches every delivery).
SERIES_METRICS = ("created", *lifecycle.METRICS)
FILTER_METRICS = tuple(metric for metric in SERIES_METRICS if metric != "drafted")
STATES = frozenset(lifecycle.PROGRESS) | lifecycle.NEGATIVE
# Customer.io names the SMS channel after its provider in some filters.
TYPE_ALIASES = {"twilio": "sms"}

PERIOD_SECONDS = {"hours": 3600, "days": 86400, "weeks": 7 * 86400}
PERIODS = ("hours", "days", "weeks", "months")
# Customer.io's limits: at most 24 hours, 45 days, 12 weeks or 121 months; the default is the maximum
# except for months (12); fewer than 2 steps are never returned.
MAX_STEPS = {"hours": 24, "days": 45, "weeks": 12, "months": 121}
DEFAULT_STEPS = {"hours": 24, "days": 45, "weeks": 12, "months": 12}
MIN_STEPS = 2

_NO_IDENTIFIERS: dict[str, str | None] = {"id": None, "email": None, "cio_id": None}


def _column(metric: str) -> InstrumentedAttribute[Any]:
    name = "created_at" if metric == "created" else f"{metric}_at"
    column: InstrumentedAttribute[Any] = getattr(Delivery, name)
    return column


# -- one message ---------------------------------------------------------------------------------------


def delivery_metrics(delivery: Delivery) -> dict[str, int]:
    """When each metric first happened, for the metrics that did."""
    metrics = {"created": delivery.created_at}
    for metric in SERIES_METRICS:
        if metric == "created":
            continue
        at = getattr(delivery, f"{metric}_at")
        if at is not None:
            metrics[metric] = at
    return metrics


def message_view(delivery: Delivery, identifiers: dict[str, str | None] | None) -> dict[str, Any]:
    """Customer.io's Delivery object, plus Tidings' ``state``. ``identifiers`` are the person's (None
    once the person is deleted)."""
    ids = identifiers or _NO_IDENTIFIERS
    return {
        "id": delivery.id,
        "deduplicate_id": f"{delivery.id}:{delivery.created_at}",
        "message_template_id": delivery.template_id,
        "customer_id": ids["id"],
        "customer_identifiers": dict(ids),
        "recipient": delivery.recipient,
        "subject": delivery.subject,
        "metrics": delivery_metrics(delivery),
        "created": delivery.created_at,
        "failure_message": delivery.failure_message,
        "campaign_id": delivery.campaign_id,
        "action_id": delivery.action_id,
        # Tidings has no nested actions.
        "parent_action_id": None,
        "newsletter_id": delivery.newsletter_id,
        # The newsletter content (test group variant) the message was made from.
        "content_id": delivery.template_id if delivery.newsletter_id is not None else None,
        "broadcast_id": delivery.broadcast_id,
        "trigger_event_id": delivery.trigger_event_id,
        "type": delivery.channel,
        "forgotten": delivery.forgotten,
        "state": delivery.state,
    }


def _identifiers(session: Session, person_ids: set[int]) -> dict[int, dict[str, str | None]]:
    if not person_ids:
        return {}
    rows = session.execute(
        select(Person.id, Person.customer_id, Person.email, Person.cio_id).where(Person.id.in_(person_ids))
    )
    return {row.id: {"id": row.customer_id, "email": row.email, "cio_id": row.cio_id} for row in rows}


def _views(session: Session, deliveries: list[Delivery]) -> list[dict[str, Any]]:
    # One query for everyone's identifiers instead of one per message.
    people = _identifiers(session, {d.person_id for d in deliveries if d.person_id is not None})
    return [message_view(d, people.get(d.person_id) if d.person_id is not None else None) for d in deliveries]


def _delivery(session: Session, workspace_id: int, message_id: str) -> Delivery:
    delivery = session.get(Delivery, message_id)
    # Another workspace's delivery is reported exactly like a missing one.
    if delivery is None or delivery.workspace_id != workspace_id:
        raise NotFound(f"message {message_id!r} not found")
    return delivery


def get_message(session: Session, workspace_id: int, message_id: str) -> dict[str, Any]:
    return _views(session, [_delivery(session, workspace_id, message_id)])[0]


def _header_list(headers: Any) -> str | None:
    """Customer.io reports headers as a JSON string of ``[{"name", "value"}]``."""
    if not isinstance(headers, dict) or not headers:
        return None
    return orjson.dumps([{"name": name, "value": value} for name, value in headers.items()]).decode()


def archived_message(session: Session, workspace_id: int, message_id: str) -> dict[str, Any]:
    """The content as sent. ``body`` is null when there is none: before the delivery is rendered, and
    for good when its content was not retained (then ``forgotten`` is true)."""
    delivery = _delivery(session, workspace_id, message_id)
    content = delivery.rendered or {}
    channel = delivery.channel
    if channel == "email":
        body, body_plain = content.get("html"), content.get("text")
    elif channel == "push":
        body, body_plain = content.get("message"), None
    else:
        body, body_plain = content.get("body"), None
    forgotten = delivery.forgotten or (delivery.rendered is None and not delivery.retain_content)
    return {
        "archived_message": {
            "id": delivery.id,
            "type": channel,
            "recipient": delivery.recipient,
            "subject": delivery.subject,
            "body": body,
            "body_plain": body_plain,
            "from": content.get("from"),
            "reply_to": content.get("reply_to"),
            "cc": content.get("cc"),
            "bcc": content.get("bcc"),
            "fake_bcc": content.get("fake_bcc"),
            "preheader_text": content.get("preheader"),
            "url": content.get("url") if channel == "webhook" else None,
            "request_method": content.get("method") if channel == "webhook" else None,
            "headers": _header_list(content.get("headers")),
            "metrics": delivery_metrics(delivery),
            "forgotten": forgotten,
        }
    }


# -- lists ---------------------------------------------------------------------------------------------


def encode_cursor(created_at: int, delivery_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at}:{delivery_id}".encode()).decode().rstrip("=")


def decode_cursor(start: str) -> tuple[int, str]:
    try:
        padded = start + "=" * (-len(start) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        created, delivery_id = raw.split(":", 1)
        # The cursor is a client's string: keep what reaches the store within a 64-bit integer.
        if not delivery_id or "\x00" in delivery_id or not -(2**63) <= int(created) < 2**63:
            raise ValueError(raw)
        return int(created), delivery_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("start must be a cursor returned as next", field="start") from None


def list_messages(
    session: Session,
    workspace_id: int,
    *,
    start: str | None = None,
    limit: int = 50,
    type: str | None = None,
    metric: str | None = None,
    drafts: bool | None = None,
    campaign_id: int | None = None,
    broadcast_id: int | None = None,
    newsletter_id: int | None = None,
    action_id: int | None = None,
    start_ts: int | None = None,
    end_ts: int | None = None,
    template_id: int | None = None,
    person_id: int | None = None,
    state: str | None = None,
) -> dict[str, Any]:
    """Deliveries newest first. ``drafts=true`` lists only drafts (held, not sent); otherwise drafts are
    left out unless ``state`` asks for them. ``start_ts``/``end_ts`` bound the creation time, both
    inclusive."""
    query = select(Delivery).where(Delivery.workspace_id == workspace_id)
    if metric is not None:
        if metric not in FILTER_METRICS:
            raise InvalidInput(f"metric must be one of {', '.join(FILTER_METRICS)}", field="metric")
        query = query.where(_column(metric).is_not(None))
    if state is not None:
        query = query.where(_state_condition(state))
    elif drafts:
        query = query.where(Delivery.state == "drafted")
    else:
        query = query.where(Delivery.state != "drafted")
    if type:
        if "\x00" in type:
            raise InvalidInput("type may not contain the NUL character", field="type")
        query = query.where(Delivery.channel == TYPE_ALIASES.get(type, type))
    for column, value in (
        (Delivery.campaign_id, campaign_id),
        (Delivery.broadcast_id, broadcast_id),
        (Delivery.newsletter_id, newsletter_id),
        (Delivery.action_id, action_id),
        (Delivery.template_id, template_id),
        (Delivery.person_id, person_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if start_ts is not None:
        query = query.where(Delivery.created_at >= start_ts)
    if end_ts is not None:
        query = query.where(Delivery.created_at <= end_ts)
    if start:
        created, delivery_id = decode_cursor(start)
        query = query.where(tuple_(Delivery.created_at, Delivery.id) < tuple_(created, delivery_id))
    rows = list(
        session.scalars(query.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit + 1))
    )
    page, more = rows[:limit], len(rows) > limit
    return {
        "messages": _views(session, page),
        "next": encode_cursor(page[-1].created_at, page[-1].id) if more else "",
    }


def _state_condition(state: str) -> ColumnElement[bool]:
    if state == "attempted":
        # Customer.io's "attempted": a send failed for now and will be retried.
        return and_(Delivery.attempted_at.is_not(None), Delivery.state.in_(("queued", "sending")))
    if state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(sorted(STATES | {'attempted'}))}", field="state")
    return Delivery.state == state


# -- metrics series ------------------------------------------------------------------------------------


def _shift_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def series_edges(period: str, steps: int | None, *, now: int) -> list[int]:
    """``steps + 1`` increasing unix times: bucket ``i`` is ``[edges[i], edges[i + 1])``, and the last
    bucket ends just after ``now`` so what happened this second counts. Months are calendar months
    (UTC) back from now; the other periods have fixed lengths."""
    if period not in PERIODS:
        raise InvalidInput(f"period must be one of {', '.join(PERIODS)}", field="period")
    if steps is None:
        count = DEFAULT_STEPS[period]
    elif steps < 0:
        raise InvalidInput("steps must be 0 or more", field="steps")
    else:
        # As in Customer.io: 0 asks for the maximum, and fewer than 2 steps are never returned.
        count = MAX_STEPS[period] if steps == 0 else min(max(steps, MIN_STEPS), MAX_STEPS[period])
    end = now + 1
    if period != "months":
        length = PERIOD_SECONDS[period]
        return [end - (count - index) * length for index in range(count + 1)]
    moment = datetime.fromtimestamp(end, UTC)
    return [int(_shift_months(moment, index - count).timestamp()) for index in range(count + 1)]


def _bucket(column: SQLColumnExpression[int], edges: list[int]) -> ColumnElement[int]:
    """The bucket index of ``column`` (already known to lie within the edges), computed in SQL."""
    lengths = {b - a for a, b in pairwise(edges)}
    if len(lengths) == 1:
        # Integer division on both stores: non-negative operands, so it is floor division.
        return (column - edges[0]) // lengths.pop()
    return case(*((column < edge, index) for index, edge in enumerate(edges[1:-1])), else_=len(edges) - 2)


# -- resolution-aligned buckets (campaign metrics v2, journey metrics) -------------------------------------

# Customer.io's ``res`` values, each naming one of four bucket lengths.
RESOLUTIONS = {
    "hours": "hours",
    "hourly": "hours",
    "days": "days",
    "daily": "days",
    "weeks": "weeks",
    "weekly": "weeks",
    "months": "months",
    "monthly": "months",
}
# Buckets ending with the one holding ``end`` when no ``start`` is given.
DEFAULT_BUCKETS = {"hours": 24, "days": 30, "weeks": 12, "months": 12}
MAX_BUCKETS = 1000
# Keeps every edge a valid date (years 1970 to 3000) whatever the time zone.
MAX_UNIX = 32_503_680_000


def _zone(tz: str) -> ZoneInfo:
    try:
        if not tz or "\x00" in tz:
            raise ValueError(tz)
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(
            "tz must be an IANA time zone name, such as America/New_York", field="tz"
        ) from None


def _floor(moment: int, unit: str, zone: ZoneInfo) -> datetime:
    """The start, in ``zone``, of the ``unit`` holding ``moment`` (weeks start on Monday)."""
    local = datetime.fromtimestamp(moment, zone)
    if unit == "hours":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    if unit == "weeks":
        day -= timedelta(days=day.weekday())
    elif unit == "months":
        day = day.replace(day=1)
    return datetime.combine(day, time(), tzinfo=zone)


def _edge(origin: datetime, unit: str, index: int) -> int:
    """The start of the ``index``-th bucket after the one starting at ``origin`` (negative: before). Hours
    are 3600 s apart; days, weeks and months follow the zone's calendar, so a day may last 23 or 25 hours."""
    if unit == "hours":
        return int(origin.timestamp()) + 3600 * index
    if unit == "months":
        return int(_shift_months(origin, index).timestamp())
    step = timedelta(days=index) if unit == "days" else timedelta(weeks=index)
    return int(datetime.combine(origin.date() + step, time(), tzinfo=origin.tzinfo).timestamp())


def aligned_edges(res: str, *, tz: str, start: int | None, end: int | None, now: int) -> list[int]:
    """Edges of buckets one ``res`` long, aligned to the resolution in ``tz``: the first bucket holds
    ``start``, the last one holds ``end`` (default now). Without ``start``, the series is the
    ``DEFAULT_BUCKETS`` buckets ending with the one holding ``end``."""
    unit = RESOLUTIONS.get(res)
    if unit is None:
        raise InvalidInput(f"res must be one of {', '.join(RESOLUTIONS)}", field="res")
    zone = _zone(tz)
    end = now if end is None else end
    for name, value in (("start", start), ("end", end)):
        if value is not None and not 0 <= value <= MAX_UNIX:
            raise InvalidInput(f"{name} must be a unix time between 0 and {MAX_UNIX}", field=name)
    if start is None:
        start = max(0, _edge(_floor(end, unit, zone), unit, 1 - DEFAULT_BUCKETS[unit]))
    if start > end:
        raise InvalidInput("start must not be after end", field="start")
    origin = _floor(start, unit, zone)
    edges = [_edge(origin, unit, 0)]
    while edges[-1] <= end:
        if len(edges) > MAX_BUCKETS:
            raise InvalidInput(f"start to end spans more than {MAX_BUCKETS} buckets of {unit}", field="res")
        edges.append(_edge(origin, unit, len(edges)))
    return edges


# -- scoped series -------------------------------------------------------------------------------------

# What a metrics series can be limited to: deliveries with one of these columns equal to a value.
SCOPE_COLUMNS: dict[str, InstrumentedAttribute[int | None]] = {
    "template_id": Delivery.template_id,
    "campaign_id": Delivery.campaign_id,
    "broadcast_id": Delivery.broadcast_id,
    "action_id": Delivery.action_id,
    "newsletter_id": Delivery.newsletter_id,
}
# Channels the ``type`` filter of the campaign metrics accepts (Customer.io's names; ``twilio`` is sms).
CHANNEL_TYPES = ("email", "sms", "twilio", "push", "webhook", "slack", "in_app")


@dataclass(frozen=True)
class Scope:
    """Which deliveries a series counts: those whose ``column`` (a ``SCOPE_COLUMNS`` name) is ``value``,
    through ``channel`` only when it is set."""

    column: str
    value: int
    channel: str | None = None
    # Within the scope, only the deliveries of this content (one variant of a newsletter).
    template_id: int | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions = [SCOPE_COLUMNS[self.column] == self.value]
        if self.channel is not None:
            conditions.append(Delivery.channel == self.channel)
        if self.template_id is not None:
            conditions.append(Delivery.template_id == self.template_id)
        return conditions


def channel_of(type: str | None) -> str | None:
    """The channel a ``type`` filter names (None: every channel)."""
    if not type:
        return None
    if type not in CHANNEL_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(CHANNEL_TYPES)}", field="type")
    return TYPE_ALIASES.get(type, type)


def _series_select(metric: str, workspace_id: int, scope: Scope, edges: list[int]) -> Select[str, int, int]:
    column = _column(metric)
    bucket = _bucket(column, edges).label("bucket")
    return (
        select(literal(metric).label("metric"), bucket, func.count().label("n"))
        .where(
            Delivery.workspace_id == workspace_id,
            *scope.conditions(),
            column >= edges[0],
            column < edges[-1],
            # Nothing happens to a delivery before it exists: bounds the template index scan.
            Delivery.created_at < edges[-1],
        )
        # Grouped by the output name, so PostgreSQL does not compare two renderings of the expression.
        .group_by("bucket")
    )


def metrics_series(
    session: Session, workspace_id: int, scope: Scope, edges: list[int]
) -> dict[str, list[int]]:
    """``{metric: [count per bucket, oldest first]}`` for the buckets between ``edges``, in one round trip:
    one grouped count per metric, all in a single UNION ALL."""
    series = {metric: [0] * (len(edges) - 1) for metric in SERIES_METRICS}
    query = union_all(*(_series_select(m, workspace_id, scope, edges) for m in SERIES_METRICS))
    for metric, bucket, count in session.execute(query):
        series[metric][int(bucket)] = int(count)
    return series


def scope_metrics(
    session: Session, workspace_id: int, scope: Scope, *, period: str, steps: int | None, now: int
) -> dict[str, Any]:
    """``{"metric": {"series": {metric: [count per bucket, oldest first]}}}``, ``steps`` buckets of one
    ``period`` ending now."""
    edges = series_edges(period, steps, now=now)
    return {"metric": {"series": metrics_series(session, workspace_id, scope, edges)}}


def template_metrics(
    session: Session, workspace_id: int, template_id: int, *, period: str, steps: int | None, now: int
) -> dict[str, Any]:
    """A transactional message template's metrics series."""
    scope = Scope("template_id", template_id)
    return scope_metrics(session, workspace_id, scope, period=period, steps=steps, now=now)


def scope_link_metrics(
    session: Session,
    workspace_id: int,
    scope: Scope,
    *,
    period: str,
    steps: int | None,
    unique: bool,
    now: int,
) -> dict[str, Any]:
    """Clicks per link of the scope's deliveries, per bucket, most clicked link first. ``unique`` counts
    each person once per bucket (a deleted person's deliveries count once each)."""
    edges = series_edges(period, steps, now=now)
    report = DeliveryMetricReport
    bucket = _bucket(report.timestamp, edges).label("bucket")
    if unique:
        clicker = func.coalesce(cast(Delivery.person_id, Text()), literal("delivery:") + Delivery.id)
        count: ColumnElement[int] = func.count(clicker.distinct())
    else:
        count = func.count()
    query = (
        select(report.href, bucket, count.label("n"))
        .join(Delivery, and_(Delivery.id == report.delivery_id, Delivery.workspace_id == report.workspace_id))
        .where(
            report.workspace_id == workspace_id,
            *scope.conditions(),
            report.metric == "clicked",
            report.href.is_not(None),
            report.timestamp >= edges[0],
            report.timestamp < edges[-1],
        )
        .group_by(report.href, "bucket")
    )
    clicks: dict[str, list[int]] = {}
    for href, index, n in session.execute(query):
        # href is never null here (filtered above); the column type cannot say so.
        clicks.setdefault(str(href), [0] * (len(edges) - 1))[int(index)] = int(n)
    ordered = sorted(clicks.items(), key=lambda item: (-sum(item[1]), item[0]))
    return {
        "links": [
            {"link": {"id": links.link_id(href), "href": href}, "metric": {"series": {"clicked": counts}}}
            for href, counts in ordered
        ]
    }


def link_metrics(
    session: Session,
    workspace_id: int,
    template_id: int,
    *,
    period: str,
    steps: int | None,
    unique: bool,
    now: int,
) -> dict[str, Any]:
    """Clicks per link of a transactional message template's deliveries."""
    scope = Scope("template_id", template_id)
    return scope_link_metrics(
        session, workspace_id, scope, period=period, steps=steps, unique=unique, now=now
    )


# -- journey metrics -----------------------------------------------------------------------------------

# Each journey counts once per series, in the bucket of the moment named: ``started`` when it entered
# the campaign (passed the entry rules), ``finished`` when it completed the workflow, ``exited`` when it
# left early (an exit condition, archiving), ``converted`` when it met the campaign's goal. Rejected
# and failed journeys are in none of the series but ``converted``'s (they never convert).
JOURNEY_SERIES: dict[str, tuple[InstrumentedAttribute[Any], str | None]] = {
    "started": (Journey.entered_at, None),
    "finished": (Journey.finished_at, "completed"),
    "exited": (Journey.finished_at, "exited"),
    "converted": (Journey.converted_at, None),
}


def journey_series(
    session: Session, workspace_id: int, campaign_id: int, edges: list[int]
) -> dict[str, list[int]]:
    """``{series: [journeys per bucket, oldest first]}`` for ``JOURNEY_SERIES``, in one round trip."""
    selects = []
    for name, (column, state) in JOURNEY_SERIES.items():
        conditions = [
            Journey.workspace_id == workspace_id,
            Journey.campaign_id == campaign_id,
            column >= edges[0],
            column < edges[-1],
        ]
        if state is not None:
            conditions.append(Journey.state == state)
        bucket = _bucket(column, edges).label("bucket")
        selects.append(
            select(literal(name).label("series"), bucket, func.count().label("n"))
            .where(*conditions)
            .group_by("bucket")
        )
    series = {name: [0] * (len(edges) - 1) for name in JOURNEY_SERIES}
    for name, index, count in session.execute(union_all(*selects)):
        series[name][int(index)] = int(count)
    return series

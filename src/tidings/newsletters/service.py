"""Newsletters (Customer.io's ``/v1/newsletters``): one message, sent once to everyone a recipients filter
matches, now or at a scheduled time, optionally in each recipient's time zone, paced by a rate limit and a
daily ramp.

Newsletters do not run journeys. Sending one (now, or when its scheduled time comes) queues the expansion
job (:func:`expand`): each run resolves one chunk of the recipients filter, in person-key order after
``Newsletter.cursor``, and writes one queued ``Delivery`` per person with the time it may go
(:mod:`tidings.newsletters.schedule`), in the same transaction that moves the cursor on, then queues the
next run. A crash therefore resumes after the last committed chunk and nobody is written twice. Once a run
finds nobody left, the newsletter is ``sent``. The sending worker renders and sends each delivery when it
is due, and drops it if the person has unsubscribed (globally, or from the newsletter's topic) meanwhile.

The content is a ``MessageTemplate`` of kind ``newsletter``: its id is the newsletter's content id;
translations are its languages, picked by each person's ``language`` attribute. An A/B test adds test
groups (``NewsletterTestGroup``), each with a content of its own (group A's is the newsletter's): each
recipient gets one group's content, the groups' shares of the recipients following their percentages in
every prefix of the send order (see :func:`_pick`). With ``winner_settings`` only a test share of the
recipients gets the groups; after a wait, the group that did best (opens or clicks per message sent)
is sent to everyone else.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete as delete_rows
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.deliveries import lifecycle
from tidings.deliveries import queries as deliveries
from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.ids import new_delivery_id
from tidings.messaging import senders, templates
from tidings.models import Delivery, MessageTemplate, Newsletter, NewsletterTestGroup, Person, Segment
from tidings.newsletters import schedule
from tidings.people.identifiers import email_key, find_person, identifier_from_object
from tidings.people.service import as_unix
from tidings.segments import compiler
from tidings.segments.conditions import ConditionError, dependencies, parse
from tidings.worker import queue, wake
from tidings.workspaces.schemas import WorkspaceContext

Json = dict[str, Any]

EXPAND_JOB = "newsletters.expand"
CHUNK = 500
MAX_NAME = 190
MAX_PAGE = 100
MAX_TEST_EMAILS = 20
MAX_SCHEDULE_AHEAD = 366 * 86400
MAX_RAMP_GROWTH = 10.0
TYPES = ("email",)
STATES = ("draft", "scheduled", "sending", "sent", "canceled")
# Content fields as the newsletter API names them → the template's email fields.
CONTENT_FIELDS = {
    "from": "from",
    "from_id": templates.FROM_ID,
    "reply_to": "reply_to",
    "subject": "subject",
    "preheader_text": "preheader",
    "body": "body",
    "body_plain": "body_plain",
    "body_amp": "body_amp",
    "headers": "headers",
}
SETTINGS = (
    "name",
    "type",
    "recipients",
    "tags",
    "subscription_topic_id",
    "rate_limit_email_rate",
    "rate_limit_time_period",
    "rate_limit_spread",
    "ramp",
    "send_in_recipient_timezone",
    "layout_id",
)
SENDING = ("send_now", "scheduled_at")
READ_ONLY = frozenset(
    {
        "id",
        "deduplicate_id",
        "created",
        "updated",
        "sent_at",
        "content_ids",
        "recipient_segment_ids",
        "state",
        "recipients_count",
        "template_id",
        "test_phase",
        "winner_at",
    }
)
RECIPIENT = "{{ customer.email }}"
MAX_TEST_GROUPS = 26  # named A to Z
WINNER_METRICS = {"opened": Delivery.opened_at, "clicked": Delivery.clicked_at}
MIN_WINNER_WAIT = 60
MAX_WINNER_WAIT = 30 * 86400


# -- reading a body ------------------------------------------------------------------------------------


def _bool(body: Json, key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} must be true or false", field=key)
    return value


def _int(body: Json, key: str, *, minimum: int = 0) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**63:
        raise InvalidInput(f"{key} must be an integer of at least {minimum}", field=key)
    return value


def _recipients(session: Session, workspace_id: int, value: Any) -> Json:
    if not isinstance(value, dict) or not value:
        raise InvalidInput("recipients must be a non-empty filter object", field="recipients")
    used = dependencies(parse(value, "recipients")).segments
    if used:
        known = set(
            session.scalars(
                select(Segment.id).where(Segment.workspace_id == workspace_id, Segment.id.in_(used))
            )
        )
        for segment_id in sorted(used - known):
            raise ConditionError(f"recipients: segment {segment_id} does not exist", field="recipients")
    return value


def _ramp(value: Any) -> Json | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"start", "growth"} or "start" not in value:
        raise InvalidInput(
            'ramp must be {"start": messages on day one, "growth": factor per day}', field="ramp"
        )
    start = value["start"]
    if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start < 2**40:
        raise InvalidInput("ramp.start must be a whole number of messages, at least 1", field="ramp.start")
    growth = value.get("growth", 1)
    if isinstance(growth, bool) or not isinstance(growth, int | float) or not 1 <= growth <= MAX_RAMP_GROWTH:
        raise InvalidInput(f"ramp.growth must be a number from 1 to {MAX_RAMP_GROWTH:g}", field="ramp.growth")
    return {"start": start, "growth": growth}


def _content(
    session: Session, workspace_id: int, body: Json, *, default_from: str | None, creating: bool
) -> Json:
    """The email fields given in ``body`` (newsletter names), as template content, Liquid-checked;
    ``from_id`` must name one of the workspace's sender identities."""
    given = {CONTENT_FIELDS[key]: body[key] for key in CONTENT_FIELDS if body.get(key) is not None}
    if "from" in given and templates.FROM_ID in given:
        # A fetched content sent back has both: its from is the identity's address, then from_id rules.
        identity = senders.resolve(session, workspace_id, given[templates.FROM_ID])
        if given["from"] != senders.address_of(identity):
            raise InvalidInput("give from or from_id, not both", field="from_id")
        del given["from"]
    try:
        content = templates.validate_content("email", given, path="content")
    except InvalidInput as exc:
        # Named as the newsletter names them (from_id, not content.from_id).
        field = (exc.field or "").removeprefix("content.")
        raise InvalidInput(exc.message.removeprefix("content."), field=field or None) from None
    if content.get(templates.FROM_ID) is not None:
        senders.resolve(session, workspace_id, content[templates.FROM_ID])
    if creating:
        for key in ("subject", "body"):
            if not content.get(key):
                raise InvalidInput(f"{key} is required for an email newsletter", field=key)
        if not content.get("from") and content.get(templates.FROM_ID) is None and not default_from:
            raise InvalidInput(
                "from (or from_id) is required, or set a default from address in the workspace's "
                "email settings",
                field="from",
            )
    return content


def _apply_settings(session: Session, ws: WorkspaceContext, newsletter: Newsletter, body: Json) -> None:
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("name must be a non-empty string", field="name")
        if len(name) > MAX_NAME:
            raise InvalidInput(f"name may be at most {MAX_NAME} characters", field="name")
        newsletter.name = name
    if "type" in body and body["type"] not in TYPES:
        raise InvalidInput("type must be email (the only newsletter channel Tidings sends)", field="type")
    if "recipients" in body:
        newsletter.recipients = _recipients(session, ws.workspace_id, body["recipients"])
    if "tags" in body:
        tags = body["tags"] if body["tags"] is not None else []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise InvalidInput("tags must be a list of strings", field="tags")
        newsletter.tags = tags
    if "rate_limit_email_rate" in body:
        newsletter.rate_limit_email_rate = _int(body, "rate_limit_email_rate", minimum=1)
    if "rate_limit_time_period" in body:
        period = body["rate_limit_time_period"]
        if period is not None and (isinstance(period, bool) or period not in schedule.PERIODS):
            raise InvalidInput(
                "rate_limit_time_period must be 60, 3600 or 86400", field="rate_limit_time_period"
            )
        newsletter.rate_limit_time_period = period
    for flag in ("rate_limit_spread", "send_in_recipient_timezone"):
        if flag in body:
            setattr(newsletter, flag, bool(_bool(body, flag)))
    if "ramp" in body:
        newsletter.ramp = _ramp(body["ramp"])
    if (newsletter.rate_limit_email_rate is None) != (newsletter.rate_limit_time_period is None):
        raise InvalidInput(
            "rate_limit_email_rate and rate_limit_time_period go together", field="rate_limit_email_rate"
        )
    if newsletter.rate_limit_spread and newsletter.rate_limit_email_rate is None:
        raise InvalidInput("rate_limit_spread needs a rate limit", field="rate_limit_spread")
    if newsletter.send_in_recipient_timezone and (
        newsletter.rate_limit_email_rate is not None or newsletter.ramp is not None
    ):
        raise InvalidInput(
            "a newsletter sent in each recipient's time zone cannot also be rate limited or ramped",
            field="send_in_recipient_timezone",
        )
    _check_zone_and_winner(newsletter)


def _check_zone_and_winner(newsletter: Newsletter) -> None:
    if newsletter.send_in_recipient_timezone and newsletter.winner_settings is not None:
        raise InvalidInput(
            "a newsletter sent in each recipient's time zone cannot send an A/B test's winner "
            "(drop winner_settings to split everyone between the test groups)",
            field="send_in_recipient_timezone",
        )


def _check_keys(body: Json, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed - READ_ONLY)
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a field of a newsletter; expected {', '.join(sorted(allowed))}",
            field=unknown[0],
        )


# -- views ---------------------------------------------------------------------------------------------


def _segment_ids(document: Any) -> list[int]:
    try:
        return sorted(dependencies(parse(document, "recipients")).segments)
    except ConditionError:
        return []


def view(session: Session, newsletter: Newsletter, groups: list[NewsletterTestGroup] | None = None) -> Json:
    """Customer.io's newsletter fields, then Tidings' (state, recipients, schedule, pacing, A/B test).
    ``groups``: the newsletter's test groups when the caller has read them."""
    if groups is None:
        groups = _groups(session, newsletter)
    content_ids = [g.template_id for g in groups] if groups else [newsletter.template_id]
    return {
        "id": newsletter.id,
        "deduplicate_id": f"{newsletter.id}:{newsletter.updated_at}",
        "name": newsletter.name,
        "type": newsletter.type,
        "created": newsletter.created_at,
        "updated": newsletter.updated_at,
        "sent_at": newsletter.sent_at,
        "content_ids": [content_id for content_id in content_ids if content_id is not None],
        "tags": list(newsletter.tags or []),
        "recipient_segment_ids": _segment_ids(newsletter.recipients),
        "subscription_topic_id": newsletter.subscription_topic_id,
        "state": newsletter.state,
        "recipients": newsletter.recipients,
        "scheduled_at": newsletter.scheduled_at,
        "send_in_recipient_timezone": newsletter.send_in_recipient_timezone,
        "rate_limit_email_rate": newsletter.rate_limit_email_rate,
        "rate_limit_time_period": newsletter.rate_limit_time_period,
        "rate_limit_spread": newsletter.rate_limit_spread,
        "ramp": newsletter.ramp,
        "recipients_count": newsletter.recipients_count,
        "winner_settings": newsletter.winner_settings,
        "test_phase": newsletter.test_phase,
        "winner_at": newsletter.winner_at,
    }


def get(session: Session, workspace_id: int, newsletter_id: int) -> Newsletter:
    newsletter = session.get(Newsletter, newsletter_id)
    if newsletter is None or newsletter.workspace_id != workspace_id:
        raise NotFound(f"newsletter {newsletter_id} not found")
    return newsletter


def _template(session: Session, newsletter: Newsletter) -> MessageTemplate:
    template = session.get(MessageTemplate, newsletter.template_id) if newsletter.template_id else None
    if template is None:
        raise NotFound(f"newsletter {newsletter.id} has no content")
    return template


def _groups(session: Session, newsletter: Newsletter) -> list[NewsletterTestGroup]:
    """The newsletter's test groups, A first; none without an A/B test."""
    return list(
        session.scalars(
            select(NewsletterTestGroup)
            .where(NewsletterTestGroup.newsletter_id == newsletter.id)
            .order_by(NewsletterTestGroup.position)
        )
    )


def _variants(
    session: Session, newsletter: Newsletter
) -> list[tuple[NewsletterTestGroup | None, MessageTemplate]]:
    """Every content of the newsletter with its test group: the one content (no group) without a test."""
    groups = _groups(session, newsletter)
    if not groups:
        return [(None, _template(session, newsletter))]
    found: list[tuple[NewsletterTestGroup | None, MessageTemplate]] = []
    for group in groups:
        template = session.get(MessageTemplate, group.template_id) if group.template_id else None
        if template is not None:
            found.append((group, template))
    return found


def _group_name(position: int) -> str:
    return chr(ord("A") + position)


def list_newsletters(
    session: Session, workspace_id: int, *, limit: int, sort: str, start: str | None
) -> Json:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    if sort not in ("asc", "desc"):
        raise InvalidInput("sort must be asc or desc", field="sort")
    query = select(Newsletter).where(Newsletter.workspace_id == workspace_id)
    if start:
        if not start.isdigit() or len(start) > 18:
            raise InvalidInput("start is not a cursor this endpoint returned", field="start")
        after = int(start)
        query = query.where(Newsletter.id > after if sort == "asc" else Newsletter.id < after)
    order = Newsletter.id.asc() if sort == "asc" else Newsletter.id.desc()
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    page = rows[:limit]
    # Every listed newsletter's test groups in one query.
    groups: dict[int, list[NewsletterTestGroup]] = {row.id: [] for row in page}
    if page:
        for group in session.scalars(
            select(NewsletterTestGroup)
            .where(NewsletterTestGroup.newsletter_id.in_(list(groups)))
            .order_by(NewsletterTestGroup.newsletter_id, NewsletterTestGroup.position)
        ):
            groups[group.newsletter_id].append(group)
    return {
        "newsletters": [view(session, row, groups[row.id]) for row in page],
        "next": str(page[-1].id) if len(rows) > limit else "",
    }


# -- create, change, delete ----------------------------------------------------------------------------


def create(session: Session, ws: WorkspaceContext, body: Json, *, now: int) -> Json:
    _check_keys(body, {*SETTINGS, *SENDING, *CONTENT_FIELDS})
    for key in ("name", "type", "recipients"):
        if body.get(key) is None:
            raise InvalidInput(f"{key} is required", field=key)
    newsletter = Newsletter(
        workspace_id=ws.workspace_id,
        name="",
        type=str(body["type"]),
        state="draft",
        tags=[],
        cursor=0,
        recipients_count=0,
        rate_limit_spread=False,
        send_in_recipient_timezone=False,
        pace_base=0,
        test_held=0,
        created_at=now,
        updated_at=now,
    )
    _apply_settings(session, ws, newsletter, body)
    content = _content(
        session, ws.workspace_id, body, default_from=ws.settings.messaging.email.default_from, creating=True
    )
    send_now, scheduled_at = _bool(body, "send_now"), as_unix(body.get("scheduled_at"), "scheduled_at")
    if send_now and scheduled_at is not None:
        raise InvalidInput("give send_now or scheduled_at, not both", field="scheduled_at")
    template = MessageTemplate(
        workspace_id=ws.workspace_id, kind="newsletter", created_at=now, updated_at=now
    )
    template_body: Json = {
        "name": newsletter.name,
        "type": "email",
        "content": {"to": RECIPIENT, **content},
        "send_to_unsubscribed": False,
    }
    if body.get("layout_id") is not None:
        template_body["layout_id"] = body["layout_id"]
    if body.get("subscription_topic_id") is not None:
        template_body["topic_id"] = body["subscription_topic_id"]
    try:
        templates.apply_fields(session, template, template_body, creating=True)
    except InvalidInput as exc:
        field = "subscription_topic_id" if exc.field == "topic_id" else exc.field
        message = (
            exc.message.replace("topic_id", "subscription_topic_id", 1)
            if exc.field == "topic_id"
            else exc.message
        )
        raise InvalidInput(message, field=field) from None
    session.add(template)
    session.flush()
    newsletter.template_id = template.id
    newsletter.subscription_topic_id = template.topic_id
    session.add(newsletter)
    session.flush()
    if send_now:
        _start_now(session, newsletter, now)
    elif scheduled_at is not None:
        _schedule(session, newsletter, scheduled_at, now)
    session.flush()
    return view(session, newsletter)


def update(session: Session, ws: WorkspaceContext, newsletter_id: int, body: Json, *, now: int) -> Json:
    """Change a draft (or a scheduled newsletter not yet started): settings and content; keys left out
    keep their values."""
    newsletter = get(session, ws.workspace_id, newsletter_id)
    _check_keys(body, {*SETTINGS, *CONTENT_FIELDS})
    if newsletter.state not in ("draft", "scheduled", "canceled"):
        raise Conflict(f"newsletter {newsletter_id} is {newsletter.state}; only a draft can be changed")
    template = _template(session, newsletter)
    _apply_settings(session, ws, newsletter, body)
    if newsletter.send_in_recipient_timezone and newsletter.state == "scheduled":
        raise InvalidInput(
            "schedule a time-zone send again with POST /schedule", field="send_in_recipient_timezone"
        )
    # Settings kept on the content apply to every test group's; content fields change the default
    # content (test group A's).
    shared: Json = {}
    if "name" in body:
        shared["name"] = newsletter.name
    if "layout_id" in body:
        shared["layout_id"] = body["layout_id"]
    if "subscription_topic_id" in body:
        shared["topic_id"] = body["subscription_topic_id"]
    content = _content(session, ws.workspace_id, body, default_from=None, creating=False)
    changes = {**shared, "content": templates.overlay(template.content, content)} if content else shared
    templates.apply_fields(session, template, changes, creating=False)
    for _, other in _variants(session, newsletter):
        if other is not template:
            templates.apply_fields(session, other, shared, creating=False)
            other.updated_at = now
    newsletter.subscription_topic_id = template.topic_id
    template.updated_at = newsletter.updated_at = now
    session.flush()
    return view(session, newsletter)


def delete(session: Session, workspace_id: int, newsletter_id: int) -> None:
    newsletter = get(session, workspace_id, newsletter_id)
    if newsletter.state == "sending":
        raise Conflict(f"newsletter {newsletter_id} is sending; cancel it first")
    groups = _groups(session, newsletter)
    template_ids = {newsletter.template_id, *(group.template_id for group in groups)} - {None}
    session.execute(
        delete_rows(NewsletterTestGroup).where(NewsletterTestGroup.newsletter_id == newsletter.id)
    )
    if newsletter.recipients_count == 0:
        # Nothing was written with them (sent deliveries keep their template for rendering and metrics).
        for template_id in template_ids:
            template = session.get(MessageTemplate, template_id)
            if template is not None:
                session.delete(template)
    session.delete(newsletter)
    session.flush()


# -- sending -------------------------------------------------------------------------------------------


def _start_now(session: Session, newsletter: Newsletter, now: int) -> None:
    if newsletter.send_in_recipient_timezone:
        raise InvalidInput(
            "a time-zone send needs scheduled_at (the wall-clock time to send at)",
            field="send_in_recipient_timezone",
        )
    newsletter.state, newsletter.send_started_at = "sending", now
    newsletter.scheduled_at = None
    newsletter.updated_at = now
    queue.enqueue(
        session,
        EXPAND_JOB,
        run_at=now,
        now=now,
        workspace_id=newsletter.workspace_id,
        payload={"newsletter_id": newsletter.id},
    )
    wake.soon(session)


def _schedule(session: Session, newsletter: Newsletter, scheduled_at: int, now: int) -> None:
    if scheduled_at > now + MAX_SCHEDULE_AHEAD:
        raise InvalidInput("scheduled_at may be at most a year ahead", field="scheduled_at")
    if scheduled_at <= now and not newsletter.send_in_recipient_timezone:
        # As Customer.io: a time already past means now.
        _start_now(session, newsletter, now)
        return
    newsletter.state, newsletter.scheduled_at, newsletter.updated_at = "scheduled", scheduled_at, now
    run_at = (
        scheduled_at - schedule.EARLIEST_OFFSET if newsletter.send_in_recipient_timezone else scheduled_at
    )
    queue.enqueue(
        session,
        EXPAND_JOB,
        run_at=max(run_at, now),
        now=now,
        workspace_id=newsletter.workspace_id,
        payload={"newsletter_id": newsletter.id, "start": True, "scheduled_at": scheduled_at},
    )
    wake.soon(session)


def _sendable(newsletter: Newsletter) -> None:
    if newsletter.state in ("sending", "sent"):
        raise Conflict(f"newsletter {newsletter.id} is already {newsletter.state}")


def schedule_send(session: Session, workspace_id: int, newsletter_id: int, body: Json, *, now: int) -> Json:
    """``POST /v1/newsletters/{id}/schedule``: ``{"scheduled_at": unix, "send_in_recipient_timezone"?}``.
    A scheduled newsletter may be scheduled again (the new time replaces the old)."""
    newsletter = get(session, workspace_id, newsletter_id)
    _sendable(newsletter)
    unknown = sorted(set(body) - {"scheduled_at", "send_in_recipient_timezone"})
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a field; expected scheduled_at, send_in_recipient_timezone",
            field=unknown[0],
        )
    scheduled_at = as_unix(body.get("scheduled_at"), "scheduled_at")
    if scheduled_at is None:
        raise InvalidInput("scheduled_at is required", field="scheduled_at")
    if "send_in_recipient_timezone" in body:
        zone = bool(_bool(body, "send_in_recipient_timezone"))
        if zone and (newsletter.rate_limit_email_rate is not None or newsletter.ramp is not None):
            raise InvalidInput(
                "a newsletter sent in each recipient's time zone cannot also be rate limited or ramped",
                field="send_in_recipient_timezone",
            )
        newsletter.send_in_recipient_timezone = zone
        _check_zone_and_winner(newsletter)
    _schedule(session, newsletter, scheduled_at, now)
    session.flush()
    return view(session, newsletter)


def send_now(session: Session, workspace_id: int, newsletter_id: int, *, now: int) -> Json:
    newsletter = get(session, workspace_id, newsletter_id)
    _sendable(newsletter)
    if newsletter.send_in_recipient_timezone:
        newsletter.send_in_recipient_timezone = False
    _start_now(session, newsletter, now)
    session.flush()
    return view(session, newsletter)


def cancel(session: Session, workspace_id: int, newsletter_id: int, *, now: int) -> Json:
    """Stop a scheduled or sending newsletter, or a sent one whose paced messages are still waiting
    (Tidings). Nobody more is expanded; deliveries written and not yet sent are dropped."""
    newsletter = get(session, workspace_id, newsletter_id)
    pending = list(
        session.scalars(
            select(Delivery).where(
                Delivery.workspace_id == workspace_id,
                Delivery.newsletter_id == newsletter.id,
                Delivery.state == "queued",
            )
        )
    )
    if newsletter.state not in ("scheduled", "sending") and not (newsletter.state == "sent" and pending):
        raise Conflict(
            f"newsletter {newsletter_id} is {newsletter.state}"
            + (" and every message has gone out" if newsletter.state == "sent" else "")
            + "; only a scheduled or sending one can be canceled"
        )
    newsletter.state, newsletter.updated_at = "canceled", now
    for delivery in pending:
        lifecycle.record(
            session, delivery, "dropped", now=now, source="tidings", reason="the newsletter was canceled"
        )
    session.flush()
    return view(session, newsletter)


def _pace(newsletter: Newsletter) -> schedule.Pace:
    ramp = newsletter.ramp or {}
    return schedule.Pace(
        rate=newsletter.rate_limit_email_rate,
        period=newsletter.rate_limit_time_period,
        spread=newsletter.rate_limit_spread,
        ramp_start=ramp.get("start"),
        ramp_growth=float(ramp.get("growth", 1)),
    )


def expand(session: Session, payload: dict[str, Any], now: float, settings: Settings) -> None:
    """One chunk of a newsletter's recipients: resolve it, write its deliveries, queue the next chunk.
    With ``winner`` in the payload: pick an A/B test's winner and start sending it to the rest."""
    query = select(Newsletter).where(Newsletter.id == int(payload["newsletter_id"]))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    newsletter = session.scalars(query).first()
    if newsletter is None:
        return
    stamp = int(now)
    if payload.get("start"):
        if newsletter.state != "scheduled" or newsletter.scheduled_at != payload.get("scheduled_at"):
            return  # rescheduled, sent now or canceled since this run was queued
        newsletter.state = "sending"
        newsletter.send_started_at = (
            stamp if newsletter.send_in_recipient_timezone else max(stamp, newsletter.scheduled_at or stamp)
        )
    elif newsletter.state != "sending":
        return
    if payload.get("winner"):
        _pick_winner(session, newsletter, stamp)
        return
    if newsletter.test_phase == "waiting":
        # Sent again after a cancel while waiting for the winner: wait on.
        _queue_winner(session, newsletter, now)
        return
    groups = _groups(session, newsletter)
    if groups and newsletter.winner_settings is not None and newsletter.test_phase is None:
        newsletter.test_phase = "testing"
    started = newsletter.send_started_at or stamp
    condition = parse(newsletter.recipients, "recipients")
    rows = session.execute(
        select(Person.id, Person.attributes)
        .where(
            Person.workspace_id == newsletter.workspace_id,
            Person.id > newsletter.cursor,
            Person.unsubscribed.is_(False),
            Person.email.is_not(None),
            compiler.predicate(condition, compiler.Context(workspace_id=newsletter.workspace_id, now=stamp)),
        )
        .order_by(Person.id)
        .limit(CHUNK)
    ).all()
    if not rows:
        if newsletter.test_phase == "testing":
            # The test share is written: wait, then send the winner to the people held back.
            wait = int((newsletter.winner_settings or {}).get("wait", MIN_WINNER_WAIT))
            newsletter.test_phase, newsletter.winner_at = "waiting", stamp + wait
            newsletter.updated_at = stamp
            _queue_winner(session, newsletter, now)
            return
        newsletter.state, newsletter.sent_at, newsletter.updated_at = "sent", stamp, stamp
        return
    already: set[int] = set()
    if newsletter.test_phase == "winner":
        # The test share has theirs; the winner goes to everyone else the filter matches now.
        already = set(
            session.scalars(
                select(Delivery.person_id).where(
                    Delivery.workspace_id == newsletter.workspace_id,
                    Delivery.person_id.in_([person_id for person_id, _ in rows]),
                    Delivery.newsletter_id == newsletter.id,
                )
            )
        )
    winner = next((g for g in groups if g.winner), None)
    pace = _pace(newsletter)
    written = 0
    for person_id, stored in rows:
        if person_id in already:
            continue
        group = winner if newsletter.test_phase == "winner" else _pick(newsletter, groups)
        if group is None and groups:
            newsletter.test_held += 1  # held back for the winner
            continue
        attributes: Json = stored or {}
        if newsletter.send_in_recipient_timezone and newsletter.scheduled_at is not None:
            due = max(schedule.local_time(newsletter.scheduled_at, attributes.get("timezone")), started)
        else:
            due = started + pace.offset(newsletter.recipients_count - newsletter.pace_base + written)
        language = attributes.get("language")
        request: Json = {
            "send_to_unsubscribed": False,
            "language": language if isinstance(language, str) else None,
            "newsletter": {"id": newsletter.id, "name": newsletter.name},
        }
        if group is not None:
            request["test_group"] = {"id": group.id, "name": _group_name(group.position)}
            group.recipients_count += 1
        delivery = Delivery(
            id=new_delivery_id(),
            workspace_id=newsletter.workspace_id,
            person_id=person_id,
            channel="email",
            created_at=stamp,
            template_id=group.template_id if group is not None else newsletter.template_id,
            newsletter_id=newsletter.id,
            request=request,
            state="queued",
            due_at=due,
            attempts=0,
        )
        session.add(delivery)
        session.flush()
        lifecycle.created(session, delivery, now=stamp)
        written += 1
    newsletter.cursor = rows[-1][0]
    newsletter.recipients_count += written
    queue.enqueue(
        session,
        EXPAND_JOB,
        run_at=now,
        now=now,
        workspace_id=newsletter.workspace_id,
        payload={"newsletter_id": newsletter.id},
    )
    wake.soon(session)


def _pick(newsletter: Newsletter, groups: list[NewsletterTestGroup]) -> NewsletterTestGroup | None:
    """The test group the next recipient gets (None: held back for the winner; also None without a
    test). Each group has a weight (its percentage, times the test share when the winner is sent to the
    rest, which is a weight of its own); the next recipient goes where the count so far falls furthest
    behind its weight's share (ties: the earlier group). So every prefix of the send order is split as
    configured to within about one person (a random split of a small audience can be far off), and, the
    counts moving in the transaction that writes each chunk, a chunk run again after a crash assigns
    everyone as before."""
    if not groups:
        return None
    test_share = (newsletter.winner_settings or {}).get("test_percentage", 100)
    weights: list[tuple[NewsletterTestGroup | None, int, int]] = [
        (group, group.percentage * test_share, group.recipients_count) for group in groups
    ]
    if newsletter.winner_settings is not None:
        weights.append((None, (100 - test_share) * 100, newsletter.test_held))
    total = sum(weight for _, weight, _ in weights)
    done = sum(count for _, _, count in weights)
    best = max(weights, key=lambda item: item[1] * (done + 1) - total * item[2])
    return best[0]


def _queue_winner(session: Session, newsletter: Newsletter, now: float) -> None:
    queue.enqueue(
        session,
        EXPAND_JOB,
        run_at=max(float(newsletter.winner_at or now), now),
        now=now,
        workspace_id=newsletter.workspace_id,
        payload={"newsletter_id": newsletter.id, "winner": True},
    )
    wake.soon(session)


def _pick_winner(session: Session, newsletter: Newsletter, stamp: int) -> None:
    """The test group whose messages did best by ``winner_settings.metric`` (opened or clicked, per
    message sent; the earlier group on a tie, A when nothing was sent) wins; then the expansion starts
    over for the people held back, who all get the winner's content."""
    if newsletter.test_phase != "waiting":
        return  # picked already (a second job after a cancel and a new send)
    groups = _groups(session, newsletter)
    metric = WINNER_METRICS[str((newsletter.winner_settings or {}).get("metric", "opened"))]
    counts = {
        template_id: (int(sent or 0), int(hits or 0))
        for template_id, sent, hits in session.execute(
            select(Delivery.template_id, func.count(Delivery.sent_at), func.count(metric))
            .where(Delivery.workspace_id == newsletter.workspace_id, Delivery.newsletter_id == newsletter.id)
            .group_by(Delivery.template_id)
        )
    }

    def rate(group: NewsletterTestGroup) -> float:
        sent, hits = counts.get(group.template_id, (0, 0))
        return hits / sent if sent else 0.0

    winner = max(groups, key=lambda group: (rate(group), -group.position))
    winner.winner, winner.updated_at = True, stamp
    newsletter.test_phase, newsletter.winner_at, newsletter.updated_at = "winner", stamp, stamp
    # Start over from the first person: the winner's deliveries are paced as a send of their own.
    newsletter.cursor, newsletter.send_started_at, newsletter.pace_base = (
        0,
        stamp,
        newsletter.recipients_count,
    )
    queue.enqueue(
        session,
        EXPAND_JOB,
        run_at=stamp,
        now=stamp,
        workspace_id=newsletter.workspace_id,
        payload={"newsletter_id": newsletter.id},
    )
    wake.soon(session)


# -- test sends ----------------------------------------------------------------------------------------


def send_test(session: Session, workspace_id: int, newsletter_id: int, body: Json, *, now: int) -> Json:
    """``POST /v1/newsletters/{id}/test`` (Tidings): ``{"emails": [...], "identifiers"?: {...}}``. One
    delivery per address, rendered as the person with that address (else as ``identifiers``' person),
    marked as a test: not one of the newsletter's sends, so not in its metrics or messages."""
    newsletter = get(session, workspace_id, newsletter_id)
    unknown = sorted(set(body) - {"emails", "identifiers", "test_group_id"})
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a field; expected emails, identifiers, test_group_id", field=unknown[0]
        )
    if body.get("test_group_id") is not None:
        group = _group_in_body(session, newsletter, body["test_group_id"], "test_group_id")
        template = _group_template(session, newsletter, group)
    else:
        template = _template(session, newsletter)
    emails = body.get("emails")
    if (
        not isinstance(emails, list)
        or not emails
        or len(emails) > MAX_TEST_EMAILS
        or not all(isinstance(e, str) and "@" in e and "{" not in e for e in emails)
    ):
        raise InvalidInput(f"emails must be a list of 1 to {MAX_TEST_EMAILS} email addresses", field="emails")
    fallback: Person | None = None
    if body.get("identifiers") is not None:
        ident = identifier_from_object(body["identifiers"])
        fallback = find_person(session, workspace_id, ident)
        if fallback is None:
            raise InvalidInput(f"no person has {ident}", field="identifiers")
    sent: list[Json] = []
    for address in emails:
        person = (
            session.scalars(
                select(Person).where(
                    Person.workspace_id == workspace_id, Person.email_key == email_key(address)
                )
            ).first()
            or fallback
        )
        if person is None:
            raise InvalidInput(
                f"nobody has the address {address}; give identifiers of a person to render the test as",
                field="emails",
            )
        delivery = Delivery(
            id=new_delivery_id(),
            workspace_id=workspace_id,
            person_id=person.id,
            channel="email",
            created_at=now,
            template_id=template.id,
            request={
                "send_to_unsubscribed": True,
                "overrides": {"to": address},
                "test_of_newsletter": newsletter.id,
                "newsletter": {"id": newsletter.id, "name": newsletter.name},
            },
            state="queued",
            due_at=now,
            attempts=0,
        )
        session.add(delivery)
        session.flush()
        lifecycle.created(session, delivery, now=now)
        sent.append({"email": address, "delivery_id": delivery.id})
    wake.soon(session)
    return {"deliveries": sent}


# -- test groups ---------------------------------------------------------------------------------------


def _group_view(group: NewsletterTestGroup) -> Json:
    """Customer.io's test group fields (``content_ids``: one content; its translations share its id),
    then Tidings' (percentage, recipients_count)."""
    return {
        "id": group.id,
        "name": _group_name(group.position),
        "label": group.label,
        "winner": group.winner,
        "content_ids": [group.template_id] if group.template_id is not None else [],
        "percentage": group.percentage,
        "recipients_count": group.recipients_count,
    }


def test_groups(session: Session, workspace_id: int, newsletter_id: int) -> Json:
    newsletter = get(session, workspace_id, newsletter_id)
    return {
        "test_groups": [_group_view(group) for group in _groups(session, newsletter)],
        "winner_settings": newsletter.winner_settings,
        "test_phase": newsletter.test_phase,
        "winner_at": newsletter.winner_at,
    }


def _not_started(newsletter: Newsletter, what: str) -> None:
    """A test's groups and split are fixed once the first recipient has been written."""
    if newsletter.state in ("sending", "sent") or newsletter.recipients_count > 0:
        raise Conflict(
            f"newsletter {newsletter.id} has started sending; {what} only before it sends",
            field="test_groups",
        )


def _even_split(groups: list[NewsletterTestGroup]) -> None:
    share, extra = divmod(100, len(groups))
    for group in groups:
        group.percentage = share + (1 if group.position < extra else 0)


def _label(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise InvalidInput(f"{field} must be a string of at most {MAX_NAME} characters", field=field)
    return value


def add_test_group(
    session: Session, ws: WorkspaceContext, newsletter_id: int, body: Json, *, now: int
) -> Json:
    """``POST /v1/newsletters/{id}/test_groups``: a new test group whose content is a copy of the
    default content (A's), with the content fields of ``body`` (Tidings) laid over it; the first one also
    makes the existing content group A. The percentages go back to an even split."""
    newsletter = get(session, ws.workspace_id, newsletter_id)
    _not_started(newsletter, "test groups can be added")
    unknown = sorted(set(body) - {"label", *CONTENT_FIELDS})
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a field of a test group; expected label, {', '.join(CONTENT_FIELDS)}",
            field=unknown[0],
        )
    source = _template(session, newsletter)
    content = _content(session, ws.workspace_id, body, default_from=None, creating=False)
    groups = _groups(session, newsletter)
    if len(groups) + (1 if groups else 2) > MAX_TEST_GROUPS:
        raise InvalidInput(f"a newsletter has at most {MAX_TEST_GROUPS} test groups", field="test_groups")
    if not groups:
        first = NewsletterTestGroup(
            workspace_id=ws.workspace_id,
            newsletter_id=newsletter.id,
            position=0,
            label="test 1",
            template_id=source.id,
            percentage=100,
            recipients_count=0,
            winner=False,
            created_at=now,
            updated_at=now,
        )
        session.add(first)
        groups.append(first)
    copy = MessageTemplate(
        workspace_id=ws.workspace_id,
        kind="newsletter",
        name=source.name,
        channel=source.channel,
        content=templates.overlay(source.content, content),
        languages=dict(source.languages),
        layout_id=source.layout_id,
        topic_id=source.topic_id,
        link_tracking=source.link_tracking,
        open_tracking=source.open_tracking,
        send_to_unsubscribed=False,
        created_at=now,
        updated_at=now,
    )
    session.add(copy)
    session.flush()
    position = groups[-1].position + 1
    group = NewsletterTestGroup(
        workspace_id=ws.workspace_id,
        newsletter_id=newsletter.id,
        position=position,
        label=_label(body["label"], "label") if body.get("label") is not None else f"test {position + 1}",
        template_id=copy.id,
        percentage=0,
        recipients_count=0,
        winner=False,
        created_at=now,
        updated_at=now,
    )
    session.add(group)
    groups.append(group)
    _even_split(groups)
    newsletter.updated_at = now
    session.flush()
    return view(session, newsletter)


def _winner_settings(value: Any) -> Json | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"test_percentage", "metric", "wait"}:
        raise InvalidInput(
            'winner_settings must be {"test_percentage": 1-99, "metric": "opened" or "clicked", '
            '"wait": seconds}',
            field="winner_settings",
        )
    share = value.get("test_percentage")
    if isinstance(share, bool) or not isinstance(share, int) or not 1 <= share <= 99:
        raise InvalidInput(
            "winner_settings.test_percentage must be a whole percentage from 1 to 99 (the share of the "
            "recipients the test groups go to)",
            field="winner_settings.test_percentage",
        )
    metric = value.get("metric", "opened")
    if metric not in WINNER_METRICS:
        raise InvalidInput("winner_settings.metric must be opened or clicked", field="winner_settings.metric")
    wait = value.get("wait")
    if isinstance(wait, bool) or not isinstance(wait, int) or not MIN_WINNER_WAIT <= wait <= MAX_WINNER_WAIT:
        raise InvalidInput(
            f"winner_settings.wait must be seconds from {MIN_WINNER_WAIT} to {MAX_WINNER_WAIT} (how long "
            "after the test share is written the winner is picked)",
            field="winner_settings.wait",
        )
    return {"test_percentage": share, "metric": metric, "wait": wait}


def update_test_groups(
    session: Session, workspace_id: int, newsletter_id: int, body: Json, *, now: int
) -> Json:
    """``PUT /v1/newsletters/{id}/test_groups`` (Tidings): ``{"test_groups": [{"id", "percentage"?,
    "label"?}, …], "winner_settings"?: {…} or null}``. Percentages, when given, are given for every
    group and add up to 100."""
    newsletter = get(session, workspace_id, newsletter_id)
    _not_started(newsletter, "a test can be changed")
    unknown = sorted(set(body) - {"test_groups", "winner_settings"})
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a field; expected test_groups, winner_settings", field=unknown[0]
        )
    groups = _groups(session, newsletter)
    if not groups:
        raise InvalidInput(
            f"newsletter {newsletter_id} has no test groups; add them with POST /v1/newsletters/"
            f"{newsletter_id}/test_groups",
            field="test_groups",
        )
    if "test_groups" in body:
        items = body["test_groups"]
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise InvalidInput("test_groups must be a list of objects", field="test_groups")
        by_id = {group.id: group for group in groups}
        seen: set[int] = set()
        percentages: dict[int, int] = {}
        for index, item in enumerate(items):
            where = f"test_groups[{index}]"
            extra = sorted(set(item) - {"id", "percentage", "label", "name", "winner", "content_ids"})
            if extra:
                raise InvalidInput(
                    f"{where}.{extra[0]} is not a field; expected id, percentage, label",
                    field=f"{where}.{extra[0]}",
                )
            group = by_id.get(item.get("id")) if isinstance(item.get("id"), int) else None
            if group is None:
                raise InvalidInput(
                    f"{where}.id: {item.get('id')!r} is not a test group of newsletter {newsletter_id}",
                    field=f"{where}.id",
                )
            if group.id in seen:
                raise InvalidInput(f"{where}.id: test group {group.id} is listed twice", field=f"{where}.id")
            seen.add(group.id)
            if "percentage" in item:
                value = item["percentage"]
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
                    raise InvalidInput(
                        f"{where}.percentage must be a whole percentage from 1 to 100",
                        field=f"{where}.percentage",
                    )
                percentages[group.id] = value
            if "label" in item:
                group.label = _label(item["label"], f"{where}.label")
                group.updated_at = now
        if percentages:
            if set(percentages) != set(by_id):
                missing = sorted(set(by_id) - set(percentages))
                raise InvalidInput(
                    f"give the percentage of every test group (missing: {', '.join(map(str, missing))})",
                    field="test_groups",
                )
            total = sum(percentages.values())
            if total != 100:
                raise InvalidInput(
                    f"test group percentages must add up to 100 (they add up to {total})", field="test_groups"
                )
            for group in groups:
                group.percentage, group.updated_at = percentages[group.id], now
    if "winner_settings" in body:
        newsletter.winner_settings = _winner_settings(body["winner_settings"])
        try:
            _check_zone_and_winner(newsletter)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field="winner_settings") from None
    newsletter.updated_at = now
    session.flush()
    return test_groups(session, workspace_id, newsletter_id)


def _group_in_body(session: Session, newsletter: Newsletter, value: Any, field: str) -> NewsletterTestGroup:
    group = (
        session.get(NewsletterTestGroup, value)
        if isinstance(value, int) and not isinstance(value, bool)
        else None
    )
    if group is None or group.newsletter_id != newsletter.id:
        raise InvalidInput(
            f"{field}: {value!r} is not a test group of newsletter {newsletter.id}", field=field
        )
    return group


def _group(session: Session, newsletter: Newsletter, test_group_id: str) -> NewsletterTestGroup:
    """The test group a path names (Customer.io's test group ids are strings in paths); 404 otherwise."""
    group = (
        session.get(NewsletterTestGroup, int(test_group_id))
        if test_group_id.isdigit() and len(test_group_id) <= 18
        else None
    )
    if group is None or group.newsletter_id != newsletter.id:
        raise NotFound(f"test group {test_group_id} of newsletter {newsletter.id} not found")
    return group


def _group_template(session: Session, newsletter: Newsletter, group: NewsletterTestGroup) -> MessageTemplate:
    template = session.get(MessageTemplate, group.template_id) if group.template_id else None
    if template is None:
        raise NotFound(f"test group {group.id} of newsletter {newsletter.id} has no content")
    return template


# -- contents and translations -------------------------------------------------------------------------


def _content_view(
    session: Session,
    newsletter: Newsletter,
    template: MessageTemplate,
    language: str,
    group: NewsletterTestGroup | None = None,
) -> Json:
    content = dict(template.content)
    if language:
        content = templates.overlay(content, template.languages.get(language) or {})
    from_id = content.get(templates.FROM_ID)
    return {
        "id": template.id,
        "newsletter_id": newsletter.id,
        "deduplicate_id": f"{template.id}:{template.updated_at}",
        "name": template.name,
        "type": "email",
        "language": language,
        "layout_id": template.layout_id,
        # With from_id, the identity's address as it is now (what a message rendered now would use).
        "from": senders.address_for(session, newsletter.workspace_id, from_id)
        if from_id is not None
        else content.get("from"),
        "from_id": from_id,
        "reply_to": content.get("reply_to"),
        "recipient": content.get("to"),
        "subject": content.get("subject"),
        "preheader_text": content.get("preheader"),
        "body": content.get("body"),
        "body_plain": content.get("body_plain"),
        "body_amp": content.get("body_amp"),
        "headers": content.get("headers"),
        "fake_bcc": False,
        "created": template.created_at,
        "updated": template.updated_at,
        "test_group_id": group.id if group is not None else None,
    }


def contents(session: Session, workspace_id: int, newsletter_id: int) -> Json:
    """Every content (one per test group, A first) and each one's translations."""
    newsletter = get(session, workspace_id, newsletter_id)
    return {
        "contents": [
            _content_view(session, newsletter, template, code, group)
            for group, template in _variants(session, newsletter)
            for code in ["", *sorted(template.languages)]
        ]
    }


def _content_of(
    session: Session, workspace_id: int, newsletter_id: int, content_id: int
) -> tuple[Newsletter, MessageTemplate, NewsletterTestGroup | None]:
    newsletter = get(session, workspace_id, newsletter_id)
    for group, template in _variants(session, newsletter):
        if template.id == content_id:
            return newsletter, template, group
    raise NotFound(f"content {content_id} of newsletter {newsletter_id} not found")


def get_content(session: Session, workspace_id: int, newsletter_id: int, content_id: int) -> Json:
    newsletter, template, group = _content_of(session, workspace_id, newsletter_id, content_id)
    return {"content": _content_view(session, newsletter, template, "", group)}


def content_scope(
    session: Session, workspace_id: int, newsletter_id: int, content_id: int | None, type: str | None
) -> deliveries.Scope:
    """The deliveries a newsletter's (or one content's) metrics count; 404 when either is not there."""
    if content_id is None:
        get(session, workspace_id, newsletter_id)
        return deliveries.Scope("newsletter_id", newsletter_id, deliveries.channel_of(type))
    _content_of(session, workspace_id, newsletter_id, content_id)
    return deliveries.Scope(
        "newsletter_id", newsletter_id, deliveries.channel_of(type), template_id=content_id
    )


_EDITABLE = {*CONTENT_FIELDS, "layout_id"}
_CONTENT_READ_ONLY = {
    "id",
    "newsletter_id",
    "deduplicate_id",
    "name",
    "type",
    "language",
    "recipient",
    "fake_bcc",
    "created",
    "updated",
    "test_group_id",
}


def put_content(
    session: Session, workspace_id: int, newsletter_id: int, content_id: int, body: Json, *, now: int
) -> Json:
    """Change a content (the default, or a test group's). Deliveries not rendered yet go out with the new
    content. ``layout_id`` is the newsletter's: it changes every test group's."""
    newsletter, template, group = _content_of(session, workspace_id, newsletter_id, content_id)
    unknown = sorted(set(body) - _EDITABLE - _CONTENT_READ_ONLY)
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a content field; expected {', '.join(sorted(_EDITABLE))}", field=unknown[0]
        )
    content = _content(session, workspace_id, body, default_from=None, creating=False)
    templates.apply_fields(
        session, template, {"content": templates.overlay(template.content, content)}, creating=False
    )
    if "layout_id" in body:
        for _, variant in _variants(session, newsletter):
            templates.apply_fields(session, variant, {"layout_id": body["layout_id"]}, creating=False)
            variant.updated_at = now
    template.updated_at = now
    session.flush()
    return {"content": _content_view(session, newsletter, template, "", group)}


def _translatable(
    session: Session, workspace_id: int, newsletter_id: int, test_group_id: str | None
) -> tuple[Newsletter, MessageTemplate, NewsletterTestGroup | None]:
    """The content whose translations a path names: the default content (test group A's), or a test
    group's."""
    newsletter = get(session, workspace_id, newsletter_id)
    if test_group_id is None:
        return newsletter, _template(session, newsletter), None
    group = _group(session, newsletter, test_group_id)
    return newsletter, _group_template(session, newsletter, group), group


def get_language(
    session: Session,
    workspace_id: int,
    newsletter_id: int,
    language: str,
    *,
    test_group_id: str | None = None,
) -> Json:
    newsletter, template, group = _translatable(session, workspace_id, newsletter_id, test_group_id)
    if language not in template.languages:
        raise NotFound(f"newsletter {newsletter_id} has no {language!r} translation")
    return {"content": _content_view(session, newsletter, template, language, group)}


def _language_code(language: Any) -> str:
    if not isinstance(language, str) or not language.strip() or len(language) > 35 or "/" in language:
        raise InvalidInput("language must be a language code such as fr or pt-BR", field="language")
    return language


def put_language(
    session: Session,
    workspace_id: int,
    newsletter_id: int,
    language: Any,
    body: Json,
    *,
    now: int,
    creating: bool = False,
    test_group_id: str | None = None,
) -> Json:
    """Set one translation: the content fields given override the content for people whose ``language``
    attribute is ``language``."""
    newsletter, template, group = _translatable(session, workspace_id, newsletter_id, test_group_id)
    code = _language_code(language)
    if creating and code in template.languages:
        raise Conflict(f"newsletter {newsletter_id} already has a {code!r} translation")
    unknown = sorted(set(body) - set(CONTENT_FIELDS) - _CONTENT_READ_ONLY)
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a translatable field; expected {', '.join(CONTENT_FIELDS)}",
            field=unknown[0],
        )
    translation = _content(session, workspace_id, body, default_from=None, creating=False)
    template.languages = {**template.languages, code: translation}
    template.updated_at = now
    session.flush()
    return {"content": _content_view(session, newsletter, template, code, group)}


def delete_language(
    session: Session,
    workspace_id: int,
    newsletter_id: int,
    language: str,
    *,
    now: int,
    test_group_id: str | None = None,
) -> None:
    _, template, _ = _translatable(session, workspace_id, newsletter_id, test_group_id)
    if language not in template.languages:
        raise NotFound(f"newsletter {newsletter_id} has no {language!r} translation")
    template.languages = {code: c for code, c in template.languages.items() if code != language}
    template.updated_at = now
    session.flush()


# -- messages ------------------------------------------------------------------------------------------


def messages(session: Session, workspace_id: int, newsletter_id: int, **filters: Any) -> Json:
    """The newsletter's deliveries (test sends are not among them), newest first, each with Tidings'
    ``due_at`` (when it may go)."""
    get(session, workspace_id, newsletter_id)
    page = deliveries.list_messages(session, workspace_id, newsletter_id=newsletter_id, **filters)
    ids = [message["id"] for message in page["messages"]]
    due = (
        dict(session.execute(select(Delivery.id, Delivery.due_at).where(Delivery.id.in_(ids))).all())
        if ids
        else {}
    )
    for message in page["messages"]:
        message["due_at"] = due.get(message["id"])
    return page

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

The content is a ``MessageTemplate`` of kind ``newsletter``: its id is the newsletter's one content id;
translations are its languages, picked by each person's ``language`` attribute.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.deliveries import lifecycle
from tidings.deliveries import queries as deliveries
from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.ids import new_delivery_id
from tidings.messaging import templates
from tidings.models import Delivery, MessageTemplate, Newsletter, Person, Segment
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
        "from_id",
    }
)
RECIPIENT = "{{ customer.email }}"


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


def _content(body: Json, *, default_from: str | None, creating: bool, path: str = "") -> Json:
    """The email fields given in ``body`` (newsletter names), as template content, Liquid-checked."""
    if body.get("from_id") is not None:
        raise InvalidInput(
            "from_id is not supported: Tidings has no sender identities; give from as an address",
            field="from_id",
        )
    given = {CONTENT_FIELDS[key]: body[key] for key in CONTENT_FIELDS if body.get(key) is not None}
    content = templates.validate_content("email", given, path=path.rstrip(".") or "content")
    if creating:
        for key in ("subject", "body"):
            if not content.get(key):
                raise InvalidInput(f"{key} is required for an email newsletter", field=key)
        if not content.get("from") and not default_from:
            raise InvalidInput(
                "from is required (or set a default from address in the workspace's email settings)",
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


def view(newsletter: Newsletter) -> Json:
    """Customer.io's newsletter fields, then Tidings' (state, recipients, schedule and pacing)."""
    return {
        "id": newsletter.id,
        "deduplicate_id": f"{newsletter.id}:{newsletter.updated_at}",
        "name": newsletter.name,
        "type": newsletter.type,
        "created": newsletter.created_at,
        "updated": newsletter.updated_at,
        "sent_at": newsletter.sent_at,
        "content_ids": [newsletter.template_id] if newsletter.template_id is not None else [],
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
    return {
        "newsletters": [view(row) for row in page],
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
        created_at=now,
        updated_at=now,
    )
    _apply_settings(session, ws, newsletter, body)
    content = _content(body, default_from=ws.settings.messaging.email.default_from, creating=True)
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
    return view(newsletter)


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
    changes: Json = {}
    content = _content(body, default_from=None, creating=False)
    if content:
        changes["content"] = {**template.content, **content}
    if "name" in body:
        changes["name"] = newsletter.name
    if "layout_id" in body:
        changes["layout_id"] = body["layout_id"]
    if "subscription_topic_id" in body:
        changes["topic_id"] = body["subscription_topic_id"]
    templates.apply_fields(session, template, changes, creating=False)
    newsletter.subscription_topic_id = template.topic_id
    template.updated_at = newsletter.updated_at = now
    session.flush()
    return view(newsletter)


def delete(session: Session, workspace_id: int, newsletter_id: int) -> None:
    newsletter = get(session, workspace_id, newsletter_id)
    if newsletter.state == "sending":
        raise Conflict(f"newsletter {newsletter_id} is sending; cancel it first")
    template = session.get(MessageTemplate, newsletter.template_id) if newsletter.template_id else None
    if template is not None and newsletter.recipients_count == 0:
        # Nothing was written with it (sent deliveries keep their template for rendering and metrics).
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
    _schedule(session, newsletter, scheduled_at, now)
    session.flush()
    return view(newsletter)


def send_now(session: Session, workspace_id: int, newsletter_id: int, *, now: int) -> Json:
    newsletter = get(session, workspace_id, newsletter_id)
    _sendable(newsletter)
    if newsletter.send_in_recipient_timezone:
        newsletter.send_in_recipient_timezone = False
    _start_now(session, newsletter, now)
    session.flush()
    return view(newsletter)


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
    return view(newsletter)


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
    """One chunk of a newsletter's recipients: resolve it, write its deliveries, queue the next chunk."""
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
        newsletter.state, newsletter.sent_at, newsletter.updated_at = "sent", stamp, stamp
        return
    pace = _pace(newsletter)
    for place, (person_id, stored) in enumerate(rows):
        attributes: Json = stored or {}
        if newsletter.send_in_recipient_timezone and newsletter.scheduled_at is not None:
            due = max(schedule.local_time(newsletter.scheduled_at, attributes.get("timezone")), started)
        else:
            due = started + pace.offset(newsletter.recipients_count + place)
        language = attributes.get("language")
        delivery = Delivery(
            id=new_delivery_id(),
            workspace_id=newsletter.workspace_id,
            person_id=person_id,
            channel="email",
            created_at=stamp,
            template_id=newsletter.template_id,
            newsletter_id=newsletter.id,
            request={
                "send_to_unsubscribed": False,
                "language": language if isinstance(language, str) else None,
                "newsletter": {"id": newsletter.id, "name": newsletter.name},
            },
            state="queued",
            due_at=due,
            attempts=0,
        )
        session.add(delivery)
        session.flush()
        lifecycle.created(session, delivery, now=stamp)
    newsletter.cursor = rows[-1][0]
    newsletter.recipients_count += len(rows)
    queue.enqueue(
        session,
        EXPAND_JOB,
        run_at=now,
        now=now,
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
    template = _template(session, newsletter)
    unknown = sorted(set(body) - {"emails", "identifiers"})
    if unknown:
        raise InvalidInput(f"{unknown[0]} is not a field; expected emails, identifiers", field=unknown[0])
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


# -- contents and translations -------------------------------------------------------------------------


def _content_view(newsletter: Newsletter, template: MessageTemplate, language: str) -> Json:
    content = dict(template.content)
    if language:
        content.update(template.languages.get(language) or {})
    return {
        "id": template.id,
        "newsletter_id": newsletter.id,
        "deduplicate_id": f"{template.id}:{template.updated_at}",
        "name": template.name,
        "type": "email",
        "language": language,
        "layout_id": template.layout_id,
        "from": content.get("from"),
        "from_id": None,
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
    }


def contents(session: Session, workspace_id: int, newsletter_id: int) -> Json:
    newsletter = get(session, workspace_id, newsletter_id)
    template = _template(session, newsletter)
    variants = ["", *sorted(template.languages)]
    return {"contents": [_content_view(newsletter, template, code) for code in variants]}


def _content_of(
    session: Session, workspace_id: int, newsletter_id: int, content_id: int
) -> tuple[Newsletter, MessageTemplate]:
    newsletter = get(session, workspace_id, newsletter_id)
    template = _template(session, newsletter)
    if template.id != content_id:
        raise NotFound(f"content {content_id} of newsletter {newsletter_id} not found")
    return newsletter, template


def get_content(session: Session, workspace_id: int, newsletter_id: int, content_id: int) -> Json:
    newsletter, template = _content_of(session, workspace_id, newsletter_id, content_id)
    return {"content": _content_view(newsletter, template, "")}


def content_scope(
    session: Session, workspace_id: int, newsletter_id: int, content_id: int | None, type: str | None
) -> deliveries.Scope:
    """The deliveries a newsletter's (or its content's) metrics count; 404 when either is not there."""
    if content_id is None:
        get(session, workspace_id, newsletter_id)
    else:
        _content_of(session, workspace_id, newsletter_id, content_id)
    return deliveries.Scope("newsletter_id", newsletter_id, deliveries.channel_of(type))


_EDITABLE = {*CONTENT_FIELDS, "layout_id"}
_CONTENT_READ_ONLY = {
    "id",
    "newsletter_id",
    "deduplicate_id",
    "name",
    "type",
    "language",
    "from_id",
    "recipient",
    "fake_bcc",
    "created",
    "updated",
}


def put_content(
    session: Session, workspace_id: int, newsletter_id: int, content_id: int, body: Json, *, now: int
) -> Json:
    """Change the default content. Deliveries not rendered yet go out with the new content."""
    newsletter, template = _content_of(session, workspace_id, newsletter_id, content_id)
    unknown = sorted(set(body) - _EDITABLE - _CONTENT_READ_ONLY)
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a content field; expected {', '.join(sorted(_EDITABLE))}", field=unknown[0]
        )
    changes: Json = {"content": {**template.content, **_content(body, default_from=None, creating=False)}}
    if "layout_id" in body:
        changes["layout_id"] = body["layout_id"]
    templates.apply_fields(session, template, changes, creating=False)
    template.updated_at = now
    session.flush()
    return {"content": _content_view(newsletter, template, "")}


def get_language(session: Session, workspace_id: int, newsletter_id: int, language: str) -> Json:
    newsletter = get(session, workspace_id, newsletter_id)
    template = _template(session, newsletter)
    if language not in template.languages:
        raise NotFound(f"newsletter {newsletter_id} has no {language!r} translation")
    return {"content": _content_view(newsletter, template, language)}


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
) -> Json:
    """Set one translation: the content fields given override the default content for people whose
    ``language`` attribute is ``language``."""
    newsletter = get(session, workspace_id, newsletter_id)
    template = _template(session, newsletter)
    code = _language_code(language)
    if creating and code in template.languages:
        raise Conflict(f"newsletter {newsletter_id} already has a {code!r} translation")
    unknown = sorted(set(body) - set(CONTENT_FIELDS) - _CONTENT_READ_ONLY)
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a translatable field; expected {', '.join(CONTENT_FIELDS)}",
            field=unknown[0],
        )
    translation = _content(body, default_from=None, creating=False)
    template.languages = {**template.languages, code: translation}
    template.updated_at = now
    session.flush()
    return {"content": _content_view(newsletter, template, code)}


def delete_language(
    session: Session, workspace_id: int, newsletter_id: int, language: str, *, now: int
) -> None:
    newsletter = get(session, workspace_id, newsletter_id)
    template = _template(session, newsletter)
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
        dict(session.execute(select(Delivery.id, Delivery.due_at).where(Delivery.id.in_(ids))).tuples().all())
        if ids
        else {}
    )
    for message in page["messages"]:
        message["due_at"] = due.get(message["id"])
    return page

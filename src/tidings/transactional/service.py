"""Transactional sends (``POST /v1/send/email|sms|push``): turn a request into a queued delivery.

The request is checked completely here (so a bad one is a 400 and nothing is queued), then written as a
delivery row in the same transaction; the sending worker renders and sends it. A 200 therefore means the
delivery is committed, and its ``delivery_id`` can be followed through the message APIs and webhooks.
Rendering happens at send time, as in Customer.io: a missing variable fails the delivery, not the request.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from tidings.db.bulk import insert_rows
from tidings.deliveries import lifecycle
from tidings.errors import InvalidInput, NotFound
from tidings.ids import new_delivery_id
from tidings.messaging import senders
from tidings.messaging.channels.email import parse_recipients, validate_attachments, validate_headers
from tidings.messaging.templates import auto_create, find_template, liquid
from tidings.models import Delivery, MessageTemplate
from tidings.people.identifiers import identifier_from_object
from tidings.people.service import as_unix, ensure_person_id
from tidings.worker import wake
from tidings.workspaces.schemas import WorkspaceContext

_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]

MAX_SEND_AHEAD_SECONDS = 90 * 86400
MAX_RECIPIENTS = 15
COMMON = {
    "transactional_message_id",
    "identifiers",
    "message_data",
    "disable_message_retention",
    "send_to_unsubscribed",
    "queue_draft",
    "send_at",
    "language",
    "auto_create",
}
# Request fields that override the template's content, per channel (their Liquid is checked here).
OVERRIDES = {
    "email": (
        "from",
        "reply_to",
        "to",
        "cc",
        "bcc",
        "subject",
        "preheader",
        "body",
        "body_plain",
        "body_amp",
    ),
    "sms": ("from", "body"),
    "push": ("title", "message", "image_url", "link", "sound"),
}
OPTIONS = {
    "email": {"from_id", "headers", "attachments", "tracked", "disable_css_preprocessing", "fake_bcc"},
    "sms": {"to"},
    "push": {"to", "custom_data", "custom_payload", "custom_device"},
}
BOOLEANS = (
    "disable_message_retention",
    "queue_draft",
    "auto_create",
    "tracked",
    "disable_css_preprocessing",
    "fake_bcc",
)


def _flag(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} must be true or false", field=key)
    return value


def _template(
    session: Session, ws: WorkspaceContext, channel: str, body: dict[str, Any], *, now: int
) -> MessageTemplate | None:
    ref = body.get("transactional_message_id")
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, int | str) or ref == "":
        raise InvalidInput(
            "transactional_message_id must be a number or a trigger name", field="transactional_message_id"
        )
    template = find_template(session, ws.workspace_id, ref)
    if template is None:
        if _flag(body, "auto_create") and isinstance(ref, str) and not ref.isdigit():
            return auto_create(session, ws.workspace_id, ref, channel, now=now)
        raise NotFound(f"transactional message {ref!r} not found")
    if template.channel != channel:
        raise InvalidInput(
            f"transactional message {ref!r} is a {template.channel} message, not {channel}",
            field="transactional_message_id",
        )
    return template


def _overrides(channel: str, body: dict[str, Any]) -> dict[str, str]:
    """The request's content fields, each checked as Liquid (recipients too: they may be templated)."""
    overrides: dict[str, str] = {}
    for key in OVERRIDES[channel]:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"{key} must be a string", field=key)
        liquid.validate(value, field=key)
        overrides[key] = value
    return overrides


def _sender(
    session: Session, ws: WorkspaceContext, body: dict[str, Any], overrides: dict[str, str]
) -> str | None:
    """The address ``from_id`` names, as the identity is now: a send keeps no content that could later
    name a deleted identity. It is sent as it is (not Liquid), over the message's own sender."""
    if body.get("from_id") is None:
        return None
    if overrides.get("from") is not None:
        raise InvalidInput("give from or from_id, not both", field="from_id")
    return senders.address_of(senders.resolve(session, ws.workspace_id, body["from_id"]))


def _email_checks(
    body: dict[str, Any],
    template: MessageTemplate | None,
    overrides: dict[str, str],
    default_from: str | None,
) -> None:
    if not overrides.get("to"):
        raise InvalidInput("to is required", field="to")
    recipients = 0
    for key in ("to", "cc", "bcc"):
        if key in overrides and "{" not in overrides[key]:
            recipients += len(parse_recipients(overrides[key]))
    if recipients > MAX_RECIPIENTS:
        raise InvalidInput(f"at most {MAX_RECIPIENTS} recipients across to, cc and bcc", field="to")
    if template is None or template.auto_created:
        content = template.content if template is not None else {}
        for key in ("body", "subject", "from"):
            if key == "from" and default_from:
                continue
            if not overrides.get(key) and not content.get(key):
                raise InvalidInput(f"{key} is required when no transactional message is given", field=key)
    if body.get("headers") is not None:
        validate_headers(body["headers"])
    if body.get("attachments") is not None:
        validate_attachments(body["attachments"])


def _push_checks(body: dict[str, Any]) -> None:
    to = body.get("to")
    if to is not None and not isinstance(to, str):
        raise InvalidInput("to must be all, last_used or a device token", field="to")
    custom_data = body.get("custom_data")
    if custom_data is not None and (
        not isinstance(custom_data, dict) or not all(isinstance(v, str) for v in custom_data.values())
    ):
        raise InvalidInput("custom_data must be an object of strings", field="custom_data")
    payload = body.get("custom_payload")
    if payload is not None and (
        not isinstance(payload, dict)
        or set(payload) - {"ios", "android"}
        or not all(isinstance(v, dict) for v in payload.values())
    ):
        raise InvalidInput(
            "custom_payload must be an object with ios and/or android objects", field="custom_payload"
        )
    device = body.get("custom_device")
    if device is not None and (
        not isinstance(device, dict)
        or not isinstance(device.get("token"), str)
        or device.get("platform") not in ("ios", "android")
    ):
        raise InvalidInput(
            "custom_device needs a token and a platform (ios or android)", field="custom_device"
        )


def _sms_checks(body: dict[str, Any], template: MessageTemplate | None, overrides: dict[str, str]) -> None:
    to = body.get("to")
    if to is not None and (not isinstance(to, str) or not to.startswith("+") or not to[1:].isdigit()):
        raise InvalidInput("to must be a phone number in E.164 form (+15551234567)", field="to")
    if not overrides.get("body") and (template is None or not template.content.get("body")):
        raise InvalidInput("body is required when the message has none", field="body")


def send(
    session: Session, ws: WorkspaceContext, channel: str, body: dict[str, Any], *, now: int
) -> dict[str, Any]:
    allowed = COMMON | set(OVERRIDES[channel]) | OPTIONS[channel]
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r} for a {channel} send", field=unknown[0])
    ident = identifier_from_object(body.get("identifiers"))
    for key in BOOLEANS:
        _flag(body, key)
    send_to_unsubscribed = _flag(body, "send_to_unsubscribed")
    message_data = body.get("message_data") or {}
    if not isinstance(message_data, dict):
        raise InvalidInput("message_data must be an object", field="message_data")
    language = body.get("language")
    if language is not None and not isinstance(language, str):
        raise InvalidInput("language must be a string", field="language")
    send_at = as_unix(body.get("send_at"), "send_at")
    if send_at is not None and send_at > now + MAX_SEND_AHEAD_SECONDS:
        raise InvalidInput("send_at may be at most 90 days ahead", field="send_at")
    template = _template(session, ws, channel, body, now=now)
    overrides = _overrides(channel, body)
    from_address = None
    if channel == "email":
        from_address = _sender(session, ws, body, overrides)
        _email_checks(body, template, overrides, from_address or ws.settings.messaging.email.default_from)
    elif channel == "sms":
        _sms_checks(body, template, overrides)
    else:
        _push_checks(body)
    person_id = ensure_person_id(session, ws, ident, now=now)
    if person_id is None:
        raise NotFound(f"no person has {ident}")
    options = {key: body[key] for key in OPTIONS[channel] - {"from_id"} if body.get(key) is not None}
    draft = bool(_flag(body, "queue_draft")) or bool(template is not None and template.queue_drafts)
    delivery_id = new_delivery_id()
    # Straight to the driver: the ORM's flush of one new object was a third of a send's time in the
    # writer. A draft is read back for its lifecycle record; a queued delivery needs nothing more here.
    insert_rows(
        session,
        _DELIVERIES,
        [
            {
                "id": delivery_id,
                "workspace_id": ws.workspace_id,
                "person_id": person_id,
                "channel": channel,
                "created_at": now,
                "template_id": template.id if template is not None else None,
                "request": {
                    "message_data": message_data,
                    "overrides": overrides,
                    "options": options,
                    "language": language,
                    "send_to_unsubscribed": send_to_unsubscribed,
                    "transactional": True,
                    **({"from_address": from_address} if from_address else {}),
                },
                "retain_content": not (
                    bool(_flag(body, "disable_message_retention"))
                    or bool(template is not None and template.hide_message_body)
                ),
                "state": "drafted" if draft else "queued",
                "due_at": None if draft else max(send_at or now, now),
                "drafted_at": now if draft else None,
                "attempts": 0,
            }
        ],
    )
    if draft:
        drafted = session.get(Delivery, delivery_id)
        assert drafted is not None
        lifecycle.created(session, drafted, now=now)
    wake.soon(session)
    return {"delivery_id": delivery_id, "queued_at": now}

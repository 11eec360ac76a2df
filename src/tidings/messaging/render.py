"""From a queued delivery to the content a channel sends: Liquid rendered against the person, the
trigger data, snippets and related objects; the layout applied; links tracked.

``load_context`` does the database reads; ``render_content`` is pure, so the render benchmark and the
sender share it. Which fields are HTML (autoescaped) comes from ``templates.FIELDS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.messaging import senders
from tidings.messaging.liquid import RenderFailed
from tidings.messaging.templates import FIELDS, FROM_ID, liquid, overlay, snippets_of
from tidings.models import Delivery, Device, Layout, MessageTemplate, Object, ObjectType, Person, Relationship
from tidings.tracking.links import DeliveryLinks
from tidings.tracking.rewrite import track_html

_SLUG = re.compile(r"[^a-z0-9]+")


class PrepareFailed(Exception):
    """The delivery cannot be sent as it stands (a render error, no recipient, no sender address)."""


@dataclass
class Prepared:
    content: dict[str, Any]
    recipient: str | None
    subject: str | None


def customer_of(person: Person) -> dict[str, Any]:
    customer = dict(person.attributes or {})
    customer.update(
        {"cio_id": person.cio_id, "created_at": person.created_at, "unsubscribed": person.unsubscribed}
    )
    if person.customer_id is not None:
        customer["id"] = person.customer_id
    if person.email is not None:
        customer["email"] = person.email
    if person.subscription_preferences:
        customer["cio_subscription_preferences"] = person.subscription_preferences
    return customer


def objects_of(session: Session, person: Person) -> dict[str, list[dict[str, Any]]]:
    """Related objects by the plural slug of their type (``objects.accounts[0].name``)."""
    rows = session.execute(
        select(ObjectType.name, Object.object_id, Object.attributes, Relationship.attributes)
        .join(Object, Object.id == Relationship.object_pk)
        .join(
            ObjectType,
            (ObjectType.workspace_id == Object.workspace_id) & (ObjectType.type_id == Object.type_id),
        )
        .where(Relationship.person_id == person.id)
        .order_by(Relationship.id)
    )
    related: dict[str, list[dict[str, Any]]] = {}
    for type_name, object_id, attributes, relationship in rows:
        slug = _SLUG.sub("_", type_name.lower()).strip("_")
        related.setdefault(slug, []).append(
            {**(attributes or {}), "object_id": object_id, "relationship": relationship or {}}
        )
    return related


def content_of(template: MessageTemplate | None, request: dict[str, Any]) -> dict[str, Any]:
    """The template's content, its translation for the request's language, then the request's overrides."""
    content: dict[str, Any] = dict(template.content) if template is not None else {}
    language = request.get("language")
    if template is not None and language and language in template.languages:
        content = overlay(content, template.languages[language])
    return overlay(content, request.get("overrides") or {})


def load_context(
    session: Session,
    delivery: Delivery,
    template: MessageTemplate | None,
    person: Person,
    *,
    content: dict[str, Any],
    snippets: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The Liquid context, and the layout's source when the message has a layout. Related objects are
    read only when the message mentions ``objects`` (a join per delivery otherwise wasted)."""
    request = delivery.request or {}
    layout = session.get(Layout, template.layout_id) if template and template.layout_id else None
    if snippets is None:
        snippets = snippets_of(session, delivery.workspace_id)
    sources = [layout.body if layout else "", *(str(value) for value in content.values()), *snippets.values()]
    context: dict[str, Any] = {
        "customer": customer_of(person),
        "trigger": request.get("message_data") or {},
        "event": request.get("event") or {},
        "journey": request.get("journey") or {},
        "objects": objects_of(session, person) if any("objects" in text for text in sources) else {},
        "snippets": snippets,
        "delivery_id": delivery.id,
        "message": {
            "id": template.id if template is not None else None,
            "name": template.name if template is not None else "",
            "type": delivery.channel,
        },
        "campaign": request.get("campaign") or {},
    }
    if layout is None:
        return context, None
    context["layout"] = {"id": layout.id, "name": layout.name}
    return context, layout.body


def _render_fields(
    channel: str, content: dict[str, Any], context: dict[str, Any], links: DeliveryLinks
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in FIELDS[channel]:
        value = content.get(field.name)
        if value is None:
            continue
        if field.mapping:
            out[field.name] = {
                key: liquid.render(item, context, field=f"{field.name}.{key}", links=links)
                for key, item in value.items()
            }
        else:
            out[field.name] = liquid.render(value, context, field=field.name, html=field.html, links=links)
    return out


def render_content(
    channel: str,
    content: dict[str, Any],
    context: dict[str, Any],
    links: DeliveryLinks,
    *,
    options: dict[str, Any],
    layout: str | None = None,
    link_tracking: bool = True,
    open_tracking: bool = True,
) -> dict[str, Any]:
    """The rendered fields of ``content``; RenderFailed names the field, variable and position."""
    rendered = _render_fields(channel, content, context, links)
    if channel != "email":
        return rendered
    message = context.setdefault("message", {})
    message["subject"] = rendered.get("subject", "")
    message["preheader"] = rendered.get("preheader", "")
    body = rendered.get("body")
    if body is not None and layout is not None:
        body = liquid.render(layout, {**context, "content": body}, field="layout", html=True, links=links)
    tracked = options.get("tracked", True)
    if body is not None:
        body = track_html(body, links, clicks=tracked and link_tracking, opens=tracked and open_tracking)
    rendered["html"] = body
    rendered["text"] = rendered.pop("body_plain", None)
    rendered["amp"] = rendered.pop("body_amp", None)
    rendered.pop("body", None)
    rendered["list_unsubscribe_url"] = links.unsubscribe_url()
    for key in ("attachments", "fake_bcc", "disable_css_preprocessing"):
        if key in options:
            rendered[key] = options[key]
    if options.get("headers"):
        rendered["headers"] = {**rendered.get("headers", {}), **options["headers"]}
    return rendered


def push_devices(session: Session, person: Person, options: dict[str, Any]) -> list[dict[str, str]]:
    """Customer.io's push ``to``: all (the default), last_used, or one of the person's tokens;
    ``custom_device`` names a device directly."""
    if options.get("custom_device"):
        device = options["custom_device"]
        return [{"token": device["token"], "platform": device["platform"]}]
    devices = list(
        session.scalars(select(Device).where(Device.person_id == person.id).order_by(Device.last_used.desc()))
    )
    to = options.get("to") or "all"
    if to == "last_used":
        devices = devices[:1]
    elif to != "all":
        devices = [d for d in devices if d.token == to]
    return [{"token": d.token, "platform": d.platform} for d in devices if d.platform in ("ios", "android")]


def prepare(
    session: Session,
    delivery: Delivery,
    template: MessageTemplate | None,
    person: Person,
    links: DeliveryLinks,
    *,
    default_from: str | None,
    snippets: dict[str, str] | None = None,
) -> Prepared:
    request = delivery.request or {}
    options = request.get("options") or {}
    content = content_of(template, request)
    # A sender identity is not Liquid: its address is looked up now, as the identity stands.
    from_id = content.pop(FROM_ID, None)
    context, layout = load_context(session, delivery, template, person, content=content, snippets=snippets)
    try:
        rendered = render_content(
            delivery.channel,
            content,
            context,
            links,
            options=options,
            layout=layout,
            link_tracking=template.link_tracking if template is not None else True,
            open_tracking=template.open_tracking if template is not None else True,
        )
    except RenderFailed as exc:
        raise PrepareFailed(str(exc)) from exc
    if delivery.channel == "email":
        if request.get("from_address"):
            # A transactional send's from_id, looked up when the send was accepted.
            rendered["from"] = request["from_address"]
        elif from_id is not None:
            rendered["from"] = senders.address_for(session, delivery.workspace_id, from_id)
            if rendered["from"] is None:
                raise PrepareFailed(f"sender identity {from_id} no longer exists")
        if not rendered.get("from"):
            rendered["from"] = default_from
        if not rendered.get("from"):
            raise PrepareFailed("no from address: set one on the message or the workspace's email settings")
        if not rendered.get("to") and not request.get("transactional"):
            # Campaign, broadcast and newsletter messages go to the person's email unless they say otherwise.
            rendered["to"] = person.email
        if not rendered.get("to"):
            raise PrepareFailed("no recipient: to is empty")
        return Prepared(rendered, rendered["to"], rendered.get("subject"))
    if delivery.channel == "sms":
        to = options.get("to") or customer_of(person).get("phone")
        if not isinstance(to, str) or not to:
            raise PrepareFailed("no recipient: give to, or set the person's phone attribute")
        rendered["to"] = to
        return Prepared(rendered, to, None)
    if delivery.channel == "push":
        rendered["devices"] = push_devices(session, person, options)
        if not rendered["devices"]:
            raise PrepareFailed("no recipient: the person has no matching ios or android device")
        for key in ("custom_data", "custom_payload"):
            if options.get(key):
                rendered[key] = {**rendered.get(key, {}), **options[key]}
        return Prepared(rendered, ",".join(d["token"] for d in rendered["devices"]), rendered.get("title"))
    if not rendered.get("url"):
        raise PrepareFailed("the webhook has no url")
    return Prepared(rendered, rendered["url"], None)

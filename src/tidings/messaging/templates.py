"""Transactional message templates, layouts and snippets: what a message is made of.

Every Liquid field is validated when it is saved, so a broken template is refused with its line and
column instead of failing each delivery later. A template has one channel, as in Customer.io; the
fields of each channel and which of them are HTML (autoescaped when rendered) are listed in ``FIELDS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from tidings.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from tidings.messaging import senders
from tidings.messaging.liquid import LiquidTemplates
from tidings.models import Layout, MessageTemplate, Snippet, SubscriptionTopic

CHANNELS = ("email", "sms", "push", "webhook")
Owned = TypeVar("Owned", Layout, SubscriptionTopic)


@dataclass(frozen=True)
class Field:
    name: str
    html: bool = False
    # A mapping of strings (headers, custom data): each value is Liquid.
    mapping: bool = False


FIELDS: dict[str, tuple[Field, ...]] = {
    "email": (
        Field("from"),
        Field("reply_to"),
        Field("to"),
        Field("cc"),
        Field("bcc"),
        Field("subject"),
        Field("preheader"),
        Field("body", html=True),
        Field("body_plain"),
        Field("body_amp", html=True),
        Field("headers", mapping=True),
    ),
    "sms": (Field("from"), Field("body")),
    "push": (
        Field("title"),
        Field("message"),
        Field("image_url"),
        Field("link"),
        Field("sound"),
        Field("custom_data", mapping=True),
    ),
    "webhook": (Field("method"), Field("url"), Field("body"), Field("headers", mapping=True)),
}
FLAGS = ("link_tracking", "open_tracking", "send_to_unsubscribed", "hide_message_body", "queue_drafts")
KEYS = frozenset(
    {"name", "description", "trigger_name", "type", "content", "languages", "layout_id", "topic_id", *FLAGS}
)
# What a GET answers besides KEYS: accepted and ignored, so a fetched message can be sent back changed.
READ_ONLY = frozenset({"id", "created_at", "updated_at"})
MAX_SNIPPET_BYTES = 16_000
MAX_SNIPPETS_TOTAL_BYTES = 5_000_000
MAX_NAME = 255
# The email content field naming a sender identity (the other choice to ``from``).
FROM_ID = "from_id"

liquid = LiquidTemplates()


def _text(body: dict[str, Any], key: str, *, required: bool = False, default: str = "") -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"{key} is required", field=key)
        return default
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string", field=key)
    if required and not value.strip():
        raise InvalidInput(f"{key} must not be empty", field=key)
    return value


def validate_content(channel: str, content: Any, *, path: str = "content") -> dict[str, Any]:
    """The channel's fields from ``content``, each checked as Liquid; unknown fields are refused. Email
    also takes ``from_id`` (a sender identity, instead of ``from``; whether it exists is checked with the
    workspace, by :func:`check_senders`)."""
    if not isinstance(content, dict):
        raise InvalidInput(f"{path} must be an object", field=path)
    fields = {field.name: field for field in FIELDS[channel]}
    known = [*fields, FROM_ID] if channel == "email" else list(fields)
    unknown = sorted(set(content) - set(known))
    if unknown:
        raise InvalidInput(
            f"{path}: unknown field {unknown[0]!r} for {channel}; expected {', '.join(known)}",
            field=f"{path}.{unknown[0]}",
        )
    if content.get("from") is not None and content.get(FROM_ID) is not None:
        raise InvalidInput(f"{path}: give from or from_id, not both", field=f"{path}.{FROM_ID}")
    clean: dict[str, Any] = {}
    for name, value in content.items():
        if value is None:
            continue
        where = f"{path}.{name}"
        if name == FROM_ID:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
                raise InvalidInput(f"{where} must be the id of a sender identity", field=where)
            clean[name] = value
            continue
        field = fields[name]
        if field.mapping:
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise InvalidInput(f"{where} must be an object of strings", field=where)
            for key, item in value.items():
                liquid.validate(item, field=f"{where}.{key}")
        else:
            if not isinstance(value, str):
                raise InvalidInput(f"{where} must be a string", field=where)
            liquid.validate(value, field=where)
        clean[name] = value
    return clean


def overlay(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``layer``'s fields over ``base``'s. ``from`` and ``from_id`` are one setting: a layer giving
    either replaces the other below it (a translation's ``from`` wins over the default's ``from_id``)."""
    merged = dict(base)
    if layer.get("from") is not None:
        merged.pop(FROM_ID, None)
    if layer.get(FROM_ID) is not None:
        merged.pop("from", None)
    merged.update(layer)
    return merged


def check_senders(session: Session, template: MessageTemplate) -> None:
    """Every ``from_id`` of the template's content and translations names one of its workspace's sender
    identities (400 naming the path otherwise)."""
    senders.check_contents(
        session,
        template.workspace_id,
        [("content", template.content)]
        + [(f"languages.{code}", content) for code, content in (template.languages or {}).items()],
    )


# -- templates ---------------------------------------------------------------------------------------


def template_view(template: MessageTemplate) -> dict[str, Any]:
    """Customer.io's transactional message fields, then Tidings' (channel, content, layout, topic)."""
    return {
        "id": template.id,
        "name": template.name,
        "description": template.description,
        "trigger_name": template.trigger_name,
        "send_to_unsubscribed": template.send_to_unsubscribed,
        "link_tracking": template.link_tracking,
        "open_tracking": template.open_tracking,
        "hide_message_body": template.hide_message_body,
        "queue_drafts": template.queue_drafts,
        "created_at": template.created_at,
        "updated_at": template.updated_at,
        "type": template.channel,
        "content": template.content,
        "languages": sorted(template.languages),
        "layout_id": template.layout_id,
        "topic_id": template.topic_id,
    }


def list_templates(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(MessageTemplate)
        .where(MessageTemplate.workspace_id == workspace_id, MessageTemplate.kind == "transactional")
        .order_by(MessageTemplate.id)
    )
    return [template_view(row) for row in rows]


def find_template(session: Session, workspace_id: int, ref: int | str) -> MessageTemplate | None:
    """A transactional message by numeric id (an int, or a string of digits) or by trigger name.
    (Campaign actions' contents are templates too, reached through their campaign.)"""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        template = session.get(MessageTemplate, int(ref))
        if (
            template is not None
            and template.workspace_id == workspace_id
            and template.kind == "transactional"
        ):
            return template
        if isinstance(ref, int):
            return None
    name = str(ref)
    key = (session.get_bind(), workspace_id, name)
    known = _BY_TRIGGER.get(key)
    if known is not None:
        # By key, a session finds an object it holds without a statement: the sends of one group
        # commit share a session. The entry is only a hint: renamed or deleted since, it is not used.
        template = session.get(MessageTemplate, known)
        if template is not None and template.workspace_id == workspace_id and template.trigger_name == name:
            return template
    template = session.scalars(_FIND_BY_TRIGGER, {"w": workspace_id, "name": name}).first()
    if template is not None:
        if len(_BY_TRIGGER) > _BY_TRIGGER_SIZE:
            _BY_TRIGGER.clear()
        _BY_TRIGGER[key] = template.id
    return template


# (database, workspace, trigger name) → the key of the template last found by that name, in this process.
_BY_TRIGGER: dict[tuple[object, int, str], int] = {}
_BY_TRIGGER_SIZE = 10_000
_FIND_BY_TRIGGER = select(MessageTemplate).where(
    MessageTemplate.workspace_id == bindparam("w"), MessageTemplate.trigger_name == bindparam("name")
)


def get_template(session: Session, workspace_id: int, ref: int | str) -> MessageTemplate:
    template = find_template(session, workspace_id, ref)
    if template is None:
        raise NotFound(f"transactional message {ref!r} not found")
    return template


def apply_fields(
    session: Session, template: MessageTemplate, body: dict[str, Any], *, creating: bool
) -> None:
    unknown = sorted(set(body) - KEYS - READ_ONLY)
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r}; expected {', '.join(sorted(KEYS))}", field=unknown[0]
        )
    if creating or "name" in body:
        template.name = _text(body, "name", required=True)
    if "description" in body:
        template.description = _text(body, "description")
    if "trigger_name" in body:
        trigger = body["trigger_name"]
        if trigger is not None and (not isinstance(trigger, str) or not trigger.strip() or trigger.isdigit()):
            raise InvalidInput("trigger_name must be a non-numeric string", field="trigger_name")
        clash = trigger is not None and find_template(session, template.workspace_id, trigger)
        if clash and clash is not template:
            raise Conflict(f"trigger_name {trigger!r} is already used by message {clash.id}")
        template.trigger_name = trigger
    if creating:
        channel = body.get("type", "email")
        if channel not in CHANNELS:
            raise InvalidInput(f"type must be one of {', '.join(CHANNELS)}", field="type")
        template.channel = channel
    elif "type" in body and body["type"] != template.channel:
        raise InvalidInput("a message's type cannot change; create another message", field="type")
    if "content" in body or creating:
        template.content = validate_content(template.channel, body.get("content") or {})
    if "languages" in body:
        languages = body["languages"]
        if not isinstance(languages, dict):
            raise InvalidInput("languages must be an object of language → content", field="languages")
        template.languages = {
            str(code): validate_content(template.channel, content, path=f"languages.{code}")
            for code, content in languages.items()
        }
    if "content" in body or "languages" in body or creating:
        check_senders(session, template)
    for flag in FLAGS:
        if flag in body:
            if not isinstance(body[flag], bool):
                raise InvalidInput(f"{flag} must be true or false", field=flag)
            setattr(template, flag, body[flag])
    if "layout_id" in body:
        template.layout_id = _owned_id(session, Layout, template.workspace_id, body["layout_id"], "layout_id")
    if "topic_id" in body:
        template.topic_id = _owned_id(
            session, SubscriptionTopic, template.workspace_id, body["topic_id"], "topic_id"
        )


def _owned_id(session: Session, model: type[Owned], workspace_id: int, value: Any, field: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{field} must be an integer", field=field)
    row = session.get(model, value)
    if row is None or row.workspace_id != workspace_id:
        raise InvalidInput(f"{field} {value} does not exist", field=field)
    return value


def create_template(session: Session, workspace_id: int, body: dict[str, Any], *, now: int) -> dict[str, Any]:
    template = MessageTemplate(workspace_id=workspace_id, created_at=now, updated_at=now, languages={})
    apply_fields(session, template, body, creating=True)
    session.add(template)
    session.flush()
    return template_view(template)


def update_template(
    session: Session, workspace_id: int, ref: int | str, body: dict[str, Any], *, now: int
) -> dict[str, Any]:
    template = get_template(session, workspace_id, ref)
    apply_fields(session, template, body, creating=False)
    template.updated_at = now
    session.flush()
    return template_view(template)


def auto_create(
    session: Session, workspace_id: int, trigger_name: str, channel: str, *, now: int
) -> MessageTemplate:
    """A send naming an unknown trigger with ``auto_create``: an empty record the request's own content
    fills (Customer.io creates one on first use, so metrics roll up under it)."""
    template = MessageTemplate(
        workspace_id=workspace_id,
        name=trigger_name,
        trigger_name=trigger_name,
        channel=channel,
        content={},
        languages={},
        auto_created=True,
        created_at=now,
        updated_at=now,
    )
    session.add(template)
    session.flush()
    return template


def language_content(template: MessageTemplate, language: str) -> dict[str, Any]:
    if language not in template.languages:
        raise NotFound(f"message {template.id} has no {language!r} translation")
    return {"language": language, "content": template.languages[language]}


def set_language(
    session: Session, workspace_id: int, ref: int | str, language: str, content: Any, *, now: int
) -> dict[str, Any]:
    template = get_template(session, workspace_id, ref)
    translation = validate_content(template.channel, content, path="content")
    senders.check_contents(session, workspace_id, [("content", translation)])
    template.languages = {**template.languages, language: translation}
    template.updated_at = now
    session.flush()
    return language_content(template, language)


def contents(template: MessageTemplate) -> list[dict[str, Any]]:
    """The default content and each translation."""
    variants = [{"language": "", "content": template.content}]
    variants.extend(
        {"language": code, "content": template.languages[code]} for code in sorted(template.languages)
    )
    return variants


# -- layouts -----------------------------------------------------------------------------------------


def layout_view(layout: Layout) -> dict[str, Any]:
    return {
        "id": layout.id,
        "name": layout.name,
        "body": layout.body,
        "created_at": layout.created_at,
        "updated_at": layout.updated_at,
    }


def _layout_body(body: dict[str, Any]) -> str:
    source = _text(body, "body", required=True)
    liquid.validate(source, field="body")
    if "content" not in source:
        raise InvalidInput("a layout's body must place the message with {{ content }}", field="body")
    return source


def save_layout(
    session: Session, workspace_id: int, body: dict[str, Any], *, now: int, layout_id: int | None = None
) -> dict[str, Any]:
    """Create a layout, or change one (fields absent from ``body`` stay as they are)."""
    layout = get_layout(session, workspace_id, layout_id) if layout_id is not None else None
    name = _text(body, "name", required=True) if layout is None or "name" in body else layout.name
    source = _layout_body(body) if layout is None or "body" in body else layout.body
    same_name = select(Layout.id).where(Layout.workspace_id == workspace_id, Layout.name == name)
    if layout_id is not None:
        same_name = same_name.where(Layout.id != layout_id)
    clash = session.scalars(same_name).first()
    if clash is not None:
        raise Conflict(f"a layout named {name!r} exists (id {clash})")
    if layout is None:
        layout = Layout(workspace_id=workspace_id, created_at=now)
        session.add(layout)
    layout.name, layout.body, layout.updated_at = name, source, now
    session.flush()
    return layout_view(layout)


def get_layout(session: Session, workspace_id: int, layout_id: int) -> Layout:
    layout = session.get(Layout, layout_id)
    if layout is None or layout.workspace_id != workspace_id:
        raise NotFound(f"layout {layout_id} not found")
    return layout


def list_layouts(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(Layout).where(Layout.workspace_id == workspace_id).order_by(Layout.id))
    return [layout_view(row) for row in rows]


def delete_layout(session: Session, workspace_id: int, layout_id: int) -> None:
    session.delete(get_layout(session, workspace_id, layout_id))
    session.flush()


# -- snippets ----------------------------------------------------------------------------------------


def snippet_view(snippet: Snippet) -> dict[str, Any]:
    return {"name": snippet.name, "value": snippet.value, "updated_at": snippet.updated_at}


def list_snippets(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(Snippet).where(Snippet.workspace_id == workspace_id).order_by(Snippet.name))
    return [snippet_view(row) for row in rows]


def snippets_of(session: Session, workspace_id: int) -> dict[str, str]:
    rows = session.execute(select(Snippet.name, Snippet.value).where(Snippet.workspace_id == workspace_id))
    return dict(rows.all())


def put_snippet(session: Session, workspace_id: int, body: dict[str, Any], *, now: int) -> dict[str, Any]:
    """Create or replace a snippet (Customer.io's ``PUT /v1/snippets`` upsert)."""
    name = _text(body, "name", required=True)
    if len(name) > MAX_NAME or not all(c.isalnum() or c in "_-" for c in name):
        raise InvalidInput("name may hold letters, digits, _ and - (at most 255)", field="name")
    value = _text(body, "value")
    size = len(value.encode())
    if size > MAX_SNIPPET_BYTES:
        raise PayloadTooLarge(f"a snippet may hold at most {MAX_SNIPPET_BYTES} bytes", field="value")
    liquid.validate(value, field="value")
    others = session.scalar(
        select(func.coalesce(func.sum(func.length(Snippet.value)), 0)).where(
            Snippet.workspace_id == workspace_id, Snippet.name != name
        )
    )
    if int(others or 0) + size > MAX_SNIPPETS_TOTAL_BYTES:
        raise PayloadTooLarge(f"a workspace's snippets may hold at most {MAX_SNIPPETS_TOTAL_BYTES} bytes")
    snippet = session.get(Snippet, (workspace_id, name))
    if snippet is None:
        snippet = Snippet(workspace_id=workspace_id, name=name, value=value, updated_at=now)
        session.add(snippet)
    else:
        snippet.value, snippet.updated_at = value, now
    session.flush()
    return snippet_view(snippet)


def delete_snippet(session: Session, workspace_id: int, name: str) -> None:
    snippet = session.get(Snippet, (workspace_id, name))
    if snippet is None:
        raise NotFound(f"snippet {name!r} not found")
    session.delete(snippet)
    session.flush()

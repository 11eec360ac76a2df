"""Sender identities (Customer.io's ``/v1/sender_identities``): the addresses email goes out from.

Content names a sender with ``from_id`` (an email content field, the other choice to ``from``). The rule
that keeps a ``from_id`` from dangling:

- saving content checks every ``from_id`` in it names one of the workspace's identities (400 otherwise),
  holding a share lock on the identity until the save commits;
- a message is rendered with the identity's address as it is then (so changing an identity changes every
  message not yet sent);
- deleting an identity takes the row lock first, then refuses (409, naming them) while any content uses
  it. On PostgreSQL the two locks order a save and a delete racing each other; SQLite runs one writer.

A transactional send (``POST /v1/send/email``) has no content to keep: its ``from_id`` is turned into
the address when the request is accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.messaging.channels.email import parse_recipients
from tidings.models import (
    Campaign,
    CampaignAction,
    Delivery,
    MessageTemplate,
    Newsletter,
    NewsletterTestGroup,
    SenderIdentity,
)

Json = dict[str, Any]

MAX_PAGE = 100
MAX_NAME = 255
TEMPLATE_TYPES = ("email",)
FIELDS = ("name", "email", "template_type", "hidden")
# What a GET answers besides FIELDS: accepted and ignored, so a fetched identity can be sent back.
READ_ONLY = frozenset({"id", "deduplicate_id", "address", "auto_generated", "created", "updated"})
_SPECIALS = set('()<>[]:;@\\,."')


# -- views ---------------------------------------------------------------------------------------------


def address_of(identity: SenderIdentity) -> str:
    """``Name <email>`` (the name quoted when it holds characters an address header gives meaning to),
    or the bare email when there is no name."""
    if not identity.name:
        return identity.email
    name = identity.name
    if any(char in _SPECIALS for char in name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{identity.email}>"


def view(identity: SenderIdentity) -> Json:
    """Customer.io's sender fields, then Tidings' (hidden, created, updated)."""
    return {
        "id": identity.id,
        "deduplicate_id": f"{identity.id}:{identity.updated_at}",
        "name": identity.name,
        "email": identity.email,
        "address": address_of(identity),
        "template_type": identity.template_type,
        "auto_generated": False,
        "hidden": identity.hidden,
        "created": identity.created_at,
        "updated": identity.updated_at,
    }


def get(session: Session, workspace_id: int, sender_id: int, *, lock: bool = False) -> SenderIdentity:
    query = select(SenderIdentity).where(
        SenderIdentity.id == sender_id, SenderIdentity.workspace_id == workspace_id
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    identity = session.scalars(query).first()
    if identity is None:
        raise NotFound(f"sender identity {sender_id} not found")
    return identity


def list_senders(
    session: Session, workspace_id: int, *, limit: int, sort: str, start: str | None, hidden: bool
) -> Json:
    """A page of identities in id order (``asc``: oldest first); hidden ones only with ``hidden``."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    if sort not in ("asc", "desc"):
        raise InvalidInput("sort must be asc or desc", field="sort")
    query = select(SenderIdentity).where(SenderIdentity.workspace_id == workspace_id)
    if not hidden:
        query = query.where(SenderIdentity.hidden.is_(False))
    if start:
        if not start.isdigit() or len(start) > 18:
            raise InvalidInput("start is not a cursor this endpoint returned", field="start")
        after = int(start)
        query = query.where(SenderIdentity.id > after if sort == "asc" else SenderIdentity.id < after)
    order = SenderIdentity.id.asc() if sort == "asc" else SenderIdentity.id.desc()
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    page = rows[:limit]
    return {
        "sender_identities": [view(row) for row in page],
        "next": str(page[-1].id) if len(rows) > limit else "",
    }


# -- create, change, delete ----------------------------------------------------------------------------


def _fields(body: Json) -> Json:
    """The identity fields of a body, bare or wrapped as ``{"sender_identity": {...}}``."""
    if set(body) == {"sender_identity"}:
        body = body["sender_identity"]
        if not isinstance(body, dict):
            raise InvalidInput("sender_identity must be an object", field="sender_identity")
    unknown = sorted(set(body) - set(FIELDS) - READ_ONLY)
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a field of a sender identity; expected {', '.join(FIELDS)}",
            field=unknown[0],
        )
    return body


def _apply(identity: SenderIdentity, body: Json, *, creating: bool) -> None:
    if creating or "email" in body:
        email = body.get("email")
        if not isinstance(email, str) or not email.strip():
            raise InvalidInput("email is required: the address to send from", field="email")
        email = email.strip()
        try:
            parsed = parse_recipients(email)
        except InvalidInput:
            parsed = []
        if len(parsed) != 1 or "<" in email or " " in email:
            raise InvalidInput(
                f"email must be one bare address such as news@example.com, not {email!r}", field="email"
            )
        identity.email = parsed[0]
    if "name" in body:
        name = body["name"] if body["name"] is not None else ""
        if not isinstance(name, str) or len(name) > MAX_NAME or any(ord(char) < 32 for char in name):
            raise InvalidInput(f"name must be a single line of at most {MAX_NAME} characters", field="name")
        identity.name = name.strip()
    if "template_type" in body and body["template_type"] is not None:
        if body["template_type"] not in TEMPLATE_TYPES:
            raise InvalidInput(
                "template_type must be email: Tidings sends SMS from the message's from or the "
                "workspace's messaging.sms.from_number",
                field="template_type",
            )
        identity.template_type = body["template_type"]
    if "hidden" in body and body["hidden"] is not None:
        if not isinstance(body["hidden"], bool):
            raise InvalidInput("hidden must be true or false", field="hidden")
        identity.hidden = body["hidden"]
    # The address as written must read back as exactly this email (the name cannot smuggle another).
    if parse_recipients(address_of(identity)) != [identity.email]:
        raise InvalidInput("name and email do not make a valid address", field="name")


def create(session: Session, workspace_id: int, body: Json, *, now: int) -> Json:
    fields = _fields(body)
    identity = SenderIdentity(
        workspace_id=workspace_id,
        name="",
        template_type="email",
        hidden=False,
        created_at=now,
        updated_at=now,
    )
    _apply(identity, fields, creating=True)
    session.add(identity)
    session.flush()
    return view(identity)


def update(session: Session, workspace_id: int, sender_id: int, body: Json, *, now: int) -> Json:
    """Change an identity; keys left out keep their values. Messages not yet rendered use the new
    address."""
    identity = get(session, workspace_id, sender_id)
    _apply(identity, _fields(body), creating=False)
    identity.updated_at = now
    session.flush()
    return view(identity)


def names(content: Any, sender_id: int) -> bool:
    return isinstance(content, dict) and content.get("from_id") == sender_id


def used_by(session: Session, workspace_id: int, sender_id: int) -> dict[str, list[int]]:
    """What uses an identity, as Customer.io answers (``campaigns``, ``sent_newsletters``,
    ``draft_newsletters``; a newsletter not yet sent counts as a draft), plus Tidings' ``broadcasts``
    and ``transactional_messages``. Any content or translation naming it counts, archived campaigns'
    too: their content could still be sent again."""
    get(session, workspace_id, sender_id)
    rows = session.execute(
        select(MessageTemplate.id, MessageTemplate.kind, MessageTemplate.content, MessageTemplate.languages)
        .where(MessageTemplate.workspace_id == workspace_id, MessageTemplate.channel == "email")
        .order_by(MessageTemplate.id)
    ).all()
    using = [
        (row.id, row.kind)
        for row in rows
        if names(row.content, sender_id) or any(names(c, sender_id) for c in (row.languages or {}).values())
    ]
    template_ids = [template_id for template_id, _ in using]
    found: dict[str, set[int]] = {
        "campaigns": set(),
        "broadcasts": set(),
        "sent_newsletters": set(),
        "draft_newsletters": set(),
        "transactional_messages": {template_id for template_id, kind in using if kind == "transactional"},
    }
    if template_ids:
        campaigns = session.execute(
            select(Campaign.id, Campaign.kind)
            .join(CampaignAction, CampaignAction.campaign_id == Campaign.id)
            .where(Campaign.workspace_id == workspace_id, CampaignAction.template_id.in_(template_ids))
        ).all()
        for campaign_id, kind in campaigns:
            found["broadcasts" if kind == "broadcast" else "campaigns"].add(campaign_id)
        grouped = select(NewsletterTestGroup.newsletter_id).where(
            NewsletterTestGroup.template_id.in_(template_ids)
        )
        newsletters = session.execute(
            select(Newsletter.id, Newsletter.state, Newsletter.template_id).where(
                Newsletter.workspace_id == workspace_id,
                Newsletter.template_id.in_(template_ids) | Newsletter.id.in_(grouped),
            )
        ).all()
        for newsletter_id, state, _ in newsletters:
            found["sent_newsletters" if state == "sent" else "draft_newsletters"].add(newsletter_id)
        # A deleted newsletter's content stays while its messages may still be rendered: those count
        # as the (sent) newsletter's until they have gone.
        attached = {row.template_id for row in newsletters} | set(
            session.scalars(
                select(NewsletterTestGroup.template_id).where(
                    NewsletterTestGroup.template_id.in_(template_ids)
                )
            )
        )
        orphans = [
            template_id for template_id, kind in using if kind == "newsletter" and template_id not in attached
        ]
        if orphans:
            found["sent_newsletters"].update(
                newsletter_id
                for newsletter_id in session.scalars(
                    select(Delivery.newsletter_id)
                    .where(
                        Delivery.workspace_id == workspace_id,
                        Delivery.template_id.in_(orphans),
                        Delivery.state.in_(("drafted", "queued", "sending")),
                    )
                    .distinct()
                )
                if newsletter_id is not None
            )
    return {key: sorted(ids) for key, ids in found.items()}


def delete(session: Session, workspace_id: int, sender_id: int) -> None:
    """Delete an identity nothing uses; otherwise refuse, naming the users."""
    # The row lock first: a save naming the identity holds a share lock until it commits, so by the
    # time this has the lock, every such save is visible to used_by below.
    identity = get(session, workspace_id, sender_id, lock=True)
    users = used_by(session, workspace_id, sender_id)
    if any(users.values()):
        listed = ", ".join(
            f"{kind.rstrip('s').replace('_', ' ')} {item}" for kind, items in users.items() for item in items
        )
        raise Conflict(f"sender identity {sender_id} is used by {listed}; change those first")
    session.delete(identity)
    session.flush()


# -- content naming an identity ------------------------------------------------------------------------


def resolve(session: Session, workspace_id: int, from_id: Any, *, field: str = "from_id") -> SenderIdentity:
    """The identity ``from_id`` names, share-locked until the transaction ends (see the module's rule);
    400 naming ``field`` when it is not one of the workspace's."""
    if isinstance(from_id, bool) or not isinstance(from_id, int) or not 1 <= from_id < 2**63:
        raise InvalidInput(f"{field} must be the id of a sender identity", field=field)
    query = select(SenderIdentity).where(
        SenderIdentity.id == from_id, SenderIdentity.workspace_id == workspace_id
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    identity = session.scalars(query).first()
    if identity is None:
        raise InvalidInput(
            f"{field} {from_id} is not a sender identity of this workspace (see GET /v1/sender_identities)",
            field=field,
        )
    return identity


def check_contents(session: Session, workspace_id: int, contents: Iterable[tuple[str, Any]]) -> None:
    """Every ``from_id`` in ``contents`` (``(path, content)`` pairs) names one of the workspace's
    identities."""
    for path, content in contents:
        if isinstance(content, dict) and content.get("from_id") is not None:
            where = f"{path}.from_id" if path else "from_id"
            resolve(session, workspace_id, content["from_id"], field=where)


def address_for(session: Session, workspace_id: int, from_id: int) -> str | None:
    """The address of the identity ``from_id`` names, when it exists (rendering)."""
    identity = session.get(SenderIdentity, from_id)
    if identity is None or identity.workspace_id != workspace_id:
        return None
    return address_of(identity)

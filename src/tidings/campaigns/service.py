"""Campaigns and API-triggered broadcasts: definitions, versions, actions, states, and the views the App
API returns.

The rule for editing a live campaign: every save of the workflow is a new version; journeys finish on the
version they entered with, new journeys take the newest. Message content belongs to the action (matched
across versions by block id), so a content edit reaches every message not yet rendered, whichever version
its journey runs. Goal and exit rules are read from the newest version by every journey. Pausing holds
journeys where they are (their timers wait) and lets nobody in; resuming lets them go on (overdue steps
run at once); archiving ends every running journey.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, cast, delete, func, select, update
from sqlalchemy.orm import Session

from tidings.ai import data_index
from tidings.campaigns import timers, triggers
from tidings.campaigns.definition import Definition, parse
from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.journeys.blocks import MESSAGE_ACTION_TYPES, variant_block
from tidings.journeys.engine import definition_of
from tidings.journeys.workflow import BLOCK_TYPES, Block, DefinitionError
from tidings.messaging import senders
from tidings.messaging.templates import (
    CHANNELS,
    FROM_ID,
    apply_fields,
    find_template,
    overlay,
    validate_content,
)
from tidings.models import (
    Campaign,
    CampaignAction,
    CampaignEntry,
    CampaignTimer,
    CampaignVersion,
    Journey,
    JourneyStep,
    MessageTemplate,
    Segment,
)
from tidings.worker import wake

TRANSITIONS = {
    "activate": ({"draft"}, "active"),
    "pause": ({"active"}, "paused"),
    "resume": ({"paused"}, "active"),
    "archive": ({"draft", "active", "paused"}, "archived"),
}
# Customer.io's words for the states in its campaign objects.
CIO_STATE = {"draft": "draft", "active": "running", "paused": "paused", "archived": "archived"}
MESSAGE_TEMPLATE_KEYS = ("languages", "layout_id", "topic_id", "link_tracking", "open_tracking")


def get_campaign(
    session: Session, workspace_id: int, campaign_id: int, *, kind: str | None = None
) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if (
        campaign is None
        or campaign.workspace_id != workspace_id
        or (kind is not None and campaign.kind != kind)
    ):
        raise NotFound(f"{kind or 'campaign'} {campaign_id} not found")
    return campaign


def current_definition(session: Session, campaign: Campaign) -> Definition:

    return definition_of(session, campaign.id, campaign.version)


def _check_references(session: Session, workspace_id: int, definition: Definition) -> None:
    segment_id = definition.trigger.get("segment_id")
    if segment_id is not None:
        segment = session.get(Segment, segment_id)
        if segment is None or segment.workspace_id != workspace_id:
            raise DefinitionError(
                f"trigger.segment_id: segment {segment_id} does not exist", field="trigger.segment_id"
            )


def _message_blocks(block: Block) -> list[tuple[str, dict[str, Any]]]:
    """(action key, message spec) for a block that sends: itself, or each variant of an A/B test."""
    if block.type in CHANNELS:
        return [(block.id, block.spec)]
    if block.type == "ab_test":
        return [(variant_block(block.id, i), v) for i, v in enumerate(block.spec["variants"])]
    return []


def _sync_actions(session: Session, campaign: Campaign, definition: Definition, now: int) -> None:
    """Give every block (and A/B variant) its action, and message actions their content."""
    existing = {
        a.block: a
        for a in session.scalars(select(CampaignAction).where(CampaignAction.campaign_id == campaign.id))
    }
    seen: set[str] = set()
    for block in definition.workflow.blocks.values():
        messages = _message_blocks(block)
        entries: list[tuple[str, dict[str, Any] | None]] = (
            list(messages) if block.type in CHANNELS else [(block.id, None), *messages]
        )
        for key, spec in entries:
            seen.add(key)
            action = existing.get(key)
            channel = spec["channel"] if spec else None
            kind = MESSAGE_ACTION_TYPES[channel] if channel else BLOCK_TYPES[block.type].action_type
            if action is None:
                action = CampaignAction(
                    workspace_id=campaign.workspace_id,
                    campaign_id=campaign.id,
                    block=key,
                    type=kind,
                    state={},
                    created_at=now,
                    updated_at=now,
                )
                session.add(action)
            action.type, action.name, action.removed_at, action.updated_at = kind, block.name, None, now
            if spec is not None:
                action.template_id = _message_template(session, campaign, action, block, spec, now)
    for key, action in existing.items():
        if key not in seen and action.removed_at is None:
            action.removed_at = now
    data_index.describe_llm_outputs(
        session, campaign.workspace_id, campaign.id, definition.workflow.blocks.values(), now=now
    )
    session.flush()


def _message_template(
    session: Session, campaign: Campaign, action: CampaignAction, block: Block, spec: dict[str, Any], now: int
) -> int:
    if "template" in spec:
        template = find_template(session, campaign.workspace_id, spec["template"])
        if template is None:
            raise DefinitionError(
                f"block {block.id!r} ({block.path}.template): "
                f"transactional message {spec['template']!r} not found",
                field=f"{block.path}.template",
            )
        if template.channel != spec["channel"]:
            raise DefinitionError(
                f"block {block.id!r} ({block.path}.template): "
                f"message {template.id} is {template.channel}, not {spec['channel']}",
                field=f"{block.path}.template",
            )
        return template.id
    owned = session.get(MessageTemplate, action.template_id) if action.template_id else None
    if owned is None or owned.kind != "campaign":
        owned = MessageTemplate(
            workspace_id=campaign.workspace_id,
            kind="campaign",
            channel=spec["channel"],
            languages={},
            created_at=now,
            updated_at=now,
        )
    elif owned.channel != spec["channel"]:
        owned.channel = spec["channel"]
    body: dict[str, Any] = {"name": f"{campaign.name}: {block.name or block.id}", "content": spec["content"]}
    body.update({key: spec[key] for key in MESSAGE_TEMPLATE_KEYS if key in spec})
    try:
        apply_fields(session, owned, body, creating=False)
    except InvalidInput as exc:
        raise DefinitionError(
            f"block {block.id!r} ({block.path}): {exc.message}", field=f"{block.path}.{exc.field or ''}"
        ) from None
    owned.updated_at = now
    session.add(owned)
    session.flush()
    return owned.id


def _save_version(session: Session, campaign: Campaign, definition: Definition, now: int) -> None:
    session.add(
        CampaignVersion(
            campaign_id=campaign.id,
            version=campaign.version,
            workspace_id=campaign.workspace_id,
            definition=definition.document,
            created_at=now,
        )
    )
    _sync_actions(session, campaign, definition, now)
    triggers.bump(session, campaign.workspace_id)


def create_campaign(session: Session, workspace_id: int, document: Any, *, now: int) -> dict[str, Any]:
    definition = parse(document)
    _check_references(session, workspace_id, definition)
    campaign = Campaign(
        workspace_id=workspace_id,
        kind=definition.kind,
        name=definition.name,
        description=str(definition.document.get("description", "")),
        tags=list(definition.document.get("tags", [])),
        trigger_type=definition.trigger_type,
        state="draft",
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    _save_version(session, campaign, definition, now)
    return campaign_view(session, campaign)


def update_campaign(
    session: Session, workspace_id: int, campaign_id: int, document: Any, *, now: int
) -> dict[str, Any]:
    campaign = get_campaign(session, workspace_id, campaign_id)
    if campaign.state == "archived":
        raise Conflict(f"campaign {campaign_id} is archived")
    definition = parse(document)
    if definition.kind != campaign.kind:
        raise DefinitionError(
            "trigger.type: a campaign cannot become a broadcast or the other way round", field="trigger.type"
        )
    _check_references(session, workspace_id, definition)
    if definition.document == current_definition(session, campaign).document:
        return campaign_view(session, campaign)
    campaign.version += 1
    campaign.name, campaign.trigger_type, campaign.updated_at = definition.name, definition.trigger_type, now
    campaign.description = str(definition.document.get("description", ""))
    campaign.tags = list(definition.document.get("tags", []))
    session.flush()
    _save_version(session, campaign, definition, now)
    _clock_starts(session, campaign, now)
    return campaign_view(session, campaign)


def _clock_starts(session: Session, campaign: Campaign, now: int) -> None:
    """Date and scheduled triggers: (re)compute timers and the next run when a campaign starts or changes."""
    trigger = current_definition(session, campaign).trigger
    if campaign.state == "archived":
        campaign.next_run_at = None
        session.execute(delete(CampaignTimer).where(CampaignTimer.campaign_id == campaign.id))
        return
    if campaign.state not in ("active", "paused"):
        return
    if trigger["type"] == "scheduled" and (campaign.next_run_at is None or campaign.state == "active"):
        timers.schedule(session, campaign, trigger, now)
    if trigger["type"] == "date":
        timers.queue_scan(session, campaign, now)


def change_state(
    session: Session, workspace_id: int, campaign_id: int, action: str, *, now: int
) -> dict[str, Any]:
    campaign = get_campaign(session, workspace_id, campaign_id)
    allowed, target = TRANSITIONS[action]
    if campaign.state not in allowed:
        raise Conflict(f"cannot {action} a campaign that is {campaign.state}")
    campaign.state, campaign.updated_at = target, now
    _clock_starts(session, campaign, now)
    held = Journey.campaign_id == campaign.id
    if action == "pause":
        # Held journeys leave the due index, so claims never wade through them (the timer stays in
        # resume_at, a call's lease in leased_until).
        session.execute(
            update(Journey)
            .where(held, Journey.state.in_(("pending", "active", "waiting", "calling")))
            .values(due_at=None)
        )
    elif action == "resume":
        # Everything held is looked at again now: a timer that passed while paused runs at once, the rest
        # wait again for their time (or their event or condition). A call still in flight keeps its lease.
        session.execute(
            update(Journey)
            .where(held, Journey.state.in_(("pending", "active", "waiting")))
            .values(due_at=now)
        )
        session.execute(
            update(Journey)
            .where(held, Journey.state == "calling")
            .values(due_at=cast(Journey.leased_until + 1, BigInteger))
        )
        wake.soon(session)
    if target == "archived":
        session.execute(
            update(Journey)
            .where(
                Journey.campaign_id == campaign.id,
                Journey.state.in_(("pending", "active", "waiting", "calling")),
            )
            .values(
                state="exited", exit_reason="campaign archived", finished_at=now, due_at=None, wake_on=None
            )
        )
        session.execute(
            update(CampaignEntry).where(CampaignEntry.campaign_id == campaign.id).values(running=0)
        )
    triggers.bump(session, workspace_id)
    return campaign_view(session, campaign)


def apply(session: Session, workspace_id: int, document: Any, *, activate: bool, now: int) -> dict[str, Any]:
    """Create the campaign, or save a new version of the one with the same name (the CLI's apply)."""
    name = document.get("name") if isinstance(document, dict) else None
    existing = session.scalars(
        select(Campaign).where(
            Campaign.workspace_id == workspace_id, Campaign.name == name, Campaign.state != "archived"
        )
    ).first()
    if existing is None:
        view = create_campaign(session, workspace_id, document, now=now)
        action = "created"
    else:
        before = existing.version
        view = update_campaign(session, workspace_id, existing.id, document, now=now)
        action = "updated" if view["version"] != before else "unchanged"
    if activate and view["status"] == "draft":
        view = change_state(session, workspace_id, view["id"], "activate", now=now)
    return {
        "action": action,
        "id": view["id"],
        "name": view["name"],
        "version": view["version"],
        "state": view["status"],
    }


# -- views ----------------------------------------------------------------------------------------------


def _actions(session: Session, campaign_id: int) -> list[CampaignAction]:
    return list(
        session.scalars(
            select(CampaignAction)
            .where(CampaignAction.campaign_id == campaign_id, CampaignAction.removed_at.is_(None))
            .order_by(CampaignAction.id)
        )
    )


def campaign_view(session: Session, campaign: Campaign) -> dict[str, Any]:
    definition = current_definition(session, campaign)
    trigger = definition.trigger
    view: dict[str, Any] = {
        "id": campaign.id,
        "deduplicate_id": f"{campaign.id}:{campaign.updated_at}",
        "name": campaign.name,
        "type": "triggered_broadcast" if campaign.kind == "broadcast" else trigger["type"],
        "created": campaign.created_at,
        "updated": campaign.updated_at,
        "active": campaign.state == "active",
        "state": CIO_STATE[campaign.state],
        "actions": [{"id": a.id, "type": a.type} for a in _actions(session, campaign.id)],
        "first_started": campaign.first_started or 0,
        "tags": list(campaign.tags or []),
        "created_by": "",
        # Tidings: the full definition, its version and state in its own words.
        "description": campaign.description,
        "version": campaign.version,
        "status": campaign.state,
        "definition": definition.document,
    }
    if campaign.kind == "campaign":
        view["trigger_segment_ids"] = [trigger["segment_id"]] if "segment_id" in trigger else []
        view["filter_segment_ids"] = sorted(_segments_in(definition.filters))
        if trigger["type"] == "event":
            view["event_name"] = trigger["event"]
    return view


def _segments_in(document: Any) -> set[int]:
    found: set[int] = set()
    if isinstance(document, dict):
        segment = document.get("segment")
        if isinstance(segment, dict) and isinstance(segment.get("id"), int):
            found.add(segment["id"])
        for value in document.values():
            found |= _segments_in(value)
    elif isinstance(document, list):
        for item in document:
            found |= _segments_in(item)
    return found


def list_campaigns(session: Session, workspace_id: int, *, kind: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Campaign)
        .where(Campaign.workspace_id == workspace_id, Campaign.kind == kind)
        .order_by(Campaign.id)
    )
    return [campaign_view(session, row) for row in rows]


def action_view(
    session: Session, campaign: Campaign, action: CampaignAction, language: str | None = None
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": action.id,
        "campaign_id": campaign.id if campaign.kind == "campaign" else None,
        "broadcast_id": campaign.id if campaign.kind == "broadcast" else None,
        "parent_action_id": None,
        "deduplicate_id": f"{action.id}:{action.updated_at}",
        "name": action.name,
        "type": action.type,
        "created": action.created_at,
        "updated": action.updated_at,
        "language": language or "",
        "block": action.block,
    }
    template = session.get(MessageTemplate, action.template_id) if action.template_id else None
    if template is not None:
        content = dict(template.content)
        if language:
            if language not in template.languages:
                raise NotFound(f"action {action.id} has no {language!r} translation")
            content = overlay(content, template.languages[language])
        from_id = content.get(FROM_ID)
        sender = senders.address_for(session, campaign.workspace_id, from_id) if from_id else None
        view.update(
            {
                "sending_state": "automatic",
                "layout": template.layout_id,
                "body": content.get("body", ""),
                "subject": content.get("subject", ""),
                "from": sender or content.get("from", ""),
                "from_id": from_id,
                "reply_to": content.get("reply_to", ""),
                "preheader_text": content.get("preheader", ""),
                "recipient": content.get("to", ""),
                "headers": content.get("headers", {}),
                "content": content,
                "template_id": template.id,
                "shared_template": template.kind == "transactional",
                "languages": sorted(template.languages),
            }
        )
    else:
        view["state"] = action.state
    return view


def get_action(
    session: Session, workspace_id: int, campaign_id: int, action_id: int, *, kind: str | None = None
) -> tuple[Campaign, CampaignAction]:
    campaign = get_campaign(session, workspace_id, campaign_id, kind=kind)
    action = session.get(CampaignAction, action_id)
    if action is None or action.campaign_id != campaign.id:
        raise NotFound(f"action {action_id} not found in {campaign.kind} {campaign_id}")
    return campaign, action


# Customer.io's action field names → Tidings' content fields.
ACTION_FIELDS = {"preheader_text": "preheader", "recipient": "to"}


def update_action(
    session: Session,
    workspace_id: int,
    campaign_id: int,
    action_id: int,
    body: dict[str, Any],
    *,
    language: str | None = None,
    now: int,
    kind: str | None = None,
) -> dict[str, Any]:
    """Change a message action's content (or one translation): every message not yet rendered uses it."""
    campaign, action = get_action(session, workspace_id, campaign_id, action_id, kind=kind)
    template = session.get(MessageTemplate, action.template_id) if action.template_id else None
    if template is None:
        raise InvalidInput(f"action {action_id} is a {action.type} block and has no content to change")
    if template.kind != "campaign":
        raise Conflict(
            f"action {action_id} sends transactional message {template.id}; change that message instead"
        )
    changes = {
        ACTION_FIELDS.get(key, key): value
        for key, value in body.items()
        if key not in ("id", "type", "name", "language")
    }
    if "content" in changes and isinstance(changes["content"], dict):
        changes.update(changes.pop("content"))
    clean = validate_content(template.channel, changes, path="action")
    senders.check_contents(session, workspace_id, [("action", clean)])
    if language:
        languages = dict(template.languages)
        languages[language] = overlay(languages.get(language, {}), clean)
        template.languages = languages
    else:
        template.content = overlay(template.content, clean)
    template.updated_at = action.updated_at = now
    session.flush()
    return action_view(session, campaign, action, language)


def list_actions(
    session: Session, workspace_id: int, campaign_id: int, *, kind: str | None = None
) -> list[dict[str, Any]]:
    campaign = get_campaign(session, workspace_id, campaign_id, kind=kind)
    return [action_view(session, campaign, action) for action in _actions(session, campaign.id)]


# -- journeys -------------------------------------------------------------------------------------------


def journey_view(journey: Journey, steps: list[JourneyStep] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": journey.id,
        "campaign_id": journey.campaign_id,
        "version": journey.version,
        "person_id": journey.person_id,
        "state": journey.state,
        "block": journey.block,
        "created_at": journey.created_at,
        "entered_at": journey.entered_at,
        "finished_at": journey.finished_at,
        "exit_reason": journey.exit_reason,
        "resume_at": journey.resume_at,
        "waiting_for": journey.wake_on,
        "converted_at": journey.converted_at,
        "attributes": journey.attributes or {},
        "trigger": journey.trigger or {},
    }
    if steps is not None:
        view["steps"] = [
            {
                "seq": s.seq,
                "block": s.block,
                "action_id": s.action_id,
                "type": s.type,
                "at": s.at,
                "outcome": s.outcome,
                "delivery_id": s.delivery_id,
                "detail": s.detail,
            }
            for s in steps
        ]
    return view


def list_journeys(
    session: Session,
    workspace_id: int,
    *,
    campaign_id: int | None = None,
    person_id: int | None = None,
    state: str | None = None,
    start: str | None = None,
    limit: int = 50,
    with_steps: bool = False,
) -> dict[str, Any]:
    query = select(Journey).where(Journey.workspace_id == workspace_id)
    if campaign_id is not None:
        query = query.where(Journey.campaign_id == campaign_id)
    if person_id is not None:
        query = query.where(Journey.person_id == person_id)
    if state is not None:
        query = query.where(Journey.state == state)
    if start:
        if not start.isdigit():
            raise InvalidInput("start must be a cursor returned as next", field="start")
        query = query.where(Journey.id < int(start))
    rows = list(session.scalars(query.order_by(Journey.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    steps: dict[int, list[JourneyStep]] = {}
    if with_steps and page:
        for row in session.scalars(
            select(JourneyStep)
            .where(JourneyStep.journey_id.in_([j.id for j in page]))
            .order_by(JourneyStep.journey_id, JourneyStep.seq, JourneyStep.id)
        ):
            steps.setdefault(row.journey_id, []).append(row)
    return {
        "journeys": [journey_view(j, steps.get(j.id, []) if with_steps else None) for j in page],
        "next": str(page[-1].id) if len(rows) > limit else "",
    }


def get_journey(session: Session, workspace_id: int, campaign_id: int, journey_id: int) -> dict[str, Any]:
    journey = session.get(Journey, journey_id)
    if journey is None or journey.workspace_id != workspace_id or journey.campaign_id != campaign_id:
        raise NotFound(f"journey {journey_id} not found in campaign {campaign_id}")
    steps = list(
        session.scalars(
            select(JourneyStep)
            .where(JourneyStep.journey_id == journey.id)
            .order_by(JourneyStep.seq, JourneyStep.id)
        )
    )
    return journey_view(journey, steps)


def journey_counts(session: Session, campaign_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Journey.state, func.count()).where(Journey.campaign_id == campaign_id).group_by(Journey.state)
    ).all()
    return {state: int(n) for state, n in rows}

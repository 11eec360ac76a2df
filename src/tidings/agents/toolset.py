"""The tools agents get: every row of ai-features §3 and what operating a workspace needs besides.

Each is a thin mapping onto one or two HTTP calls of the Track or App API. Lists are paginated with
``limit`` and ``start`` (the ``next`` of the previous page). Tools marked Tidings-only use Tidings'
extensions (campaign definitions, data-driven segments, transactional templates, LLM previews, journeys).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tidings.agents.tools import Tool, ToolContext

MAX_PAGE = 200
ID_TYPES = ["id", "email", "cio_id"]


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "description": description}


def _integer(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "description": description}


PAGING = {
    "limit": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_PAGE,
        "default": 50,
        "description": "Page size",
    },
    "start": {"type": "string", "description": "The `next` value of the previous page"},
}
PERSON = {
    "identifier": _text("The person's id, email or cio_id"),
    "id_type": {"type": "string", "enum": ID_TYPES, "default": "id", "description": "What identifier is"},
}
OBJECT: dict[str, Any] = {"type": "object", "description": "Free-form JSON object"}


def _page(items: list[Any], args: dict[str, Any]) -> dict[str, Any]:
    """Client-side pages over an endpoint that returns everything at once."""
    start = int(args["start"]) if str(args.get("start") or "").isdigit() else 0
    limit = int(args.get("limit", 50))
    chunk = items[start : start + limit]
    return {"items": chunk, "next": str(start + limit) if start + limit < len(items) else None}


def _seg(value: Any) -> str:
    return quote(str(value), safe="")


def _person_path(args: dict[str, Any]) -> str:
    kind = args.get("id_type", "id")
    value = str(args["identifier"])
    if kind == "cio_id":
        return _seg(f"cio_{value}")
    return _seg(value)


# -- reads --------------------------------------------------------------------------------------------------


async def _list_segments(ctx: ToolContext, args: dict[str, Any]) -> Any:
    found = await ctx.client.app("GET", "/v1/segments")
    return _page(found.get("segments", []), args)


async def _get_segment(ctx: ToolContext, args: dict[str, Any]) -> Any:
    segment = await ctx.client.app("GET", f"/v1/segments/{args['segment_id']}")
    count = await ctx.client.app("GET", f"/v1/segments/{args['segment_id']}/customer_count")
    return {**segment, **count}


async def _segment_membership(ctx: ToolContext, args: dict[str, Any]) -> Any:
    found = await ctx.client.app(
        "GET",
        f"/v1/segments/{args['segment_id']}/membership",
        params={"limit": args.get("limit", 50), "start": args.get("start")},
    )
    return {"identifiers": found.get("identifiers", []), "next": found.get("next") or None}


async def _search_customers(ctx: ToolContext, args: dict[str, Any]) -> Any:
    found = await ctx.client.app(
        "POST",
        "/v1/customers",
        params={"limit": args.get("limit", 50), "start": args.get("start")},
        json={"filter": args["filter"]},
    )
    return {"identifiers": found.get("identifiers", []), "next": found.get("next") or None}


async def _get_person(ctx: ToolContext, args: dict[str, Any]) -> Any:
    kind = args.get("id_type", "id")
    return await ctx.client.app(
        "GET", f"/v1/customers/{_seg(args['identifier'])}/attributes", params={"id_type": kind}
    )


async def _person_activities(ctx: ToolContext, args: dict[str, Any]) -> Any:
    found = await ctx.client.app(
        "GET",
        f"/v1/customers/{_seg(args['identifier'])}/activities",
        params={
            "id_type": args.get("id_type", "id"),
            "limit": min(int(args.get("limit", 50)), 100),
            "start": args.get("start"),
            "type": args.get("type"),
        },
    )
    return {"activities": found.get("activities", []), "next": found.get("next") or None}


async def _person_messages(ctx: ToolContext, args: dict[str, Any]) -> Any:
    found = await ctx.client.app(
        "GET",
        f"/v1/customers/{_seg(args['identifier'])}/messages",
        params={
            "id_type": args.get("id_type", "id"),
            "limit": args.get("limit", 50),
            "start": args.get("start"),
        },
    )
    return {"messages": found.get("messages", []), "next": found.get("next") or None}


async def _person_journeys(ctx: ToolContext, args: dict[str, Any]) -> Any:
    return await ctx.client.app(
        "GET",
        f"/v1/customers/{_seg(args['identifier'])}/journeys",
        params={"id_type": args.get("id_type", "id"), "steps": "true"},
    )


async def _list_campaigns(ctx: ToolContext, args: dict[str, Any]) -> Any:
    found = await ctx.client.app("GET", "/v1/campaigns")
    return _page(found.get("campaigns", []), args)


async def _get_campaign(ctx: ToolContext, args: dict[str, Any]) -> Any:
    return await ctx.client.app("GET", f"/v1/campaigns/{args['campaign_id']}")


async def _campaign_metrics(ctx: ToolContext, args: dict[str, Any]) -> Any:
    params = {"period": args.get("period", "days"), "steps": args.get("steps", 7), "type": args.get("type")}
    return await ctx.client.app("GET", f"/v1/campaigns/{args['campaign_id']}/metrics", params=params)


async def _list_transactional(ctx: ToolContext, args: dict[str, Any]) -> Any:
    found = await ctx.client.app("GET", "/v1/transactional")
    return _page(found.get("messages", []), args)


async def _get_messages(ctx: ToolContext, args: dict[str, Any]) -> Any:
    params = {
        key: args.get(key)
        for key in ("limit", "start", "type", "metric", "campaign_id", "newsletter_id", "start_ts", "end_ts")
    }
    params["limit"] = args.get("limit", 50)
    found = await ctx.client.app("GET", "/v1/messages", params=params)
    return {"messages": found.get("messages", []), "next": found.get("next") or None}


async def _get_delivery(ctx: ToolContext, args: dict[str, Any]) -> Any:
    return await ctx.client.app("GET", f"/v1/messages/{_seg(args['delivery_id'])}")


async def _get_triggers(ctx: ToolContext, args: dict[str, Any]) -> Any:
    if args.get("trigger_id") is not None:
        path = f"/v1/campaigns/{args['broadcast_id']}/triggers/{args['trigger_id']}"
        return await ctx.client.app("GET", path)
    return await ctx.client.app("GET", f"/v1/campaigns/{args['broadcast_id']}/triggers")


async def _get_webhooks(ctx: ToolContext, args: dict[str, Any]) -> Any:
    return await ctx.client.app("GET", "/v1/reporting_webhooks")


async def _get_integrations(ctx: ToolContext, args: dict[str, Any]) -> Any:
    webhooks = await ctx.client.app("GET", "/v1/reporting_webhooks")
    workspaces = await ctx.client.app("GET", "/v1/workspaces")
    return {
        "reporting_webhooks": webhooks.get("reporting_webhooks", []),
        "workspaces": workspaces.get("workspaces"),
    }


async def _list_journeys(ctx: ToolContext, args: dict[str, Any]) -> Any:
    params = {
        "limit": args.get("limit", 50),
        "start": args.get("start"),
        "state": args.get("state"),
        "steps": "true",
    }
    found = await ctx.client.app("GET", f"/v1/campaigns/{args['campaign_id']}/journeys", params=params)
    return {"journeys": found.get("journeys", []), "next": found.get("next") or None}


# -- writes -------------------------------------------------------------------------------------------------


async def _identify(ctx: ToolContext, args: dict[str, Any]) -> Any:
    attributes = dict(args.get("traits") or {})
    if args.get("email"):
        attributes["email"] = args["email"]
    if args.get("user_id"):
        body = {"type": "person", "identifiers": {"id": args["user_id"]}, "action": "identify"}
    elif args.get("email"):
        body = {"type": "person", "identifiers": {"email": args["email"]}, "action": "identify"}
    else:
        body = {"type": "person", "identifiers": {}, "action": "identify_anonymous"}
        body["anonymous_id"] = args["anonymous_id"]
    body["attributes"] = attributes
    await ctx.client.track("POST", "/api/v2/entity", json=body, dry_run=ctx.dry_run)
    return {"identified": body}


async def _track_event(ctx: ToolContext, args: dict[str, Any]) -> Any:
    body: dict[str, Any] = {"name": args["name"], "data": args.get("data") or {}}
    if args.get("timestamp"):
        body["timestamp"] = args["timestamp"]
    await ctx.client.track(
        "POST", f"/api/v1/customers/{_person_path(args)}/events", json=body, dry_run=ctx.dry_run
    )
    return {"tracked": body, "person": args["identifier"]}


async def _add_to_group(ctx: ToolContext, args: dict[str, Any]) -> Any:
    body = {
        "type": "person",
        "identifiers": {args.get("id_type", "id"): args["identifier"]},
        "action": "add_relationships",
        "cio_relationships": [
            {
                "identifiers": {
                    "object_type_id": str(args["object_type_id"]),
                    "object_id": str(args["object_id"]),
                },
                "relationship_attributes": args.get("relationship_attributes") or {},
            }
        ],
    }
    await ctx.client.track("POST", "/api/v2/entity", json=body, dry_run=ctx.dry_run)
    return {"related": body}


async def _alias(ctx: ToolContext, args: dict[str, Any]) -> Any:
    body = {"primary": {"id": args["user_id"]}, "secondary": {"id": args["previous_id"]}}
    await ctx.client.track("POST", "/api/v1/merge_customers", json=body, dry_run=ctx.dry_run)
    return {"merged": body}


async def _delete_person(ctx: ToolContext, args: dict[str, Any]) -> Any:
    await ctx.client.track("DELETE", f"/api/v1/customers/{_person_path(args)}", dry_run=ctx.dry_run)
    return {"deleted": args["identifier"]}


async def _suppress_person(ctx: ToolContext, args: dict[str, Any]) -> Any:
    await ctx.client.track("POST", f"/api/v1/customers/{_person_path(args)}/suppress", dry_run=ctx.dry_run)
    return {"suppressed": args["identifier"]}


async def _create_segment(ctx: ToolContext, args: dict[str, Any]) -> Any:
    segment = {k: args[k] for k in ("name", "description", "conditions") if k in args}
    return await ctx.client.app("POST", "/v1/segments", json={"segment": segment}, dry_run=ctx.dry_run)


async def _segment_in_use(ctx: ToolContext, args: dict[str, Any]) -> bool:
    """Live when a running or paused campaign or broadcast uses the segment (drafts do not count)."""
    used = await ctx.client.app("GET", f"/v1/segments/{args['segment_id']}/used_by")
    users = used.get("used_by", {})
    for user in [*users.get("campaigns", []), *users.get("broadcasts", [])]:
        found = await ctx.client.app("GET", f"/v1/campaigns/{user['id']}")
        if found.get("campaign", {}).get("state") in ("running", "paused"):
            return True
    return False


async def _update_segment(ctx: ToolContext, args: dict[str, Any]) -> Any:
    segment = {k: args[k] for k in ("name", "description", "conditions") if k in args}
    path = f"/v1/segments/{args['segment_id']}"
    return await ctx.client.app("PUT", path, json={"segment": segment}, dry_run=ctx.dry_run)


async def _create_campaign(ctx: ToolContext, args: dict[str, Any]) -> Any:
    return await ctx.client.app("POST", "/v1/campaigns", json=args["definition"], dry_run=ctx.dry_run)


async def _campaign_is_live(ctx: ToolContext, args: dict[str, Any]) -> bool:
    found = await ctx.client.app("GET", f"/v1/campaigns/{args['campaign_id']}")
    return found.get("campaign", {}).get("state") in ("running", "paused")


async def _update_campaign(ctx: ToolContext, args: dict[str, Any]) -> Any:
    path = f"/v1/campaigns/{args['campaign_id']}"
    return await ctx.client.app("PUT", path, json=args["definition"], dry_run=ctx.dry_run)


def _transition(action: str) -> Any:
    async def run(ctx: ToolContext, args: dict[str, Any]) -> Any:
        path = f"/v1/campaigns/{args['campaign_id']}/{action}"
        return await ctx.client.app("POST", path, dry_run=ctx.dry_run)

    return run


async def _create_transactional(ctx: ToolContext, args: dict[str, Any]) -> Any:
    return await ctx.client.app("POST", "/v1/transactional", json=args["message"], dry_run=ctx.dry_run)


async def _update_transactional(ctx: ToolContext, args: dict[str, Any]) -> Any:
    path = f"/v1/transactional/{_seg(args['transactional_id'])}"
    return await ctx.client.app("PUT", path, json=args["message"], dry_run=ctx.dry_run)


async def _trigger_broadcast(ctx: ToolContext, args: dict[str, Any]) -> Any:
    body = {k: v for k, v in args.items() if k != "broadcast_id"}
    path = f"/v1/campaigns/{args['broadcast_id']}/triggers"
    return await ctx.client.app("POST", path, json=body, dry_run=ctx.dry_run)


async def _send_email(ctx: ToolContext, args: dict[str, Any]) -> Any:
    return await ctx.client.app("POST", "/v1/send/email", json=args, dry_run=ctx.dry_run)


async def _llm_preview(ctx: ToolContext, args: dict[str, Any]) -> Any:
    if ctx.dry_run:
        # A rehearsal renders the prompt (free) instead of calling the model.
        return await ctx.client.app("POST", "/v1/ai/llm/processed_prompt", json=args)
    return await ctx.client.app("POST", "/v1/ai/llm/preview", json=args)


CONDITIONS = {
    "type": "object",
    "description": "A segment condition document (Tidings' grammar: and/or/not, attribute, event, "
    "segment, ...; read the workspace-schema resource for the attributes and events that exist)",
}


def _tools() -> list[Tool]:
    page = dict(PAGING)
    segment_id = {"segment_id": _integer("A segment id (list_segments)")}
    campaign_id = {"campaign_id": _integer("A campaign id (list_campaigns)")}
    return [
        Tool(
            "list_segments", "List segments",
            "Segments of the workspace (id, name, type, state); paginated.",
            _schema(page), "read", _list_segments,
        ),
        Tool(
            "get_segment", "Segment details",
            "One segment with its conditions, state and member count.",
            _schema(segment_id, ["segment_id"]), "read", _get_segment,
        ),
        Tool(
            "get_segment_membership", "Segment members",
            "Identifiers of the people in a segment; paginated (returns personal data).",
            _schema({**segment_id, **page}, ["segment_id"]), "read_pii", _segment_membership,
        ),
        Tool(
            "search_customers", "Search people",
            "People matching a filter (Customer.io's grammar: and/or/not with attribute {field, operator, "
            "value} and segment {id}); returns identifiers, paginated.",
            _schema({"filter": CONDITIONS, **page}, ["filter"]), "read_pii", _search_customers,
        ),
        Tool(
            "get_person_attributes", "Person profile",
            "A person's attributes, identifiers, timestamps and devices, by id, email or cio_id.",
            _schema(PERSON, ["identifier"]), "read_pii", _get_person,
        ),
        Tool(
            "get_person_activities", "Person activity",
            "A person's activity log (events, attribute changes, messages), newest first; paginated.",
            _schema({**PERSON, **page, "type": {"type": "string"}}, ["identifier"]), "read_pii",
            _person_activities,
        ),
        Tool(
            "get_person_messages", "Person messages",
            "Deliveries sent to a person with their metrics, newest first; paginated.",
            _schema({**PERSON, **page}, ["identifier"]), "read_pii", _person_messages,
        ),
        Tool(
            "get_person_journeys", "Person journeys",
            "A person's campaign journeys with each step's outcome: why they did or did not get a message.",
            _schema(PERSON, ["identifier"]), "read_pii", _person_journeys, tidings_only=True,
        ),
        Tool(
            "list_campaigns", "List campaigns",
            "Campaigns with their state, trigger and goals; paginated.",
            _schema(page), "read", _list_campaigns,
        ),
        Tool(
            "get_campaign", "Campaign details",
            "One campaign: state, version and (on Tidings) its definition.",
            _schema(campaign_id, ["campaign_id"]), "read", _get_campaign,
        ),
        Tool(
            "get_campaign_metrics", "Campaign metrics",
            "Delivery and conversion metrics of a campaign per period (sent, delivered, opened, clicked, "
            "converted, bounced, ...).",
            _schema({
                **campaign_id,
                "period": {"type": "string", "enum": ["hours", "days", "weeks", "months"], "default": "days"},
                "steps": {"type": "integer", "minimum": 1, "maximum": 120, "default": 7},
                "type": {"type": "string", "enum": ["email", "sms", "push", "webhook"]},
            }, ["campaign_id"]), "read", _campaign_metrics,
        ),
        Tool(
            "list_campaign_journeys", "Campaign journeys",
            "Journeys of a campaign with their logs, newest first; filter by state; paginated.",
            _schema({**campaign_id, **page, "state": {"type": "string"}}, ["campaign_id"]), "read_pii",
            _list_journeys, tidings_only=True,
        ),
        Tool(
            "list_transactional_messages", "List transactional messages",
            "Transactional message templates, to find a valid transactional_message_id; paginated.",
            _schema(page), "read", _list_transactional,
        ),
        Tool(
            "get_messages", "Messages (deliveries)",
            "Deliveries with their metrics, newest first; filter by channel type, metric, campaign or "
            "newsletter and a time range (unix start_ts/end_ts); paginated (returns recipients).",
            _schema({
                **page,
                "type": {"type": "string", "enum": ["email", "sms", "push", "webhook"]},
                "metric": {"type": "string"},
                "campaign_id": {"type": "integer"},
                "newsletter_id": {"type": "integer"},
                "start_ts": {"type": "integer"},
                "end_ts": {"type": "integer"},
            }), "read_pii", _get_messages,
        ),
        Tool(
            "get_delivery", "One delivery",
            "One delivery with its state and metric timestamps.",
            _schema({"delivery_id": _text("A delivery id (get_messages)")}, ["delivery_id"]), "read_pii",
            _get_delivery,
        ),
        Tool(
            "get_broadcast_triggers", "Broadcast triggers",
            "All triggers of an API-triggered broadcast, or one with its status and data.",
            _schema({"broadcast_id": _integer("A broadcast id"), "trigger_id": {"type": "integer"}},
                    ["broadcast_id"]), "read", _get_triggers,
        ),
        Tool(
            "get_webhooks", "Reporting webhooks",
            "Reporting webhooks and the events each is subscribed to.",
            _schema({}), "read", _get_webhooks,
        ),
        Tool(
            "get_integrations", "Integrations",
            "What the workspace is connected to: reporting webhooks and workspace details.",
            _schema({}), "read", _get_integrations,
        ),
        # -- writes
        Tool(
            "identify_person", "Identify a person",
            "Create or update a person with traits, by user_id, email or anonymous_id.",
            _schema({
                "user_id": _text("The person's id"),
                "email": _text("The person's email"),
                "anonymous_id": _text("An anonymous id (when the person is not known yet)"),
                "traits": OBJECT,
            }) | {"anyOf": [{"required": [key]} for key in ("user_id", "email", "anonymous_id")]},
            "write", _identify, live=True, idempotent=True,
        ),
        Tool(
            "track_event", "Track an event",
            "Record an event for a person (it may start campaigns).",
            _schema({**PERSON, "name": _text("Event name"), "data": OBJECT, "timestamp": {"type": "integer"}},
                    ["identifier", "name"]), "write", _track_event, live=True,
        ),
        Tool(
            "add_person_to_group", "Add a person to a group",
            "Relate a person to an object (a company, account, project), creating the relationship.",
            _schema({
                **PERSON,
                "object_type_id": {"type": ["string", "integer"], "description": "Object type id"},
                "object_id": _text("The object's id"),
                "relationship_attributes": OBJECT,
            }, ["identifier", "object_type_id", "object_id"]), "write", _add_to_group, live=True,
            idempotent=True,
        ),
        Tool(
            "create_alias", "Merge two profiles",
            "Merge previous_id's profile into user_id's (the previous profile is deleted).",
            _schema({"user_id": _text("The id that stays"), "previous_id": _text("The id merged away")},
                    ["user_id", "previous_id"]), "write", _alias, live=True, destructive=True,
        ),
        Tool(
            "delete_person", "Delete a person",
            "Delete a person's profile (they may come back if identified again).",
            _schema(PERSON, ["identifier"]), "write", _delete_person, live=True, destructive=True,
            idempotent=True,
        ),
        Tool(
            "suppress_person", "Suppress a person",
            "Delete the profile and block the identifier from being added again (GDPR/CCPA).",
            _schema(PERSON, ["identifier"]), "write", _suppress_person, live=True, destructive=True,
            idempotent=True,
        ),
        Tool(
            "create_segment", "Create a segment",
            "Create a segment: manual (name only) or data-driven (with conditions, Tidings).",
            _schema({"name": _text("Name"), "description": {"type": "string"}, "conditions": CONDITIONS},
                    ["name"]), "write", _create_segment,
        ),
        Tool(
            "update_segment", "Update a segment",
            "Change a segment's name, description or conditions (live when an active campaign uses it).",
            _schema({**segment_id, "name": _text("Name"), "description": {"type": "string"},
                     "conditions": CONDITIONS}, ["segment_id"]), "write", _update_segment,
            live=_segment_in_use, idempotent=True, tidings_only=True,
        ),
        Tool(
            "create_campaign", "Create a campaign",
            "Create a campaign (a draft) from a definition: name, trigger, filters, goal, exit, steps "
            "(docs/campaigns.md).",
            _schema({"definition": {"type": "object", "description": "A definition"}}, ["definition"]),
            "write", _create_campaign, tidings_only=True,
        ),
        Tool(
            "update_campaign", "Update a campaign",
            "Save a new version of a campaign's definition (live when the campaign is running or paused).",
            _schema({**campaign_id, "definition": {"type": "object"}}, ["campaign_id", "definition"]),
            "write", _update_campaign, live=_campaign_is_live, tidings_only=True,
        ),
        Tool(
            "activate_campaign", "Activate a campaign",
            "Start a draft campaign: people begin entering it.",
            _schema(campaign_id, ["campaign_id"]), "write", _transition("activate"), live=True,
            idempotent=True, open_world=True, tidings_only=True,
        ),
        Tool(
            "pause_campaign", "Pause a campaign",
            "Pause a campaign: nobody enters and journeys hold where they are.",
            _schema(campaign_id, ["campaign_id"]), "write", _transition("pause"), live=True, idempotent=True,
            tidings_only=True,
        ),
        Tool(
            "resume_campaign", "Resume a campaign",
            "Resume a paused campaign.",
            _schema(campaign_id, ["campaign_id"]), "write", _transition("resume"), live=True,
            idempotent=True, open_world=True, tidings_only=True,
        ),
        Tool(
            "create_transactional_message", "Create a transactional message",
            "Create a transactional template (channel, name, trigger_name, content).",
            _schema({"message": {"type": "object"}}, ["message"]), "write", _create_transactional,
            tidings_only=True,
        ),
        Tool(
            "update_transactional_message", "Update a transactional message",
            "Change a transactional template's content or settings (live: sends use it).",
            _schema({"transactional_id": {"type": ["string", "integer"]}, "message": {"type": "object"}},
                    ["transactional_id", "message"]), "write", _update_transactional, live=True,
            idempotent=True, tidings_only=True,
        ),
        Tool(
            "trigger_broadcast", "Trigger a broadcast",
            "Run an API-triggered broadcast for recipients (ids, emails, per_user_data, a data file or a "
            "filter) with Liquid data.",
            _schema({
                "broadcast_id": _integer("A broadcast id"),
                "data": OBJECT,
                "recipients": OBJECT,
                "ids": {"type": "array", "items": {"type": "string"}},
                "emails": {"type": "array", "items": {"type": "string"}},
                "per_user_data": {"type": "array", "items": {"type": "object"}},
                "id_ignore_missing": {"type": "boolean"},
                "email_ignore_missing": {"type": "boolean"},
                "email_add_duplicates": {"type": "boolean"},
            }, ["broadcast_id"]), "write", _trigger_broadcast, live=True, open_world=True,
        ),
        Tool(
            "send_transactional_email", "Send a transactional email",
            "Send an email now: from a template (transactional_message_id) or inline (from, subject, "
            "body), to an address with identifiers and message_data.",
            _schema({
                "transactional_message_id": {"type": ["string", "integer"]},
                "to": _text("Recipient address"),
                "identifiers": OBJECT,
                "message_data": OBJECT,
                "from": {"type": "string"},
                "subject": {"type": "string"},
                "body": {"type": "string"},
            }, ["to", "identifiers"]), "write", _send_email, live=True, open_world=True,
        ),
        Tool(
            "llm_preview", "Preview an LLM action",
            "Run an LLM prompt for a sample person and show the attributes it would set (spends AI "
            "credits); with dry_run, only render the prompt's Liquid (free).",
            _schema({
                "prompt": _text("Liquid prompt"),
                "model": {"type": "string"},
                "output_fields": {"type": "array", "items": {"type": "object"}},
                "person": OBJECT,
                "trigger": OBJECT,
            }, ["prompt"]), "write", _llm_preview, tidings_only=True,
        ),
    ]  # fmt: skip


TOOLS: dict[str, Tool] = {tool.name: tool for tool in _tools()}

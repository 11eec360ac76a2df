"""App API: AI settings, business context, the model catalogue, AI credits, the LLM action's authoring
helpers, the audit log and the data index (Tidings' extension, in the App API's style)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from tidings.ai import authoring, credits, data_index
from tidings.ai import settings as ai_settings
from tidings.ai.catalogue import catalogue
from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, Start, Workspace, refuse_dry_run
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import AppRoute, json_response
from tidings.audit import service as audit
from tidings.errors import InvalidInput
from tidings.workspaces.schemas import WorkspaceContext

router = APIRouter(prefix="/v1", route_class=AppRoute, tags=["App API: AI"])


def _actor(ws: WorkspaceContext) -> ai_settings.Actor:
    return ai_settings.Actor(ws.actor, admin=ws.role == "admin")


def _changes(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The changes of a PUT: the body, or its one ``key`` member (Customer.io's wrapped style)."""
    changes = body[key] if set(body) == {key} else body
    if not isinstance(changes, dict):
        raise InvalidInput(f"{key} must be an object", field=key)
    return changes


def _body(description: str) -> dict[str, Any]:
    return docs.json_body({"type": "object", "description": description})


@router.get("/ai/settings", summary="The account's AI settings")
async def get_settings(request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(lambda s: ai_settings.read(s, ws.account_id))
    return json_response({"ai_settings": found.view()})


@router.put(
    "/ai/settings",
    summary="Change AI settings (allow_agent_edit_live_data: admin keys only); audited",
    openapi_extra=_body(
        "Any of ai_enabled, allow_agent_edit_live_data, safety {category: threshold|null}, "
        "compliance_prompt, mcp_enabled"
    ),
)
async def put_settings(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    changes = _changes(body, "ai_settings")
    now = runtime.clock.now_int()
    updated = await runtime.db.write(
        lambda s: ai_settings.update(s, ws.account_id, changes, actor=_actor(ws), now=now)
    )
    return json_response({"ai_settings": updated.view()})


@router.get("/ai/business_context", summary="This workspace's business context for AI generations")
async def get_business_context(request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(lambda s: ai_settings.business_context(s, ws.workspace_id))
    return json_response({"business_context": found})


@router.put(
    "/ai/business_context",
    summary="Change this workspace's business context; audited",
    openapi_extra=_body("Any of company, product, audience (text)"),
)
async def put_business_context(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    changes = _changes(body, "business_context")
    now = runtime.clock.now_int()
    updated = await runtime.db.write(
        lambda s: ai_settings.update_business_context(s, ws.workspace_id, changes, actor=_actor(ws), now=now)
    )
    return json_response({"business_context": updated})


@router.get("/ai/models", summary="The model catalogue: provider, class, credits per call, availability")
async def list_models(ws: Workspace) -> Response:
    return json_response({"models": catalogue().views()})


@router.get("/ai/credits", summary="The account's AI credit balance and usage")
async def get_credits(
    request: Request,
    ws: Workspace,
    since: Annotated[int | None, Query(description="Count usage from this unix time")] = None,
) -> Response:
    found = await runtime_of(request).db.read(lambda s: credits.summary(s, ws.account_id, since=since))
    return json_response({"credits": found})


@router.get("/ai/credits/ledger", summary="Every credit movement, newest first")
async def get_ledger(
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: credits.ledger(s, ws.account_id, start=start, limit=limit)
    )
    return json_response(found)


@router.post(
    "/ai/credits",
    summary="Add AI credits to the account (admin keys only); audited",
    openapi_extra=_body('{"credits": number, "note"?: text}'),
)
async def add_credits(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > 1000:
        raise InvalidInput("note must be text of at most 1000 characters", field="note")
    now = runtime.clock.now_int()
    await runtime.db.write(
        lambda s: credits.grant(s, ws.account_id, body.get("credits"), actor=_actor(ws), note=note, now=now)  # type: ignore[arg-type]
    )
    found = await runtime.db.read(lambda s: credits.summary(s, ws.account_id))
    return json_response({"credits": found})


_SAMPLE = (
    "prompt (Liquid), person {id|email|cio_id: value}?, trigger {event: {name, data}} | {data}?, "
    "journey {attributes}?; or campaign_id + block of a saved LLM action"
)


@router.post(
    "/ai/llm/processed_prompt",
    summary="Render an LLM prompt for a sample person and trigger, listing Liquid errors (free)",
    openapi_extra=_body(_SAMPLE),
)
async def processed_prompt(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    found = await runtime.db.read(lambda s: authoring.processed_prompt(s, ws, body))
    return json_response(found)


@router.post(
    "/ai/llm/preview",
    summary="Run an LLM action once for a sample (spends credits, changes no data)",
    openapi_extra=_body(f"{_SAMPLE}; model?, output_fields"),
)
async def preview(request: Request, ws: Workspace) -> Response:
    refuse_dry_run()
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    found = await authoring.preview(runtime.db, ws, body, now=runtime.clock.now_int())
    return json_response({"preview": found})


@router.post(
    "/ai/llm/generate_fields",
    summary="Propose output fields for a prompt (spends credits); review them before saving",
    openapi_extra=_body("prompt, model?; or campaign_id + block"),
)
async def generate_fields(request: Request, ws: Workspace) -> Response:
    refuse_dry_run()
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    found = await authoring.generate_fields(runtime.db, ws, body, now=runtime.clock.now_int())
    return json_response(found)


@router.get("/audit_log", summary="The account's audit log, newest first")
async def audit_log(
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(description="Only actions starting with this")] = None,
) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: audit.entries(s, ws.account_id, start=start, limit=limit, action=action)
    )
    return json_response(found)


@router.post(
    "/audit_log",
    summary="Record an agent's tool call in the audit log (actions agent.*; any key may)",
    openapi_extra=_body('{"action": "agent.<surface>.tool_call", "target": tool name, "new": {details}}'),
)
async def record_audit(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    action, target = body.get("action"), body.get("target", "")
    # Agents record their own calls; nobody records settings changes (those are written by the change).
    if not isinstance(action, str) or not action.startswith("agent.") or len(action) > 100:
        raise InvalidInput('action must start with "agent."', field="action")
    if not isinstance(target, str) or len(target) > 200:
        raise InvalidInput("target must be text", field="target")
    now = runtime.clock.now_int()
    await runtime.db.write(
        lambda s: audit.record(
            s,
            ws.account_id,
            workspace_id=ws.workspace_id,
            actor=ws.actor,
            action=action,
            target=target,
            new=body.get("new"),
            now=now,
        )
    )
    return json_response({})


@router.get("/api_key", summary="The calling key: its role and permissions (Tidings)")
async def current_key(ws: Workspace) -> Response:
    return json_response(
        {
            "api_key": {
                "id": ws.credential_id,
                "workspace_id": ws.workspace_id,
                "role": ws.role,
                "permissions": sorted(ws.permissions),
            }
        }
    )


@router.get("/data_index", summary="Described customer attributes of this workspace")
async def get_data_index(request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(lambda s: data_index.attributes(s, ws.workspace_id))
    return json_response({"attributes": found})

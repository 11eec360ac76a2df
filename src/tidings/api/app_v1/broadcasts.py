"""App API: API-triggered broadcasts — triggering one (``POST /v1/campaigns/{id}/triggers``), its
triggers and their errors, and the broadcast read endpoints (``/v1/broadcasts``, ``/actions``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, Start, Workspace
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import AppRoute, json_response
from tidings.broadcasts import service as broadcasts
from tidings.campaigns import service as campaigns

router = APIRouter(route_class=AppRoute, tags=["App API: broadcasts"])
_TRIGGER = docs.json_body(
    {
        "type": "object",
        "description": (
            "data (Liquid {{trigger.*}}) and at most one audience: recipients (a filter), emails "
            "(+ email_ignore_missing, email_add_duplicates), ids (+ id_ignore_missing), per_user_data "
            "([{id|email, data}]) or data_file_url (newline-delimited per-user objects); none: the "
            "broadcast's own audience."
        ),
    }
)
BROADCAST = "broadcast"


@router.post(
    "/v1/campaigns/{broadcast_id}/triggers",
    summary="Trigger an API-triggered broadcast",
    openapi_extra=_TRIGGER,
)
async def trigger_broadcast(broadcast_id: int, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    created = await runtime.db.write(
        lambda s: broadcasts.trigger(s, ws.workspace_id, broadcast_id, body, now)
    )
    return json_response(created)


@router.get("/v1/campaigns/{broadcast_id}/triggers/{trigger_id}", summary="One trigger of a broadcast")
async def get_trigger(broadcast_id: int, trigger_id: int, request: Request, ws: Workspace) -> Response:
    view = await runtime_of(request).db.read(
        lambda s: broadcasts.trigger_view(
            broadcasts.get_trigger(s, ws.workspace_id, broadcast_id, trigger_id)
        )
    )
    return json_response(view)


@router.get(
    "/v1/campaigns/{broadcast_id}/triggers/{trigger_id}/errors",
    summary="The recipients a trigger could not message",
)
async def trigger_errors(
    broadcast_id: int,
    trigger_id: int,
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=broadcasts.MAX_ERROR_PAGE)] = 100,
) -> Response:
    page = await runtime_of(request).db.read(
        lambda s: broadcasts.list_errors(
            s, ws.workspace_id, broadcast_id, trigger_id, start=start, limit=limit
        )
    )
    return json_response(page)


async def _triggers(broadcast_id: int, request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(
        lambda s: broadcasts.list_triggers(s, ws.workspace_id, broadcast_id)
    )
    return json_response({"triggers": rows})


@router.get("/v1/broadcasts/{broadcast_id}/triggers", summary="A broadcast's triggers, newest first")
async def list_triggers(broadcast_id: int, request: Request, ws: Workspace) -> Response:
    return await _triggers(broadcast_id, request, ws)


@router.get("/v1/campaigns/{broadcast_id}/triggers", summary="A broadcast's triggers (the older path)")
async def list_triggers_old_path(broadcast_id: int, request: Request, ws: Workspace) -> Response:
    return await _triggers(broadcast_id, request, ws)


@router.get("/v1/broadcasts", summary="List API-triggered broadcasts")
async def list_broadcasts(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(
        lambda s: campaigns.list_campaigns(s, ws.workspace_id, kind=BROADCAST)
    )
    return json_response({"broadcasts": rows})


@router.get("/v1/broadcasts/{broadcast_id}", summary="An API-triggered broadcast")
async def get_broadcast(broadcast_id: int, request: Request, ws: Workspace) -> Response:
    view = await runtime_of(request).db.read(
        lambda s: campaigns.campaign_view(
            s, campaigns.get_campaign(s, ws.workspace_id, broadcast_id, kind=BROADCAST)
        )
    )
    return json_response({"broadcast": view})


@router.get("/v1/broadcasts/{broadcast_id}/actions", summary="A broadcast's actions")
async def list_actions(broadcast_id: int, request: Request, ws: Workspace, start: Start = None) -> Response:
    rows = await runtime_of(request).db.read(
        lambda s: campaigns.list_actions(s, ws.workspace_id, broadcast_id, kind=BROADCAST)
    )
    return json_response({"actions": rows, "next": ""})


@router.get("/v1/broadcasts/{broadcast_id}/actions/{action_id}", summary="One action of a broadcast")
async def get_action(broadcast_id: int, action_id: int, request: Request, ws: Workspace) -> Response:
    def load(session: Any) -> dict[str, Any]:
        campaign, action = campaigns.get_action(
            session, ws.workspace_id, broadcast_id, action_id, kind=BROADCAST
        )
        return campaigns.action_view(session, campaign, action)

    return json_response({"action": await runtime_of(request).db.read(load)})


@router.put(
    "/v1/broadcasts/{broadcast_id}/actions/{action_id}", summary="Change a broadcast message's content"
)
async def update_action(broadcast_id: int, action_id: int, request: Request, ws: Workspace) -> Response:
    return await _put_action(broadcast_id, action_id, None, request, ws)


@router.get(
    "/v1/broadcasts/{broadcast_id}/actions/{action_id}/language/{language}",
    summary="One translation of a broadcast action",
)
async def get_action_language(
    broadcast_id: int, action_id: int, language: str, request: Request, ws: Workspace
) -> Response:
    def load(session: Any) -> dict[str, Any]:
        campaign, action = campaigns.get_action(
            session, ws.workspace_id, broadcast_id, action_id, kind=BROADCAST
        )
        return campaigns.action_view(session, campaign, action, language)

    return json_response({"action": await runtime_of(request).db.read(load)})


@router.put(
    "/v1/broadcasts/{broadcast_id}/actions/{action_id}/language/{language}",
    summary="Change one translation of a broadcast action",
)
async def put_action_language(
    broadcast_id: int, action_id: int, language: str, request: Request, ws: Workspace
) -> Response:
    return await _put_action(broadcast_id, action_id, language, request, ws)


async def _put_action(
    broadcast_id: int, action_id: int, language: str | None, request: Request, ws: Workspace
) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    view = await runtime.db.write(
        lambda s: campaigns.update_action(
            s, ws.workspace_id, broadcast_id, action_id, body, language=language, now=now, kind=BROADCAST
        )
    )
    return json_response({"action": view})

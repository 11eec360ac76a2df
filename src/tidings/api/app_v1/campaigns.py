"""App API: campaigns — Customer.io's read endpoints (``/v1/campaigns``, ``/actions``) plus Tidings'
extension in the same style to define and run them (create, update, activate, pause, resume, archive)
and to read journeys with their logs."""

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
from tidings.campaigns import service as campaigns

router = APIRouter(prefix="/v1/campaigns", route_class=AppRoute, tags=["App API: campaigns"])
_DEFINITION = docs.json_body(
    {
        "type": "object",
        "description": 'A campaign definition (docs/campaigns.md), or {"campaign": definition}.',
    }
)


def _document(body: dict[str, Any]) -> Any:
    return body["campaign"] if set(body) == {"campaign"} else body


@router.post("", summary="Create a campaign from its definition (Tidings)", openapi_extra=_DEFINITION)
async def create_campaign(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    view = await runtime.db.write(
        lambda s: campaigns.create_campaign(s, ws.workspace_id, _document(body), now=now)
    )
    return json_response({"campaign": view})


@router.get("", summary="List campaigns")
async def list_campaigns(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(
        lambda s: campaigns.list_campaigns(s, ws.workspace_id, kind="campaign")
    )
    return json_response({"campaigns": rows})


@router.get("/{campaign_id}", summary="A campaign")
async def get_campaign(campaign_id: int, request: Request, ws: Workspace) -> Response:
    view = await runtime_of(request).db.read(
        lambda s: campaigns.campaign_view(s, campaigns.get_campaign(s, ws.workspace_id, campaign_id))
    )
    return json_response({"campaign": view})


@router.put(
    "/{campaign_id}",
    summary="Save a new version of a campaign's definition (Tidings)",
    openapi_extra=_DEFINITION,
)
async def update_campaign(campaign_id: int, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    view = await runtime.db.write(
        lambda s: campaigns.update_campaign(s, ws.workspace_id, campaign_id, _document(body), now=now)
    )
    return json_response({"campaign": view})


async def _transition(campaign_id: int, action: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()
    view = await runtime.db.write(
        lambda s: campaigns.change_state(s, ws.workspace_id, campaign_id, action, now=now)
    )
    return json_response({"campaign": view})


@router.post("/{campaign_id}/activate", summary="Start a draft campaign (Tidings)")
async def activate(campaign_id: int, request: Request, ws: Workspace) -> Response:
    return await _transition(campaign_id, "activate", request, ws)


@router.post("/{campaign_id}/pause", summary="Pause: nobody enters, journeys hold (Tidings)")
async def pause(campaign_id: int, request: Request, ws: Workspace) -> Response:
    return await _transition(campaign_id, "pause", request, ws)


@router.post("/{campaign_id}/resume", summary="Resume a paused campaign (Tidings)")
async def resume(campaign_id: int, request: Request, ws: Workspace) -> Response:
    return await _transition(campaign_id, "resume", request, ws)


@router.post("/{campaign_id}/archive", summary="Archive: end every journey (Tidings)")
async def archive(campaign_id: int, request: Request, ws: Workspace) -> Response:
    return await _transition(campaign_id, "archive", request, ws)


@router.get("/{campaign_id}/actions", summary="A campaign's actions")
async def list_actions(campaign_id: int, request: Request, ws: Workspace, start: Start = None) -> Response:
    rows = await runtime_of(request).db.read(
        lambda s: campaigns.list_actions(s, ws.workspace_id, campaign_id)
    )
    return json_response({"actions": rows, "next": ""})


@router.get("/{campaign_id}/actions/{action_id}", summary="One action of a campaign")
async def get_action(campaign_id: int, action_id: int, request: Request, ws: Workspace) -> Response:
    def load(session: Any) -> dict[str, Any]:
        campaign, action = campaigns.get_action(session, ws.workspace_id, campaign_id, action_id)
        return campaigns.action_view(session, campaign, action)

    return json_response({"action": await runtime_of(request).db.read(load)})


@router.put("/{campaign_id}/actions/{action_id}", summary="Change a message action's content")
async def update_action(campaign_id: int, action_id: int, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    view = await runtime.db.write(
        lambda s: campaigns.update_action(s, ws.workspace_id, campaign_id, action_id, body, now=now)
    )
    return json_response({"action": view})


@router.get("/{campaign_id}/actions/{action_id}/language/{language}", summary="One translation of an action")
async def get_action_language(
    campaign_id: int, action_id: int, language: str, request: Request, ws: Workspace
) -> Response:
    def load(session: Any) -> dict[str, Any]:
        campaign, action = campaigns.get_action(session, ws.workspace_id, campaign_id, action_id)
        return campaigns.action_view(session, campaign, action, language)

    return json_response({"action": await runtime_of(request).db.read(load)})


@router.put(
    "/{campaign_id}/actions/{action_id}/language/{language}", summary="Change one translation of an action"
)
async def put_action_language(
    campaign_id: int, action_id: int, language: str, request: Request, ws: Workspace
) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    view = await runtime.db.write(
        lambda s: campaigns.update_action(
            s, ws.workspace_id, campaign_id, action_id, body, language=language, now=now
        )
    )
    return json_response({"action": view})


@router.get(
    "/{campaign_id}/journeys", summary="A campaign's journeys, newest first, with their logs (Tidings)"
)
async def list_journeys(
    campaign_id: int,
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    state: Annotated[str | None, Query()] = None,
    steps: Annotated[bool, Query(description="Include each journey's log")] = False,
) -> Response:
    def load(session: Any) -> dict[str, Any]:
        campaigns.get_campaign(session, ws.workspace_id, campaign_id)
        return campaigns.list_journeys(
            session,
            ws.workspace_id,
            campaign_id=campaign_id,
            state=state,
            start=start,
            limit=limit,
            with_steps=steps,
        )

    return json_response(await runtime_of(request).db.read(load))


@router.get("/{campaign_id}/journeys/{journey_id}", summary="One journey and its log (Tidings)")
async def get_journey(campaign_id: int, journey_id: int, request: Request, ws: Workspace) -> Response:
    view = await runtime_of(request).db.read(
        lambda s: campaigns.get_journey(s, ws.workspace_id, campaign_id, journey_id)
    )
    return json_response({"journey": view})

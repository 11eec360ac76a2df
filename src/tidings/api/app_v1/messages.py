"""App API: messages (deliveries) — the workspace's list, one message, its archived content, and one
person's messages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from tidings.api.app_v1.common import IdType, Start, Workspace
from tidings.api.auth import runtime_of
from tidings.api.paths import path_value
from tidings.api.surfaces import AppRoute, json_response
from tidings.deliveries import queries
from tidings.deliveries import service as deliveries
from tidings.people.queries import lookup

router = APIRouter(route_class=AppRoute, tags=["App API: messages"])

MAX_PAGE = 1000
# Both stores keep these as 64-bit integers; a larger number is a bad request, not a database error.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Type = Annotated[str | None, Query(description="Channel: email, sms, push, webhook")]
Metric = Annotated[
    str | None, Query(description=f"Only messages with this metric: {', '.join(queries.FILTER_METRICS)}")
]
Drafts = Annotated[bool | None, Query(description="true: only drafts; otherwise drafts are left out")]
StartTs = Annotated[int | None, Query(ge=INT64_MIN, le=INT64_MAX, description="Created at or after (unix)")]
EndTs = Annotated[int | None, Query(ge=INT64_MIN, le=INT64_MAX, description="Created at or before (unix)")]
OriginId = Annotated[int | None, Query(ge=0, le=INT64_MAX)]
# Accepted for Customer.io's clients; Tidings has no in-app tracked responses to add.
TrackedResponses = Annotated[bool, Query()]


@router.get("/v1/messages", summary="List messages (deliveries), newest first")
async def list_messages(
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Limit = 50,
    type: Type = None,
    metric: Metric = None,
    drafts: Drafts = None,
    campaign_id: OriginId = None,
    newsletter_id: OriginId = None,
    action_id: OriginId = None,
    start_ts: StartTs = None,
    end_ts: EndTs = None,
    get_tracked_responses: TrackedResponses = False,
) -> Response:
    page = await runtime_of(request).db.read(
        lambda s: queries.list_messages(
            s,
            ws.workspace_id,
            start=start,
            limit=limit,
            type=type,
            metric=metric,
            drafts=drafts,
            campaign_id=campaign_id,
            newsletter_id=newsletter_id,
            action_id=action_id,
            start_ts=start_ts,
            end_ts=end_ts,
        )
    )
    return json_response(page)


@router.get("/v1/messages/{message_id}", summary="A message (delivery) and its metrics")
async def get_message(
    message_id: str, request: Request, ws: Workspace, get_tracked_responses: TrackedResponses = False
) -> Response:
    ref = path_value(message_id)
    view = await runtime_of(request).db.read(lambda s: queries.get_message(s, ws.workspace_id, ref))
    return json_response({"message": view})


@router.get(
    "/v1/messages/{message_id}/archived_message",
    summary="A message's content as sent (null with forgotten=true when it was not retained)",
)
async def archived_message(message_id: str, request: Request, ws: Workspace) -> Response:
    ref = path_value(message_id)
    view = await runtime_of(request).db.read(lambda s: queries.archived_message(s, ws.workspace_id, ref))
    return json_response(view)


@router.post("/v1/messages/{message_id}/send", summary="Send a draft now (Tidings)")
async def send_draft(message_id: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    delivery_id = path_value(message_id)
    now = runtime.clock.now_int()
    queued = await runtime.db.write(lambda s: deliveries.send_draft(s, ws.workspace_id, delivery_id, now=now))
    return json_response(queued)


@router.get("/v1/customers/{identifier}/messages", summary="A person's messages, newest first")
async def customer_messages(
    identifier: str,
    request: Request,
    ws: Workspace,
    id_type: IdType = "id",
    start: Start = None,
    limit: Limit = 50,
    type: Type = None,
    metric: Metric = None,
    drafts: Drafts = None,
    start_ts: StartTs = None,
    end_ts: EndTs = None,
) -> Response:
    def load(session: Session) -> dict[str, Any]:
        person = lookup(session, ws.workspace_id, path_value(identifier), id_type)
        return queries.list_messages(
            session,
            ws.workspace_id,
            start=start,
            limit=limit,
            type=type,
            metric=metric,
            drafts=drafts,
            start_ts=start_ts,
            end_ts=end_ts,
            person_id=person.id,
        )

    return json_response(await runtime_of(request).db.read(load))

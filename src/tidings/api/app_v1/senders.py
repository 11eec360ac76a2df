"""App API: sender identities (``/v1/sender_identities``) — Customer.io's list, get and used-by, and
Tidings' create, change and delete. The logic is in :mod:`tidings.messaging.senders`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, Start, Workspace
from tidings.api.app_v1.messages import INT64_MAX
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import AppRoute, json_response
from tidings.messaging import senders

router = APIRouter(prefix="/v1/sender_identities", route_class=AppRoute, tags=["App API: sender identities"])

Id = Annotated[int, Path(ge=0, le=INT64_MAX)]
_SENDER = docs.json_body(
    docs.obj(
        {
            "name": docs.STRING,
            "email": docs.STRING,
            "template_type": {"enum": ["email"]},
            "hidden": {"type": "boolean"},
        },
        [],
    ),
    example={"name": "Cher Ami", "email": "news@example.com"},
)


@router.get("", summary="List sender identities")
async def list_senders(
    request: Request,
    ws: Workspace,
    limit: Annotated[int, Query(ge=1, le=senders.MAX_PAGE)] = 50,
    sort: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    start: Start = None,
    hidden: Annotated[bool, Query(description="Include hidden senders")] = False,
) -> Response:
    page = await runtime_of(request).db.read(
        lambda s: senders.list_senders(s, ws.workspace_id, limit=limit, sort=sort, start=start, hidden=hidden)
    )
    return json_response(page)


@router.post("", summary="Create a sender identity (Tidings)", openapi_extra=_SENDER)
async def create_sender(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    created = await runtime.db.write(lambda s: senders.create(s, ws.workspace_id, body, now=now))
    return json_response({"sender_identity": created})


@router.get("/{sender_id}", summary="One sender identity")
async def get_sender(sender_id: Id, request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: senders.view(senders.get(s, ws.workspace_id, sender_id))
    )
    return json_response({"sender_identity": found})


@router.put("/{sender_id}", summary="Change a sender identity (Tidings)", openapi_extra=_SENDER)
async def update_sender(sender_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    changed = await runtime.db.write(lambda s: senders.update(s, ws.workspace_id, sender_id, body, now=now))
    return json_response({"sender_identity": changed})


@router.delete("/{sender_id}", summary="Delete a sender identity nothing uses (Tidings)")
async def delete_sender(sender_id: Id, request: Request, ws: Workspace) -> Response:
    await runtime_of(request).db.write(lambda s: senders.delete(s, ws.workspace_id, sender_id))
    return json_response({})


@router.get("/{sender_id}/used_by", summary="What uses a sender identity")
async def used_by(sender_id: Id, request: Request, ws: Workspace) -> Response:
    users = await runtime_of(request).db.read(lambda s: senders.used_by(s, ws.workspace_id, sender_id))
    return json_response(users)

"""App API: reporting webhooks (Customer.io's ``/v1/reporting_webhooks``). Bodies and answers are the bare
webhook object; Tidings adds a read-only ``status`` (failing since, last status and error, last success,
posts waiting)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.app_v1.common import Workspace
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import AppRoute, json_response
from tidings.webhooks import service as webhooks

router = APIRouter(
    prefix="/v1/reporting_webhooks", route_class=AppRoute, tags=["App API: reporting webhooks"]
)

MAX_BODY = 64_000
_BOOLEAN = {"type": "boolean"}
_FIELDS: dict[str, Any] = {
    "name": docs.STRING,
    "endpoint": {
        "type": "string",
        "format": "uri",
        "description": "http or https URL the events are posted to",
    },
    "events": {
        "type": "array",
        "items": {"enum": sorted(webhooks.KNOWN_EVENTS)},
        "description": "<object_type>_<metric> names",
    },
    "disabled": _BOOLEAN,
    "full_resolution": {"type": "boolean", "description": "every open and click, not only the first"},
    "with_content": {"type": "boolean", "description": "the message body in _sent events"},
}
_CREATE_BODY = docs.json_body(docs.obj(_FIELDS, ["name", "endpoint", "events"]))
_UPDATE_BODY = docs.json_body(docs.obj(_FIELDS))


@router.get("", summary="List reporting webhooks")
async def list_webhooks(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(lambda s: webhooks.list_webhooks(s, ws.workspace_id))
    return json_response({"reporting_webhooks": rows})


@router.post("", summary="Create a reporting webhook", openapi_extra=_CREATE_BODY)
async def create_webhook(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    created = await runtime.db.write(lambda s: webhooks.create_webhook(s, ws.workspace_id, body, now=now))
    return json_response(created)


@router.get("/{webhook_id}", summary="A reporting webhook, with its delivery status")
async def get_webhook(webhook_id: int, request: Request, ws: Workspace) -> Response:
    view = await runtime_of(request).db.read(lambda s: webhooks.get_webhook(s, ws.workspace_id, webhook_id))
    return json_response(view)


@router.put(
    "/{webhook_id}",
    summary="Change a reporting webhook (the fields given); enabling it again sends what waited",
    openapi_extra=_UPDATE_BODY,
)
async def update_webhook(webhook_id: int, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    updated = await runtime.db.write(
        lambda s: webhooks.update_webhook(s, ws.workspace_id, webhook_id, body, now=now)
    )
    return json_response(updated)


@router.delete("/{webhook_id}", summary="Delete a reporting webhook and the posts waiting for it")
async def delete_webhook(webhook_id: int, request: Request, ws: Workspace) -> Response:
    await runtime_of(request).db.write(lambda s: webhooks.delete_webhook(s, ws.workspace_id, webhook_id))
    return json_response({})

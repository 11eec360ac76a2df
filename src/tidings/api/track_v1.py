"""Track API v1 (``/api/v1``): Customer.io's wire format in, domain calls out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.auth import optional_track_workspace, runtime_of, track_workspace
from tidings.api.body import read_object
from tidings.api.paths import path_value
from tidings.api.surfaces import TrackV1Route, TrackV1SingleErrorRoute, json_response, ok
from tidings.deliveries import service as deliveries
from tidings.errors import InvalidInput
from tidings.events import service as events
from tidings.people import service as people
from tidings.people.identifiers import Identifier, identifier_from_object, parse_path_identifier
from tidings.segments import service as segments
from tidings.workspaces.schemas import WorkspaceContext

router = APIRouter(prefix="/api/v1", route_class=TrackV1Route, tags=["Track API v1"])
Workspace = Annotated[WorkspaceContext, Depends(track_workspace)]
MaybeWorkspace = Annotated[WorkspaceContext | None, Depends(optional_track_workspace)]

# v1 bodies: an event's data may be 100 KB; leave room for the envelope.
MAX_BODY = 1_000_000


def path_identifier(raw: str, ws: WorkspaceContext) -> Identifier:
    return parse_path_identifier(path_value(raw), identify_by_email=ws.settings.identify_by_email)


@router.get("/accounts/region", summary="Region and workspace of the credentials")
async def region(request: Request, ws: Workspace) -> Response:
    settings = runtime_of(request).settings
    return json_response(
        {"url": settings.base_url, "region": settings.region, "environment_id": ws.workspace_id}
    )


@router.put(
    "/customers/{identifier}",
    summary="Add or update a person",
    openapi_extra=docs.json_body(
        docs.OBJECT, required=False, example={"email": "ana@example.com", "plan": "pro"}
    ),
)
async def identify(identifier: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY, allow_empty=True)
    ident = path_identifier(identifier, ws)
    now = runtime.clock.now_int()
    await runtime.db.write(people.Identify(ws, ident, body, now))
    return ok()


@router.delete("/customers/{identifier}", summary="Delete a person")
async def delete_person(identifier: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    ident = path_identifier(identifier, ws)
    await runtime.db.write(lambda s: people.delete_person(s, ws, ident))
    return ok()


@router.put(
    "/customers/{identifier}/devices",
    summary="Add or update a device",
    openapi_extra=docs.json_body(
        docs.obj(
            {
                "device": docs.obj(
                    {"id": docs.STRING, "platform": {"enum": ["ios", "android"]}}, ["id", "platform"]
                )
            },
            ["device"],
        )
    ),
)
async def add_device(identifier: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    device = people.parse_device(body.get("device"), token_key="id")
    ident = path_identifier(identifier, ws)
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: people.add_device(s, ws, ident, device, now=now))
    return ok()


@router.delete("/customers/{identifier}/devices/{device_id}", summary="Delete a device")
async def delete_device(identifier: str, device_id: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    ident = path_identifier(identifier, ws)
    token = path_value(device_id)
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: people.delete_device(s, ws, ident, token, now=now))
    return ok()


@router.post("/customers/{identifier}/suppress", summary="Delete a person and refuse their identifiers")
async def suppress(identifier: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    ident = path_identifier(identifier, ws)
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: people.suppress(s, ws, ident, now=now))
    return ok()


@router.post("/customers/{identifier}/unsuppress", summary="Accept a suppressed identifier again")
async def unsuppress(identifier: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    ident = path_identifier(identifier, ws)
    await runtime.db.write(lambda s: people.unsuppress(s, ws, ident))
    return ok()


@router.post(
    "/customers/{identifier}/events",
    summary="Track an event, page view or screen view for a person",
    openapi_extra=docs.json_body(docs.EVENT),
)
async def track_event(identifier: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    event = events.parse_event(body, ws.settings.limits)
    ident = path_identifier(identifier, ws)
    now = runtime.clock.now_int()
    await runtime.db.write(events.PersonEvent(ws, ident, event, now))
    return ok()


@router.post(
    "/events",
    summary="Track an anonymous event (with anonymous_id) or an invite event (without)",
    openapi_extra=docs.json_body(
        {**docs.EVENT, "properties": {**docs.EVENT["properties"], "anonymous_id": docs.STRING}}
    ),
)
async def track_anonymous(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    event = events.parse_event(body, ws.settings.limits)
    anonymous_id = body.get("anonymous_id")
    if anonymous_id is not None and not isinstance(anonymous_id, str):
        raise InvalidInput("anonymous_id must be a string", field="anonymous_id")
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: events.track_anonymous_event(s, ws, anonymous_id, event, now=now))
    return ok()


async def merge_customers(request: Request, ws: Workspace) -> Response:
    """Merge the secondary person into the primary (the secondary is deleted)."""
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    primary = identifier_from_object(body.get("primary"), field="primary")
    secondary = identifier_from_object(body.get("secondary"), field="secondary")
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: people.merge(s, ws, primary, secondary, now=now))
    return ok()


router.add_api_route(
    "/merge_customers",
    merge_customers,
    methods=["POST"],
    summary="Merge two people",
    route_class_override=TrackV1SingleErrorRoute,
    openapi_extra=docs.json_body(
        docs.obj({"primary": docs.IDENTIFIERS, "secondary": docs.IDENTIFIERS}, ["primary", "secondary"])
    ),
)

IdType = Annotated[str, Query(pattern="^(id|email|cio_id)$")]
IDS_BODY = docs.json_body(docs.obj({"ids": {"type": "array", "items": docs.STRING}}, ["ids"]))


@router.post(
    "/segments/{segment_id}/add_customers", summary="Add people to a manual segment", openapi_extra=IDS_BODY
)
async def add_to_segment(
    segment_id: int, request: Request, ws: Workspace, id_type: IdType = "id"
) -> Response:
    return await _segment_membership(segment_id, request, ws, id_type, add=True)


@router.post(
    "/segments/{segment_id}/remove_customers",
    summary="Remove people from a manual segment",
    openapi_extra=IDS_BODY,
)
async def remove_from_segment(
    segment_id: int, request: Request, ws: Workspace, id_type: IdType = "id"
) -> Response:
    return await _segment_membership(segment_id, request, ws, id_type, add=False)


async def _segment_membership(
    segment_id: int, request: Request, ws: WorkspaceContext, id_type: str, *, add: bool
) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    await runtime.db.write(
        lambda s: segments.change_membership(
            s, ws.workspace_id, segment_id, body, id_type=id_type, add=add, now=now, limits=ws.settings.limits
        )
    )
    return ok()


@router.post(
    "/forms/{form_id}/submit",
    summary="Submit a form",
    status_code=204,
    openapi_extra=docs.json_body(docs.obj({"data": docs.OBJECT}, ["data"])),
)
async def submit_form(form_id: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    form = path_value(form_id)
    await runtime.db.write(lambda s: events.submit_form(s, ws, form, body, now=now))
    return Response(status_code=204)


@router.post(
    "/metrics",
    summary="Report a delivery metric",
    openapi_extra=docs.json_body(
        docs.obj(
            {"delivery_id": docs.STRING, "metric": docs.STRING, "timestamp": docs.UNIX},
            ["delivery_id", "metric"],
        )
    ),
)
async def report_metric(request: Request, ws: MaybeWorkspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    workspace_id = ws.workspace_id if ws is not None else None
    now = runtime.clock.now_int()
    await runtime.db.write(
        lambda s: deliveries.report_metric(s, workspace_id, body, now=now, source="track_metrics")
    )
    return ok()


@router.post(
    "/push/events",
    summary="Report a push metric (legacy)",
    openapi_extra=docs.json_body(
        docs.obj(
            {"delivery_id": docs.STRING, "event": docs.STRING, "device_id": docs.STRING},
            ["delivery_id", "event"],
        )
    ),
)
async def report_push_event(request: Request, ws: MaybeWorkspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    workspace_id = ws.workspace_id if ws is not None else None
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: deliveries.report_push_event(s, workspace_id, body, now=now))
    return ok()

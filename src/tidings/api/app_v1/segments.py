"""App API: segments — manual ones as in Customer.io, data-driven ones (a ``conditions`` document) as
Tidings' extension in the same style."""

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
from tidings.segments import service as segments
from tidings.segments.service import MAX_MEMBERSHIP_PAGE

router = APIRouter(prefix="/v1/segments", route_class=AppRoute, tags=["App API: segments"])

_CONDITIONS = {
    "type": "object",
    "description": "A condition document (docs/segments.md); without it the segment is manual.",
}
_SEGMENT_BODY = docs.json_body(
    docs.obj(
        {
            "segment": docs.obj(
                {
                    "name": docs.STRING,
                    "description": docs.STRING,
                    "tags": {"type": "array", "items": docs.STRING},
                    "conditions": _CONDITIONS,
                },
                ["name"],
            )
        },
        ["segment"],
    )
)


@router.post(
    "", summary="Create a segment (manual, or data-driven with conditions)", openapi_extra=_SEGMENT_BODY
)
async def create_segment(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    created = await runtime.db.write(lambda s: segments.create_segment(s, ws.workspace_id, body, now=now))
    return json_response({"segment": created})


@router.put(
    "/{segment_id}", summary="Change a segment; new conditions rebuild it", openapi_extra=_SEGMENT_BODY
)
async def update_segment(segment_id: int, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    updated = await runtime.db.write(
        lambda s: segments.update_segment(s, ws.workspace_id, segment_id, body, now=now)
    )
    return json_response({"segment": updated})


@router.get("", summary="List segments")
async def list_segments(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(lambda s: segments.list_segments(s, ws.workspace_id))
    return json_response({"segments": rows})


@router.get("/{segment_id}", summary="A segment, with its build state and progress")
async def get_segment(segment_id: int, request: Request, ws: Workspace) -> Response:
    view = await runtime_of(request).db.read(
        lambda s: segments.segment_view(segments.get_segment(s, ws.workspace_id, segment_id))
    )
    return json_response({"segment": view})


@router.get("/{segment_id}/customer_count", summary="How many people are in a segment")
async def customer_count(segment_id: int, request: Request, ws: Workspace) -> Response:
    count = await runtime_of(request).db.read(
        lambda s: segments.customer_count(s, ws.workspace_id, segment_id)
    )
    return json_response({"count": count})


@router.get("/{segment_id}/membership", summary="The people in a segment, a page at a time")
async def membership(
    segment_id: int,
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=MAX_MEMBERSHIP_PAGE)] = 1000,
) -> Response:
    page: dict[str, Any] = await runtime_of(request).db.read(
        lambda s: segments.membership(s, ws.workspace_id, segment_id, start=start, limit=limit)
    )
    return json_response(page)


@router.get("/{segment_id}/used_by", summary="What uses a segment")
async def used_by(segment_id: int, request: Request, ws: Workspace) -> Response:
    users = await runtime_of(request).db.read(lambda s: segments.used_by(s, ws.workspace_id, segment_id))
    return json_response({"used_by": users})


@router.delete("/{segment_id}", summary="Delete a segment nothing uses")
async def delete_segment(segment_id: int, request: Request, ws: Workspace) -> Response:
    await runtime_of(request).db.write(lambda s: segments.delete_segment(s, ws.workspace_id, segment_id))
    return json_response({})

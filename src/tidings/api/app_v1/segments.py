"""App API: segments (manual segments in this release)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, Workspace
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import AppRoute, json_response
from tidings.segments import service as segments

router = APIRouter(prefix="/v1/segments", route_class=AppRoute, tags=["App API: segments"])


@router.post(
    "",
    summary="Create a manual segment",
    openapi_extra=docs.json_body(
        docs.obj(
            {"segment": docs.obj({"name": docs.STRING, "description": docs.STRING}, ["name"])}, ["segment"]
        )
    ),
)
async def create_segment(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    created = await runtime.db.write(lambda s: segments.create_manual(s, ws.workspace_id, body, now=now))
    return json_response({"segment": created})


@router.get("", summary="List segments")
async def list_segments(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(lambda s: segments.list_segments(s, ws.workspace_id))
    return json_response({"segments": rows})


@router.get("/{segment_id}", summary="A segment")
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


@router.delete("/{segment_id}", summary="Delete a manual segment")
async def delete_segment(segment_id: int, request: Request, ws: Workspace) -> Response:
    await runtime_of(request).db.write(lambda s: segments.delete_manual(s, ws.workspace_id, segment_id))
    return json_response({})

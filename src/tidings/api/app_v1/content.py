"""App API: snippets (Customer.io's ``/v1/snippets``) and email layouts (Tidings' ``/v1/layouts``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, Workspace
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.paths import path_value
from tidings.api.surfaces import AppRoute, json_response
from tidings.messaging import templates

router = APIRouter(route_class=AppRoute, tags=["App API: content"])

_SNIPPET = docs.json_body(docs.obj({"name": docs.STRING, "value": docs.STRING}, ["name", "value"]))
_LAYOUT = docs.json_body(docs.obj({"name": docs.STRING, "body": docs.STRING}, ["name", "body"]))


@router.get("/v1/snippets", summary="List snippets")
async def list_snippets(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(lambda s: templates.list_snippets(s, ws.workspace_id))
    return json_response({"snippets": rows})


async def _put_snippet(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    saved = await runtime.db.write(lambda s: templates.put_snippet(s, ws.workspace_id, body, now=now))
    return json_response({"snippet": saved})


@router.put("/v1/snippets", summary="Create or replace a snippet", openapi_extra=_SNIPPET)
async def put_snippet(request: Request, ws: Workspace) -> Response:
    return await _put_snippet(request, ws)


@router.post("/v1/snippets", summary="Create or replace a snippet", openapi_extra=_SNIPPET)
async def post_snippet(request: Request, ws: Workspace) -> Response:
    return await _put_snippet(request, ws)


@router.delete("/v1/snippets/{name}", summary="Delete a snippet")
async def delete_snippet(name: str, request: Request, ws: Workspace) -> Response:
    snippet = path_value(name)
    await runtime_of(request).db.write(lambda s: templates.delete_snippet(s, ws.workspace_id, snippet))
    return json_response({})


@router.get("/v1/layouts", summary="List email layouts (Tidings)")
async def list_layouts(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(lambda s: templates.list_layouts(s, ws.workspace_id))
    return json_response({"layouts": rows})


@router.post("/v1/layouts", summary="Create an email layout (Tidings)", openapi_extra=_LAYOUT)
async def create_layout(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    saved = await runtime.db.write(lambda s: templates.save_layout(s, ws.workspace_id, body, now=now))
    return json_response({"layout": saved})


@router.get("/v1/layouts/{layout_id}", summary="An email layout (Tidings)")
async def get_layout(layout_id: int, request: Request, ws: Workspace) -> Response:
    view = await runtime_of(request).db.read(
        lambda s: templates.layout_view(templates.get_layout(s, ws.workspace_id, layout_id))
    )
    return json_response({"layout": view})


@router.put("/v1/layouts/{layout_id}", summary="Change an email layout (Tidings)", openapi_extra=_LAYOUT)
async def update_layout(layout_id: int, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    saved = await runtime.db.write(
        lambda s: templates.save_layout(s, ws.workspace_id, body, now=now, layout_id=layout_id)
    )
    return json_response({"layout": saved})


@router.delete("/v1/layouts/{layout_id}", summary="Delete an email layout (Tidings)")
async def delete_layout(layout_id: int, request: Request, ws: Workspace) -> Response:
    await runtime_of(request).db.write(lambda s: templates.delete_layout(s, ws.workspace_id, layout_id))
    return json_response({})

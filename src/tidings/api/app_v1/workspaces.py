"""App API: workspaces the key can see (its own)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tidings.api.app_v1.common import Workspace
from tidings.api.auth import runtime_of
from tidings.api.surfaces import AppRoute, json_response
from tidings.workspaces import schema
from tidings.workspaces import service as workspaces

router = APIRouter(prefix="/v1", route_class=AppRoute, tags=["App API: workspaces"])


@router.get("/workspaces", summary="Workspaces this key belongs to, with counts")
async def list_workspaces(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(
        lambda s: workspaces.list_workspaces(s, workspace_id=ws.workspace_id)
    )
    return json_response({"workspaces": rows})


@router.get("/workspace_schema", summary="Attributes and events seen, with types and examples (Tidings)")
async def workspace_schema(request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(lambda s: schema.describe(s, ws.workspace_id))
    return json_response(found)

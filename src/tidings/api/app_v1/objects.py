"""App API: object types and objects."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from tidings.api.app_v1.common import Start, Workspace
from tidings.api.auth import runtime_of
from tidings.api.paths import path_value
from tidings.api.surfaces import AppRoute, json_response
from tidings.objects import queries

router = APIRouter(prefix="/v1", route_class=AppRoute, tags=["App API: objects"])
ObjectIdType = Annotated[str, Query(pattern="^(object_id|cio_object_id)$")]


@router.get("/object_types", summary="Object types in the workspace")
async def object_types(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(lambda s: queries.object_types(s, ws.workspace_id))
    return json_response({"types": rows})


@router.get("/objects/{type_id}/{object_id}/attributes", summary="An object's attributes")
async def object_attributes(
    type_id: str, object_id: str, request: Request, ws: Workspace, id_type: ObjectIdType = "object_id"
) -> Response:
    def load(session: Session) -> dict[str, Any]:
        return queries.object_view(
            queries.lookup_object(session, ws.workspace_id, type_id, path_value(object_id), id_type)
        )

    return json_response(await runtime_of(request).db.read(load))


@router.get("/objects/{type_id}/{object_id}/relationships", summary="People related to an object")
async def object_relationships(
    type_id: str,
    object_id: str,
    request: Request,
    ws: Workspace,
    id_type: ObjectIdType = "object_id",
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    def load(session: Session) -> dict[str, Any]:
        obj = queries.lookup_object(session, ws.workspace_id, type_id, path_value(object_id), id_type)
        return queries.object_relationships(session, obj, start=start, limit=limit)

    return json_response(await runtime_of(request).db.read(load))

"""Track API v2 (``/api/v2``): one entity, or a batch of them, each a person, object or delivery operation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.auth import runtime_of, track_workspace
from tidings.api.body import read_object
from tidings.api.surfaces import TrackV2Route, json_response, ok, track_v2_errors
from tidings.entities import service as entities
from tidings.errors import InvalidInput
from tidings.workspaces.schemas import WorkspaceContext

router = APIRouter(prefix="/api/v2", route_class=TrackV2Route, tags=["Track API v2"])
Workspace = Annotated[WorkspaceContext, Depends(track_workspace)]

ENTITY = docs.obj(
    {
        "type": {"enum": list(entities.PREPARERS)},
        "action": {"enum": entities.ACTIONS},
        "identifiers": {
            **docs.OBJECT,
            "description": "person: one of id, email, cio_id; object: object_type_id and object_id, or "
            "cio_object_id; delivery: id",
        },
        "attributes": docs.OBJECT,
        "timestamp": docs.UNIX,
        "cio_relationships": {"type": "array", "items": docs.OBJECT},
        "name": docs.STRING,
        "id": docs.STRING,
        "device": docs.obj(
            {
                "token": docs.STRING,
                "platform": {"enum": ["ios", "android"]},
                "last_used": docs.UNIX,
                "attributes": docs.OBJECT,
            },
            ["token"],
        ),
        "primary": docs.IDENTIFIERS,
        "secondary": docs.IDENTIFIERS,
    },
    ["type", "action"],
)
IDENTIFY_EXAMPLE = {
    "type": "person",
    "identifiers": {"id": "42"},
    "action": "identify",
    "attributes": {"email": "ana@example.com", "plan": "pro"},
}


@router.post(
    "/entity",
    summary="Create, update or delete one person, object or delivery",
    openapi_extra=docs.json_body(ENTITY, example=IDENTIFY_EXAMPLE),
)
async def entity(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, ws.settings.limits.max_entity_request_bytes)
    operation = entities.prepare(body, ws, now=runtime.clock.now_int())
    await runtime.db.write(operation)
    return ok()


@router.post(
    "/batch",
    summary="Apply many entity operations; rejected items are listed with 207, the others are kept",
    responses={207: {"description": "Some items were rejected (batch_index); all others were accepted"}},
    openapi_extra=docs.json_body(
        docs.obj({"batch": {"type": "array", "items": ENTITY}}, ["batch"]),
        example={"batch": [IDENTIFY_EXAMPLE]},
    ),
)
async def batch(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, ws.settings.limits.max_batch_request_bytes)
    items = body.get("batch")
    if not isinstance(items, list):
        raise InvalidInput("batch must be a list of entities", field="batch")
    prepared = entities.prepare_batch(items, ws, now=runtime.clock.now_int())
    failures = list(prepared.errors)
    if prepared.operations:
        failures += await runtime.db.write(lambda s: entities.apply_batch(s, prepared.operations))
    if not failures:
        return ok()
    return json_response(
        {"errors": [_batch_error(failure) for failure in sorted(failures, key=lambda f: f.index)]},
        status_code=207,
    )


def _batch_error(failure: entities.ItemError) -> dict[str, Any]:
    error: dict[str, Any] = track_v2_errors(failure.error)["errors"][0]
    return {"batch_index": failure.index, **error}

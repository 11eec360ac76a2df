"""App API: people."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, IdType, Start, Workspace
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.paths import path_value
from tidings.api.surfaces import AppRoute, json_response
from tidings.campaigns import service as campaigns
from tidings.errors import InvalidInput
from tidings.people import queries
from tidings.segments import search
from tidings.segments import service as segments
from tidings.segments.search import MAX_SEARCH_PAGE

router = APIRouter(prefix="/v1/customers", route_class=AppRoute, tags=["App API: customers"])


@router.get("", summary="Find people by email")
async def by_email(request: Request, ws: Workspace, email: Annotated[str, Query()]) -> Response:
    rows = await runtime_of(request).db.read(lambda s: queries.find_by_email(s, ws.workspace_id, email))
    return json_response({"results": rows})


@router.post(
    "",
    summary="Search people with a filter (Customer.io's grammar plus Tidings' segment conditions)",
    openapi_extra=docs.json_body(
        docs.obj({"filter": {"type": "object", "description": "docs/segments.md"}}, ["filter"])
    ),
)
async def search_people(
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_PAGE)] = 50,
) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    page = await runtime.db.read(
        lambda s: search.search(s, ws.workspace_id, body, start=start, limit=limit, now=now)
    )
    return json_response(page)


@router.get("/{identifier}/segments", summary="The segments a person is in")
async def person_segments(
    identifier: str, request: Request, ws: Workspace, id_type: IdType = "id"
) -> Response:
    def load(session: Session) -> dict[str, Any]:
        person = queries.lookup(session, ws.workspace_id, path_value(identifier), id_type)
        return {"segments": segments.person_segments(session, ws.workspace_id, person.id)}

    return json_response(await runtime_of(request).db.read(load))


@router.get("/{identifier}/attributes", summary="A person's attributes, identifiers and devices")
async def attributes(identifier: str, request: Request, ws: Workspace, id_type: IdType = "id") -> Response:
    def load(session: Session) -> dict[str, Any]:
        person = queries.lookup(session, ws.workspace_id, path_value(identifier), id_type)
        return {"customer": queries.customer_view(session, person)}

    return json_response(await runtime_of(request).db.read(load))


@router.post(
    "/attributes",
    summary="Attributes of up to 100 people",
    openapi_extra=docs.json_body(
        docs.obj({"ids": {"type": "array", "items": docs.STRING, "maxItems": 100}}, ["ids"])
    ),
)
async def attributes_many(request: Request, ws: Workspace, id_type: IdType = "id") -> Response:
    body = await read_object(request, MAX_BODY)
    ids = body.get("ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100 or not all(isinstance(i, str) for i in ids):
        raise InvalidInput("ids must be a list of 1 to 100 strings", field="ids")
    rows = await runtime_of(request).db.read(
        lambda s: queries.attributes_of_many(s, ws.workspace_id, ids, id_type)
    )
    return json_response({"customers": rows})


@router.get("/{identifier}/activities", summary="A person's activity log, newest first")
async def activities(
    identifier: str,
    request: Request,
    ws: Workspace,
    id_type: IdType = "id",
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    type: Annotated[str | None, Query()] = None,
    name: Annotated[str | None, Query()] = None,
) -> Response:
    def load(session: Session) -> dict[str, Any]:
        person = queries.lookup(session, ws.workspace_id, path_value(identifier), id_type)
        return queries.activities(session, person, start=start, limit=limit, type_=type, name=name)

    return json_response(await runtime_of(request).db.read(load))


@router.get("/{identifier}/journeys", summary="A person's journeys with their logs, newest first (Tidings)")
async def journeys(
    identifier: str,
    request: Request,
    ws: Workspace,
    id_type: IdType = "id",
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response:

    def load(session: Session) -> dict[str, Any]:
        person = queries.lookup(session, ws.workspace_id, path_value(identifier), id_type)
        return campaigns.list_journeys(
            session, ws.workspace_id, person_id=person.id, start=start, limit=limit, with_steps=True
        )

    return json_response(await runtime_of(request).db.read(load))


@router.get("/{identifier}/relationships", summary="Objects a person is related to")
async def relationships(
    identifier: str,
    request: Request,
    ws: Workspace,
    id_type: IdType = "id",
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    def load(session: Session) -> dict[str, Any]:
        person = queries.lookup(session, ws.workspace_id, path_value(identifier), id_type)
        return queries.relationships(session, person, start=start, limit=limit)

    return json_response(await runtime_of(request).db.read(load))

"""``POST /unsubscribe/{delivery_id}``: no credentials; the delivery id is the capability."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import TrackV1Route, ok
from tidings.deliveries import service as deliveries

router = APIRouter(route_class=TrackV1Route, tags=["Track API v1"])


@router.post(
    "/unsubscribe/{delivery_id}",
    summary="Unsubscribe the person a delivery went to",
    openapi_extra=docs.json_body(docs.obj({"unsubscribe": {"type": "boolean"}}, ["unsubscribe"])),
)
async def unsubscribe(delivery_id: str, request: Request) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, 10_000)
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: deliveries.unsubscribe(s, delivery_id, body, now=now))
    return ok()

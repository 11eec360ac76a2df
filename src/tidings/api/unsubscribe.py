"""``POST /unsubscribe/{delivery_id}``: no credentials; the delivery id is the capability."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.auth import runtime_of
from tidings.api.body import parse_json, read_bytes
from tidings.api.paths import path_value
from tidings.api.surfaces import TrackV1Route, ok
from tidings.deliveries import service as deliveries

router = APIRouter(route_class=TrackV1Route, tags=["Track API v1"])


@router.post(
    "/unsubscribe/{delivery_id}",
    summary="Unsubscribe the person a delivery went to",
    openapi_extra=docs.json_body(docs.obj({"unsubscribe": {"type": "boolean"}}), required=False),
)
async def unsubscribe(delivery_id: str, request: Request) -> Response:
    delivery_id = path_value(delivery_id)
    runtime = runtime_of(request)
    raw = await read_bytes(request, 10_000)
    # RFC 8058 one-click unsubscribe posts a form body ("List-Unsubscribe=One-Click"), not JSON.
    is_json = "json" in request.headers.get("content-type", "json")
    body = parse_json(raw, empty={}) if is_json else {}
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: deliveries.unsubscribe(s, delivery_id, body, now=now))
    return ok()

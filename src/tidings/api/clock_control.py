"""``POST /_tidings/clock``: move the server's clock forward (only with ``TIDINGS_CLOCK_CONTROL=true``).

Tests and demos use it to let time windows pass without waiting: the API, the worker and the scheduler of
this process share one clock. Nothing else ever moves backwards or forwards through it.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import AppRoute, json_response
from tidings.errors import InvalidInput

router = APIRouter(prefix="/_tidings", route_class=AppRoute, tags=["Operations"])


@router.post("/clock", summary="Move this process's clock forward by `advance` seconds (test aid)")
async def advance_clock(request: Request) -> Response:
    body = await read_object(request, 10_000)
    seconds = body.get("advance", 0)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= 10 * 365 * 86400
    ):
        raise InvalidInput("advance must be a number of seconds between 0 and ten years", field="advance")
    clock = runtime_of(request).clock
    clock.advance(seconds)
    return json_response({"now": clock.now_int()})

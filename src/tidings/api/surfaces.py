"""Each HTTP surface speaks its own error envelope (Customer.io's, per endpoint). A route class per
surface turns domain errors into that envelope, so handlers stay free of error formatting."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from tidings.db.database import DRY_RUN
from tidings.errors import InvalidInput, RateLimited, TidingsError

JSON_TYPE = "application/json; charset=utf-8"
Renderer = Callable[[TidingsError], Any]


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body) + b"\n", status_code=status_code, media_type=JSON_TYPE, headers=headers
    )


def ok() -> Response:
    """Customer.io's Track success: 200, ``{}`` and a newline."""
    return Response(b"{}\n", media_type=JSON_TYPE)


def track_v1_errors(exc: TidingsError) -> Any:
    return {"meta": {"errors": [exc.message]}}


def track_v1_error(exc: TidingsError) -> Any:
    return {"meta": {"error": exc.message}}


def track_v2_errors(exc: TidingsError) -> Any:
    return {"errors": [{"reason": exc.name, "field": exc.field or "", "message": exc.message}]}


def app_errors(exc: TidingsError) -> Any:
    return {"errors": [{"detail": exc.message, "status": str(exc.status_code), "code": exc.name}]}


def pipelines_errors(exc: TidingsError) -> Any:
    # cdp-analytics-python reads {"code", "message"} from a non-200 answer.
    return {"code": exc.name, "message": exc.message}


def render_error(exc: TidingsError, renderer: Renderer) -> Response:
    if isinstance(exc, RateLimited):
        # Rate limits answer in the App API envelope on every surface, as Customer.io does.
        return json_response(
            {"errors": [{"detail": exc.message, "status": "429"}]},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )
    headers = {"WWW-Authenticate": 'Basic realm="tidings"'} if exc.status_code == 401 else None
    return json_response(renderer(exc), status_code=exc.status_code, headers=headers)


def validation_message(exc: RequestValidationError) -> InvalidInput:
    first = exc.errors()[0] if exc.errors() else {}
    location = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body"))
    return InvalidInput(f"{location}: {first.get('msg', 'invalid')}".strip(": "), field=location or None)


def surface_route(renderer: Renderer) -> type[APIRoute]:
    class SurfaceRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    response = await handler(request)
                    if DRY_RUN.get():
                        # Said on the answer, so nobody mistakes a rehearsal for a change.
                        response.headers["X-Tidings-Dry-Run"] = "true"
                    return response
                except TidingsError as exc:
                    return render_error(exc, renderer)
                except RequestValidationError as exc:
                    return render_error(validation_message(exc), renderer)

            return guarded

    return SurfaceRoute


TrackV1Route = surface_route(track_v1_errors)
TrackV1SingleErrorRoute = surface_route(track_v1_error)
TrackV2Route = surface_route(track_v2_errors)
AppRoute = surface_route(app_errors)

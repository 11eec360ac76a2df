"""Each HTTP surface speaks its own error envelope (Customer.io's, per endpoint). A route class per
surface turns domain errors into that envelope, so handlers stay free of error formatting."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.telemetry import get_telemetry_data
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


Handler = Callable[[Request], Awaitable[Response]]


# What a dependant may declare that the direct call would not provide.
_PARSED = (
    "query_params",
    "header_params",
    "cookie_params",
    "body_params",
    "response_param_name",
    "background_tasks_param_name",
    "security_scopes_param_name",
    "http_connection_param_name",
    "websocket_param_name",
)


def _takes_request_only(dependant: Dependant) -> bool:
    """A dependency that is an ``async def f(request)`` and nothing more (the credential checks)."""
    return (
        dependant.call is not None
        and inspect.iscoroutinefunction(dependant.call)
        and dependant.request_param_name is not None
        and not dependant.path_params
        and not dependant.dependencies
        and not any(getattr(dependant, name) for name in _PARSED)
    )


def lean_handler(route: APIRoute, general: Handler) -> Handler:
    """Call the endpoint directly when FastAPI would only pass it plain ``str`` path parameters, the
    request and credential dependencies, and it returns a ``Response`` as it is; else ``general``.
    """
    return direct_call(route, general) or general


def direct_call(route: APIRoute, general: Handler) -> Handler | None:
    """The endpoint called directly (see :func:`lean_handler`), or None when it needs FastAPI's handler.

    That is every ingestion route. FastAPI's general handler (dependency solving, body and response
    models) cost about a fifth of the event loop's time per Track v1 request, for nothing these routes
    use; the route keeps its declared signature, so the OpenAPI document is unchanged. Anything else
    (query, header or body parameters, typed path parameters, other dependencies) goes through
    FastAPI, as does every request while OpenTelemetry is on (its per-operation spans are FastAPI's).
    ``app.dependency_overrides`` does not reach the direct call; nothing uses it."""
    dependant = route.dependant
    endpoint = dependant.call
    if (
        endpoint is None
        or not inspect.iscoroutinefunction(endpoint)
        or any(getattr(dependant, name) for name in _PARSED)
        or not all(_takes_request_only(dependency) for dependency in dependant.dependencies)
        or any(
            field.field_info.annotation is not str or field.field_info.metadata or field.alias != field.name
            for field in dependant.path_params
        )
    ):
        return None
    returns = get_typed_return_annotation(endpoint)
    if not (inspect.isclass(returns) and issubclass(returns, Response)):
        return None
    path_names = [field.name for field in dependant.path_params]
    dependencies: list[tuple[str, Callable[[Request], Awaitable[Any]]]] = []
    for dependency in dependant.dependencies:
        if dependency.name is None or dependency.call is None:
            return None
        dependencies.append((dependency.name, dependency.call))
    request_name = dependant.request_param_name

    async def handler(request: Request) -> Response:
        if get_telemetry_data() is not None:
            return await general(request)
        params = request.path_params
        values: dict[str, Any] = {name: params[name] for name in path_names}
        for name, call in dependencies:
            values[name] = await call(request)
        if request_name is not None:
            values[request_name] = request
        response: Response = await endpoint(**values)
        return response

    return handler


def surface_route(renderer: Renderer) -> type[APIRoute]:
    class SurfaceRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            return self._guarded(lean_handler(self, super().get_route_handler()))

        def fast_lane_handler(self) -> Handler | None:
            """What :mod:`tidings.api.fast_lane` may call for this route: the direct call with this
            surface's error envelope, or None when the route needs FastAPI's general handler."""
            direct = direct_call(self, super().get_route_handler())
            return None if direct is None else self._guarded(direct)

        @staticmethod
        def _guarded(handler: Handler) -> Callable[[Request], Coroutine[Any, Any, Response]]:
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

"""Which routes skip FastAPI's general request handler (tidings.api.surfaces.lean_handler).

The ingestion routes must take the direct call: it is what B1 and B2 measure, and a new parameter on one
of them would silently send it back through dependency solving. Routes with parameters FastAPI has to
parse or validate (query strings, typed path parameters) must keep FastAPI's handler, and so keep its
validation errors. Behaviour over HTTP (auth, envelopes, dry runs) is tested with the surfaces."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import pipelines, track_v1, track_v2
from tidings.api.app_v1 import segments
from tidings.api.surfaces import lean_handler


async def _general(request: Request) -> Response:
    raise AssertionError("only compared by identity")


def _is_lean(router_routes: list[object], method: str, path: str) -> bool:
    for route in router_routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            handler: Callable[[Request], Awaitable[Response]] = lean_handler(route, _general)
            return handler is not _general
    raise LookupError(f"{method} {path}")


@pytest.mark.parametrize(
    ("routes", "method", "path"),
    [
        (track_v1.router.routes, "PUT", "/api/v1/customers/{identifier}"),
        (track_v1.router.routes, "POST", "/api/v1/customers/{identifier}/events"),
        (track_v1.router.routes, "POST", "/api/v1/events"),
        (track_v1.router.routes, "DELETE", "/api/v1/customers/{identifier}"),
        (track_v2.router.routes, "POST", "/api/v2/entity"),
        (track_v2.router.routes, "POST", "/api/v2/batch"),
        (pipelines.router.routes, "POST", "/v1/identify"),
        (pipelines.router.routes, "POST", "/v1/track"),
        (pipelines.router.routes, "POST", "/v1/batch"),
    ],
)
def test_ingestion_routes_are_called_directly(routes: list[object], method: str, path: str) -> None:
    assert _is_lean(routes, method, path)


@pytest.mark.parametrize(
    ("routes", "method", "path"),
    [
        # An int path parameter: FastAPI converts it and answers a bad one with its validation error.
        (segments.router.routes, "GET", "/v1/segments/{segment_id}"),
        # A query parameter with a pattern (and an int path parameter).
        (track_v1.router.routes, "POST", "/api/v1/segments/{segment_id}/add_customers"),
    ],
)
def test_routes_with_parameters_to_parse_keep_fastapis_handler(
    routes: list[object], method: str, path: str
) -> None:
    assert not _is_lean(routes, method, path)

"""Route lookup that skips routers a path cannot be under.

FastAPI (since 0.137) keeps each ``include_router`` as one node of ``app.routes`` and, to find a route,
tries every route of every earlier router in turn, each try costing about a microsecond, and then does it
again to dispatch. With Tidings' ~200 route paths a request for a late route spent 0.3 to 0.5 ms before its
handler ran (measured: ``GET /healthz`` 373 µs, ``POST /v1/batch`` 296 µs of matching alone), which was
most of a no-op request's cost and a large part of an App API call's. Upstream has the same fix proposed
(fastapi/fastapi#16159); until it lands, :func:`index_routes` wraps each included router so that it is
tried only when the path starts with the literal part of one of its routes' paths. That is a necessary
condition for any of them to match, so which route answers (and 404 / 405 / slash redirects) is
unchanged.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import _IncludedRouter
from starlette._utils import get_route_path
from starlette.routing import Match
from starlette.types import Scope


class _IndexedRouter(_IncludedRouter):
    """An included router tried only for paths that start with one of its routes' literal prefixes."""

    literal_prefixes: tuple[str, ...] = ("",)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if not get_route_path(scope).startswith(self.literal_prefixes):
            return Match.NONE, {}
        return super().matches(scope)


def literal_prefix(path: str) -> str:
    """The part of a route path before its first parameter."""
    return path.split("{", 1)[0]


def _indexed(route: _IncludedRouter) -> _IndexedRouter:
    indexed = _IndexedRouter(original_router=route.original_router, include_context=route.include_context)
    prefixes = {literal_prefix(_path_of(context)) for context in indexed.effective_route_contexts()}
    # A prefix that another one starts with adds nothing to the test.
    indexed.literal_prefixes = tuple(
        sorted(p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes))
    )
    return indexed


def _path_of(context: object) -> str:
    starlette_route = getattr(context, "starlette_route", None)
    path = getattr(starlette_route, "path", None) or getattr(context, "path_format", None)
    # Anything whose path cannot be read keeps its router always tried.
    return path if isinstance(path, str) else ""


def index_routes(app: FastAPI) -> None:
    """Index every router included in ``app``; call once every route is registered."""
    app.router.routes[:] = [
        _indexed(route) if type(route) is _IncludedRouter else route for route in app.router.routes
    ]

"""The route index (tidings.api.route_index) must pick exactly the route FastAPI's own lookup picks: for
every route of the app, at a path made from its template, with its methods and others, and for paths no
route serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import _IncludedRouter
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from tidings.api.route_index import literal_prefix
from tidings.app import create_app
from tidings.config import Settings
from tidings.runtime import Runtime

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    path: Path = tmp_path_factory.mktemp("route-index") / "tidings.db"
    settings = Settings(database_url=f"sqlite:///{path}", clock_control=True)
    return create_app(Runtime.from_settings(settings))


def _unindexed(routes: list[BaseRoute]) -> list[BaseRoute]:
    return [
        _IncludedRouter(original_router=route.original_router, include_context=route.include_context)
        if isinstance(route, _IncludedRouter)
        else route
        for route in routes
    ]


def _lookup(routes: list[BaseRoute], method: str, path: str) -> tuple[str, object]:
    """What Starlette's router loop selects: the first full match, else the first partial one."""
    scope: Scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    partial: object = None
    for route in routes:
        match, child = route.matches(dict(scope))
        if match == Match.FULL:
            return "full", (route.original_router if isinstance(route, _IncludedRouter) else route, child)
        if match == Match.PARTIAL and partial is None:
            partial = route.original_router if isinstance(route, _IncludedRouter) else route
    return ("partial", partial) if partial is not None else ("none", None)


def _route_paths(app: FastAPI) -> list[str]:
    paths: list[str] = []
    for route in app.router.routes:
        contexts = route.effective_route_contexts() if isinstance(route, _IncludedRouter) else [route]
        for context in contexts:
            starlette_route = getattr(context, "starlette_route", None)
            path = getattr(starlette_route, "path", None) or getattr(context, "path_format", None)
            if isinstance(path, str):
                paths.append(path)
    return paths


def _concrete(template: str) -> str:
    # Path parameters become plain values; ``:path`` ones get a slash inside, as clients send them.
    return re.sub(r"\{[^}:]+:path\}", "a/b", re.sub(r"\{[^}:]+\}", "x1", template))


def test_every_route_is_found_as_fastapi_finds_it(app: FastAPI) -> None:
    indexed = list(app.router.routes)
    plain = _unindexed(indexed)
    templates = _route_paths(app)
    assert len(templates) > 150  # the whole app, not a part of it
    paths = {_concrete(t) for t in templates}
    paths |= {path + "/" for path in list(paths)} | {path.rstrip("/") + "x" for path in list(paths)}
    paths |= {"/", "/v1", "/v1/", "/api", "/api/v1/", "/v1/unknown", "/nothing/here", "/api/v1/customers"}
    checked = 0
    for path in sorted(paths):
        for method in METHODS:
            assert _lookup(indexed, method, path) == _lookup(plain, method, path), (method, path)
            checked += 1
    assert checked > 1000


def test_routers_are_skipped_only_for_paths_outside_their_routes(app: FastAPI) -> None:
    prefixes = [
        route.literal_prefixes  # type: ignore[attr-defined]
        for route in app.router.routes
        if isinstance(route, _IncludedRouter)
    ]
    # Every included router is indexed, and by the routes it holds (not by a catch-all).
    assert prefixes
    assert all(prefix and "" not in prefix for prefix in prefixes)
    assert literal_prefix("/v1/segments/{segment_id}/membership") == "/v1/segments/"
    assert literal_prefix("/v1/segments") == "/v1/segments"

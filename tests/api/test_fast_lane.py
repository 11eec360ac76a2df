"""The fast lane (tidings.api.fast_lane) must only ever take a request to the route the router would
have chosen: checked for every route of the app at a path made from its template, with every method.
The ingestion routes must be in it (B1 and B2 measure them); a route that an earlier one may shadow,
and every route while OpenTelemetry is on, must not. Over HTTP the whole suite goes through it."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, _IncludedRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from tests.api.test_route_index import METHODS, _concrete, _route_paths
from tidings.api.fast_lane import FastLane, _Lane, _may_overlap, build_lanes
from tidings.api.route_index import index_routes
from tidings.api.surfaces import TrackV1Route
from tidings.app import create_app
from tidings.config import Settings
from tidings.runtime import Runtime


def _app(path: Path, *, clock_control: bool = False, opentelemetry: bool = False) -> FastAPI:
    settings = Settings(
        database_url=f"sqlite:///{path}", clock_control=clock_control, opentelemetry=opentelemetry
    )
    return create_app(Runtime.from_settings(settings))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return _app(tmp_path_factory.mktemp("fast-lane") / "tidings.db", clock_control=True)


def _scope(method: str, path: str) -> Scope:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def _routed(routes: list[BaseRoute], method: str, path: str) -> BaseRoute | None:
    """The route Starlette's router runs for a full match, looking inside included routers."""
    for route in routes:
        match, _ = route.matches(_scope(method, path))
        if match != Match.FULL:
            continue
        if isinstance(route, _IncludedRouter):
            return route._match(_scope(method, path))[2]
        return route
    return None


def _laned(lanes: list[_Lane], method: str, path: str) -> APIRoute | None:
    for lane in lanes:
        if method in (lane.route.methods or ()) and lane.regex.match(path):
            return lane.route
    return None


def test_the_lane_takes_a_request_only_to_the_route_the_router_would_run(app: FastAPI) -> None:
    lanes = build_lanes(app)
    paths = {_concrete(t) for t in _route_paths(app)}
    paths |= {path + "/" for path in list(paths)}
    taken = 0
    for path in sorted(paths):
        for method in METHODS:
            laned = _laned(lanes, method, path)
            if laned is not None:
                assert laned is _routed(app.router.routes, method, path), (method, path)
                taken += 1
    assert taken > 50


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v1/customers/{identifier}"),
        ("POST", "/api/v1/customers/{identifier}/events"),
        ("POST", "/api/v1/events"),
        ("POST", "/api/v2/entity"),
        ("POST", "/api/v2/batch"),
        ("POST", "/v1/identify"),
        ("POST", "/v1/track"),
        ("POST", "/v1/batch"),
        ("POST", "/v1/send/email"),
        # The benchmarks' no-op baseline takes the same path as what they measure against it.
        ("GET", "/healthz"),
    ],
)
def test_the_ingestion_routes_and_the_no_op_are_in_the_lane(app: FastAPI, method: str, path: str) -> None:
    assert any(lane.route.path == path and method in (lane.route.methods or ()) for lane in build_lanes(app))


def test_with_opentelemetry_on_there_is_no_lane(tmp_path: Path) -> None:
    on = _app(tmp_path / "otel.db", opentelemetry=True)
    off = _app(tmp_path / "plain.db")

    def laned(app: FastAPI) -> bool:
        return any(getattr(middleware, "cls", None) is FastLane for middleware in app.user_middleware)

    assert not laned(on)
    assert laned(off)


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("/things/{name}", "/things/special", True),
        ("/things/{name}", "/things/{name}/parts", False),
        ("/things/special", "/things/other", False),
        ("/files/{rest:path}", "/files/a/b/c", True),
        ("/mcp/{rest:path}", "/v1/batch", False),
        ("/{any:path}", "/v1/batch", True),
        ("/v1/{kind}/{id}", "/v1/send/email", True),
    ],
)
def test_templates_that_may_match_one_path(first: str, second: str, overlap: bool) -> None:
    assert _may_overlap(first, second) is overlap
    assert _may_overlap(second, first) is overlap


def _tiny_app(*, special_first: bool) -> FastAPI:
    """Two lean routes where one shadows the other's paths, in either order."""
    special = APIRouter(route_class=TrackV1Route)
    named = APIRouter(route_class=TrackV1Route)

    @special.get("/things/special")
    async def special_thing(request: Request) -> Response:
        return Response(b"special")

    @named.get("/things/{name}")
    async def named_thing(name: str, request: Request) -> Response:
        return Response(f"named {name}".encode())

    app = FastAPI()
    for router in (special, named) if special_first else (named, special):
        app.include_router(router)
    index_routes(app)
    app.add_middleware(FastLane, lanes=build_lanes(app))
    return app


@pytest.fixture(params=[True, False], ids=["special-first", "named-first"])
def tiny(request: pytest.FixtureRequest) -> tuple[bool, FastAPI]:
    return request.param, _tiny_app(special_first=request.param)


def test_a_shadowed_route_stays_with_the_router(tiny: tuple[bool, FastAPI]) -> None:
    special_first, app = tiny
    laned = {lane.route.path for lane in build_lanes(app)}
    # The route registered second may share a path with the first, so only the first is laned.
    assert laned == ({"/things/special"} if special_first else {"/things/{name}"})

    async def ask() -> tuple[httpx.Response, ...]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (
                await client.get("/things/special"),
                await client.get("/things/other"),
                await client.post("/things/other"),
            )

    special, other, wrong_method = anyio.run(ask)
    assert special.text == ("special" if special_first else "named special")
    assert other.text == "named other"
    assert wrong_method.status_code == 405

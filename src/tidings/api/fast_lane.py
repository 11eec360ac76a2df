"""A direct path from the ASGI entry to the routes that need nothing of the framework on the way.

Between the outermost middleware and a Track v1 handler, Starlette and FastAPI spent about 27 % of the
event loop's samples on B1's mix: the exception and exit-stack middlewares, matching the path against
every route of the routers before the right one (twice: once to find the router, once to dispatch),
and FastAPI's request wrapper. The routes :func:`tidings.api.surfaces.direct_call` can call directly
(plain ``str`` path parameters, the request, credential checks; a ``Response`` returned as it is, every
ingestion route among them) need none of it: their surface turns domain errors into its own envelope,
and anything unexpected still reaches Starlette's outermost middleware, which answers 500.

:class:`FastLane` sits inside that middleware and takes a request only when the route it would run is
the one the router would have chosen: a route joins the lane only if no route registered before it
could match a path it matches with a method it accepts (path templates compared segment by segment;
parameters, mounts and ``path`` parameters taken to match anything). Every other request goes on to
the framework unchanged. It is off while OpenTelemetry is on, whose spans are FastAPI's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, _IncludedRouter
from starlette._utils import get_route_path
from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


@dataclass(frozen=True)
class _Candidate:
    """A route as the router tries it, in order: its path template, the methods it answers (None: any)
    and, for a route the lane may call, how."""

    path: str
    methods: frozenset[str] | None
    route: BaseRoute
    regex: re.Pattern[str] | None = None
    convertors: dict[str, Convertor[Any]] | None = None
    handler: Handler | None = None


@dataclass(frozen=True)
class _Lane:
    prefix: str
    regex: re.Pattern[str]
    convertors: dict[str, Convertor[Any]]
    route: APIRoute
    handler: Handler


def _candidates(routes: Iterable[BaseRoute]) -> Iterator[_Candidate]:
    for route in routes:
        if isinstance(route, _IncludedRouter):
            context = route.include_context
            plain = not context.prefix and not context.dependencies and context.max_body_size is None
            for effective in route.effective_route_contexts():
                original = effective.original_route
                direct = getattr(original, "fast_lane_handler", None)
                handler = direct() if plain and callable(direct) else None
                path = effective.path_format or getattr(original, "path_format", "") or "/{any:path}"
                methods = frozenset(effective.methods) if effective.methods else None
                yield _Candidate(
                    path, methods, original, effective.path_regex, effective.param_convertors, handler
                )
        elif isinstance(route, Mount):
            yield _Candidate(route.path + "/{rest:path}", None, route)
        elif isinstance(route, Route):
            methods = frozenset(route.methods) if route.methods else None
            yield _Candidate(route.path_format, methods, route)
        else:  # anything else might match any path
            yield _Candidate("/{any:path}", None, route)


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/")


def _may_overlap(first: str, second: str) -> bool:
    """Whether some path could match both templates: segment by segment, a segment holding a parameter
    matches anything, and a ``path`` parameter anything from there on."""
    for a, b in zip(_segments(first), _segments(second), strict=False):
        if ":path}" in a or ":path}" in b:
            return True
        if "{" in a or "{" in b:
            continue
        if a != b:
            return False
    return len(_segments(first)) == len(_segments(second))


def build_lanes(app: FastAPI) -> list[_Lane]:
    """The routes the lane may take, in the router's order; see the module's docstring for which."""
    earlier: list[_Candidate] = []
    lanes: list[_Lane] = []
    for candidate in _candidates(app.router.routes):
        route = candidate.route
        if (
            candidate.handler is not None
            and isinstance(route, APIRoute)
            and candidate.regex is not None
            and candidate.convertors is not None
            and candidate.methods
            and not any(
                (other.methods is None or other.methods & candidate.methods)
                and _may_overlap(other.path, candidate.path)
                for other in earlier
            )
        ):
            prefix = candidate.path.split("{", 1)[0]
            lanes.append(_Lane(prefix, candidate.regex, candidate.convertors, route, candidate.handler))
        earlier.append(candidate)
    return lanes


class FastLane:
    """ASGI middleware: requests for a lane's route go straight to its handler; all others to ``app``."""

    def __init__(self, app: ASGIApp, lanes: list[_Lane]) -> None:
        self.app = app
        self.by_method: dict[str, list[_Lane]] = {}
        for lane in lanes:
            for method in lane.route.methods or ():
                self.by_method.setdefault(method, []).append(lane)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            lanes = self.by_method.get(scope["method"])
            if lanes:
                path = get_route_path(scope)
                for lane in lanes:
                    if not path.startswith(lane.prefix):
                        continue
                    match = lane.regex.match(path)
                    if match is None:
                        continue
                    convertors = lane.convertors
                    scope["path_params"] = {
                        name: convertors[name].convert(value) for name, value in match.groupdict().items()
                    }
                    scope["route"] = lane.route
                    scope["endpoint"] = lane.route.endpoint
                    response = await lane.handler(Request(scope, receive, send))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

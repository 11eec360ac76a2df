"""Pipelines API (``/v1/identify`` … ``/v1/batch``): Customer.io's CDP wire format in, domain calls out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.auth import pipelines_workspace, runtime_of
from tidings.api.body import read_json
from tidings.api.surfaces import Handler, direct_call, lean_handler, ok, pipelines_errors, render_error
from tidings.errors import InvalidInput, RateLimited, TidingsError
from tidings.pipelines import service as pipelines
from tidings.workspaces.schemas import WorkspaceContext

log = logging.getLogger(__name__)

STRICT_HEADER = "x-strict-mode"


class PipelinesRoute(APIRoute):
    """Customer.io answers every Pipelines call 200 ``{}``: invalid data, bad credentials and oversized
    bodies are dropped and logged. With ``X-Strict-Mode: 1`` the caller gets the real 400/401/413 in the
    ``{"code", "message"}`` envelope. Credentials are checked in a dependency, inside this handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self._answering(lean_handler(self, super().get_route_handler()))

    def fast_lane_handler(self) -> Handler | None:
        """The direct call (see tidings.api.fast_lane), or None when the route needs FastAPI's handler."""
        direct = direct_call(self, super().get_route_handler())
        return None if direct is None else self._answering(direct)

    @staticmethod
    def _answering(handler: Handler) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except TidingsError as exc:
                # A rate limit says nothing about the data: the client should send it again later.
                if isinstance(exc, RateLimited) or request.headers.get(STRICT_HEADER) == "1":
                    return render_error(exc, pipelines_errors)
                log.warning("pipelines %s dropped (%s): %s", request.url.path, exc.name, exc.message)
                return ok()

        return answer


router = APIRouter(prefix="/v1", route_class=PipelinesRoute, tags=["Pipelines API"])
Workspace = Annotated[WorkspaceContext, Depends(pipelines_workspace)]


async def _apply_one(request: Request, ws: WorkspaceContext, call: str) -> Response:
    runtime = runtime_of(request)
    message = await read_json(request, ws.settings.limits.max_entity_request_bytes)
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: pipelines.apply(s, ws, message, call=call, now=now))
    return ok()


# -- OpenAPI descriptions ------------------------------------------------------------------------------

STRICT_MODE = {
    "name": "X-Strict-Mode",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["1"]},
    "description": "1: answer invalid input 400, bad credentials 401, oversized bodies 413 "
    "instead of 200 with the data dropped",
}
DATE_TIME = {"type": "string", "format": "date-time"}
COMMON = {
    "userId": docs.STRING,
    "anonymousId": docs.STRING,
    "messageId": {"type": "string", "description": "a repeated messageId is acknowledged and skipped"},
    "timestamp": DATE_TIME,
    "context": docs.OBJECT,
    "integrations": docs.OBJECT,
}


def _doc(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    extra = docs.json_body(schema, example=example)
    extra["parameters"] = [STRICT_MODE]
    return extra


# -- endpoints -----------------------------------------------------------------------------------------


@router.post(
    "/identify",
    summary="Identify a person and set traits",
    openapi_extra=_doc(
        docs.obj({**COMMON, "traits": docs.OBJECT}),
        {"userId": "42", "traits": {"email": "ana@example.com", "plan": "pro"}},
    ),
)
async def identify(request: Request, ws: Workspace) -> Response:
    return await _apply_one(request, ws, "identify")


@router.post(
    "/track",
    summary="Track an event (semantic events perform actions)",
    openapi_extra=_doc(
        docs.obj({**COMMON, "event": docs.STRING, "properties": docs.OBJECT}, ["event"]),
        {"userId": "42", "event": "purchase", "properties": {"price": 9}},
    ),
)
async def track(request: Request, ws: Workspace) -> Response:
    return await _apply_one(request, ws, "track")


@router.post(
    "/page",
    summary="Track a page view",
    openapi_extra=_doc(
        docs.obj({**COMMON, "name": docs.STRING, "properties": docs.OBJECT}),
        {"anonymousId": "a1", "name": "Pricing", "properties": {"path": "/pricing"}},
    ),
)
async def page(request: Request, ws: Workspace) -> Response:
    return await _apply_one(request, ws, "page")


@router.post(
    "/screen",
    summary="Track a screen view",
    openapi_extra=_doc(
        docs.obj({**COMMON, "name": docs.STRING, "properties": docs.OBJECT}),
        {"userId": "42", "name": "Settings"},
    ),
)
async def screen(request: Request, ws: Workspace) -> Response:
    return await _apply_one(request, ws, "screen")


@router.post(
    "/group",
    summary="Create or update an object and relate the person to it",
    openapi_extra=_doc(
        docs.obj({**COMMON, "groupId": docs.STRING, "traits": docs.OBJECT}, ["groupId"]),
        {
            "userId": "42",
            "groupId": "acme",
            "traits": {"object_type_id": "1", "name": "Acme", "relationshipAttributes": {"role": "admin"}},
        },
    ),
)
async def group(request: Request, ws: Workspace) -> Response:
    return await _apply_one(request, ws, "group")


@router.post(
    "/alias",
    summary="Give a previous id (person or anonymous) to a userId",
    openapi_extra=_doc(
        docs.obj({**COMMON, "previousId": docs.STRING}, ["previousId", "userId"]),
        {"previousId": "anon-7", "userId": "42"},
    ),
)
async def alias(request: Request, ws: Workspace) -> Response:
    return await _apply_one(request, ws, "alias")


@router.post(
    "/batch",
    summary="Several calls in one request",
    openapi_extra=_doc(
        docs.obj(
            {
                "batch": {
                    "type": "array",
                    "items": docs.obj({"type": {"enum": list(pipelines.CALLS)}}, ["type"]),
                },
                "context": docs.OBJECT,
                "integrations": docs.OBJECT,
            },
            ["batch"],
        ),
        {"batch": [{"type": "track", "userId": "42", "event": "opened_app"}]},
    ),
)
async def batch(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    limits = ws.settings.limits
    items, dropped = pipelines.split_batch(await read_json(request, limits.max_batch_request_bytes), limits)
    total = len(items) + len(dropped)
    now = runtime.clock.now_int()
    dropped += await runtime.db.write(lambda s: pipelines.apply_batch(s, ws, items, now=now))
    if dropped:
        # The other items are committed; this only reports the dropped ones (a 400 in strict mode).
        reasons = "; ".join(f"batch[{d.index}]: {d.reason}" for d in sorted(dropped, key=lambda d: d.index))
        raise InvalidInput(f"{len(dropped)} of {total} messages dropped: {reasons}", field="batch")
    return ok()

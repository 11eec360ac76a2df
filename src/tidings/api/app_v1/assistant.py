"""App API: the assistant (an instruction in, an answer and the tool calls it made out) and the AI segment
builder (a description in, a checked segment condition document out). Tidings extensions."""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tidings.agents import assistant
from tidings.agents.client import ApiClient, Connection
from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, Workspace, refuse_dry_run
from tidings.api.auth import bearer_token, runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import AppRoute, json_response
from tidings.errors import InvalidInput

router = APIRouter(prefix="/v1", route_class=AppRoute, tags=["App API: assistant"])


@router.post(
    "/assistant",
    summary="Ask the assistant: it runs the agent tools under the account's AI settings",
    openapi_extra=docs.json_body(
        {
            "type": "object",
            "description": '{"instruction": text, "model"?: id, "max_steps"?: 1-20}; the optional '
            "X-Tidings-Site-Id and X-Tidings-Track-Key headers let it use the tools that change people",
        }
    ),
)
async def ask(request: Request, ws: Workspace) -> Response:
    refuse_dry_run()
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    max_steps = body.get("max_steps", 10)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int):
        raise InvalidInput("max_steps must be a whole number", field="max_steps")
    connection = Connection.tidings(
        "http://tidings.internal",
        bearer_token(request.headers.get("authorization")),
        site_id=request.headers.get("x-tidings-site-id"),
        track_key=request.headers.get("x-tidings-track-key"),
    )
    # The tools go through this server's public APIs, in-process, as the caller's key.
    client = ApiClient(connection, transport=httpx.ASGITransport(app=request.app))
    try:
        reply = await assistant.ask(
            runtime.db,
            ws,
            client,
            body.get("instruction"),  # type: ignore[arg-type]
            model_id=body.get("model"),
            max_steps=max_steps,
            now=runtime.clock.now_int(),
        )
    finally:
        await client.aclose()
    return json_response(reply.view())


@router.post(
    "/ai/segment_builder",
    summary="Turn a description into segment conditions, checked before they are returned",
    openapi_extra=docs.json_body({"type": "object", "description": '{"description": text, "model"?: id}'}),
)
async def segment_builder(request: Request, ws: Workspace) -> Response:
    refuse_dry_run()
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    found = await assistant.build_segment(
        runtime.db,
        ws,
        body.get("description"),  # type: ignore[arg-type]
        model_id=body.get("model"),
        now=runtime.clock.now_int(),
    )
    return json_response(found)

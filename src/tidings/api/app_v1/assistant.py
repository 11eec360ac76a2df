"""App API: the assistant (an instruction in, an answer and the tool calls it made out, whole or as
Server-Sent Events), its conversations, and the AI segment builder (a description in, a checked segment
condition document out). Tidings extensions."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import anyio
import httpx
import orjson
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tidings.agents import assistant, conversations
from tidings.agents.client import ApiClient, Connection
from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, Start, Workspace, refuse_dry_run
from tidings.api.auth import bearer_token, runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import AppRoute, app_errors, json_response
from tidings.errors import InvalidInput, TidingsError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", route_class=AppRoute, tags=["App API: assistant"])


@router.post(
    "/assistant",
    summary="Ask the assistant: it runs the agent tools under the account's AI settings",
    openapi_extra=docs.json_body(
        {
            "type": "object",
            "description": '{"instruction": text, "conversation_id"?: id, "model"?: id, "max_steps"?: 1-20, '
            '"stream"?: bool}; the optional X-Tidings-Site-Id and X-Tidings-Track-Key headers let it use the '
            "tools that change people. With stream true, or Accept: text/event-stream, the answer is "
            "Server-Sent Events: text and tool_call as they happen, then done (the reply) or error",
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
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidInput("stream must be true or false", field="stream")
    stream = stream or "text/event-stream" in request.headers.get("accept", "")
    connection = Connection.tidings(
        "http://tidings.internal",
        bearer_token(request.headers.get("authorization")),
        site_id=request.headers.get("x-tidings-site-id"),
        track_key=request.headers.get("x-tidings-track-key"),
    )
    # The tools go through this server's public APIs, in-process, as the caller's key.
    client = ApiClient(connection, transport=httpx.ASGITransport(app=request.app))
    events = assistant.run(
        runtime.db,
        ws,
        client,
        body.get("instruction"),  # type: ignore[arg-type]
        conversation_id=body.get("conversation_id"),
        model_id=body.get("model"),
        max_steps=max_steps,
        now=runtime.clock.now_int(),
    )
    if not stream:
        try:
            return json_response(await assistant.finish(events))
        finally:
            await client.aclose()
    try:
        # Until the first event nothing has happened, so a failure still answers with its own status.
        first = await anext(events)
    except BaseException:
        await client.aclose()
        raise
    return StreamingResponse(
        _server_sent(first, events, client),
        media_type="text/event-stream",
        # Proxies (nginx) would otherwise hold the events back until the answer is complete.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _server_sent(
    first: assistant.Event, events: AsyncGenerator[assistant.Event, None], client: ApiClient
) -> AsyncIterator[bytes]:
    try:
        yield _event(first.name, first.data)
        async for event in events:
            yield _event(event.name, event.data)
    # The response went out as 200 with the first event, so a later failure can only be told in the
    # stream: its last event is error, with the App API's error envelope.
    except TidingsError as exc:
        yield _event("error", app_errors(exc))
    except Exception:
        log.exception("the assistant failed while streaming")
        yield _event("error", {"errors": [{"detail": "internal error", "status": "500", "code": "internal"}]})
    finally:
        # Also run when the client went away (the stream is cancelled): shielded, so the cleanup finishes.
        with anyio.CancelScope(shield=True):
            await events.aclose()
            await client.aclose()


def _event(name: str, data: Any) -> bytes:
    # orjson writes no newlines, so the JSON is one data line.
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@router.get("/assistant/conversations", summary="This key's assistant conversations, newest first")
async def list_conversations(
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=conversations.MAX_PAGE)] = 50,
) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: conversations.list_conversations(s, ws, start=start, limit=limit)
    )
    return json_response(found)


@router.get(
    "/assistant/conversations/{conversation_id}",
    summary="One of this key's assistant conversations, with its messages, tool calls and results",
)
async def get_conversation(conversation_id: str, request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(lambda s: conversations.get(s, ws, conversation_id))
    return json_response({"conversation": found})


@router.delete("/assistant/conversations/{conversation_id}", summary="Delete an assistant conversation")
async def delete_conversation(conversation_id: str, request: Request, ws: Workspace) -> Response:
    await runtime_of(request).db.write(lambda s: conversations.delete(s, ws, conversation_id))
    return json_response({})


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

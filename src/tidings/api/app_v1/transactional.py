"""App API: transactional sends (``/v1/send/*``, errors as ``{"meta": {"error": …}}``, as Customer.io's
clients parse them) and transactional message templates (``/v1/transactional``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, Start, Workspace
from tidings.api.app_v1.messages import EndTs, StartTs
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.paths import path_value
from tidings.api.surfaces import AppRoute, TrackV1SingleErrorRoute, json_response
from tidings.deliveries import queries as deliveries
from tidings.errors import Forbidden
from tidings.messaging import templates
from tidings.transactional import service as transactional

# Attachments may total 2 MB decoded; base64 and the rest of the request fit in 4 MB.
MAX_SEND_BODY = 4_000_000

send_router = APIRouter(prefix="/v1/send", route_class=TrackV1SingleErrorRoute, tags=["App API: send"])
router = APIRouter(prefix="/v1/transactional", route_class=AppRoute, tags=["App API: transactional"])

_COMMON = {
    "transactional_message_id": {"oneOf": [{"type": "integer"}, docs.STRING]},
    "identifiers": docs.IDENTIFIERS,
    "message_data": docs.OBJECT,
    "disable_message_retention": {"type": "boolean"},
    "send_to_unsubscribed": {"type": "boolean"},
    "queue_draft": {"type": "boolean"},
    "send_at": docs.UNIX,
    "language": docs.STRING,
}
_SEND_EXAMPLE = {
    "transactional_message_id": "welcome",
    "identifiers": {"id": "42"},
    "to": "ada@example.com",
    "message_data": {"plan": "pro"},
}


async def _send(request: Request, ws: Any, channel: str) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_SEND_BODY)
    now = runtime.clock.now_int()
    result = await runtime.db.write(lambda s: transactional.send(s, ws, channel, body, now=now))
    return json_response(result)


@send_router.post(
    "/email",
    summary="Send a transactional email",
    openapi_extra=docs.json_body(docs.obj(_COMMON, ["identifiers"]), example=_SEND_EXAMPLE),
)
async def send_email(request: Request, ws: Workspace) -> Response:
    return await _send(request, ws, "email")


@send_router.post(
    "/sms",
    summary="Send a transactional SMS",
    openapi_extra=docs.json_body(docs.obj(_COMMON, ["identifiers"])),
)
async def send_sms(request: Request, ws: Workspace) -> Response:
    return await _send(request, ws, "sms")


@send_router.post(
    "/push",
    summary="Send a transactional push notification",
    openapi_extra=docs.json_body(docs.obj(_COMMON, ["identifiers"])),
)
async def send_push(request: Request, ws: Workspace) -> Response:
    return await _send(request, ws, "push")


_TEMPLATE_BODY = docs.json_body(
    docs.obj(
        {
            "name": docs.STRING,
            "description": docs.STRING,
            "trigger_name": docs.STRING,
            "type": {"enum": list(templates.CHANNELS)},
            "content": docs.OBJECT,
            "languages": docs.OBJECT,
            "layout_id": {"type": "integer"},
            "topic_id": {"type": "integer"},
            **{flag: {"type": "boolean"} for flag in templates.FLAGS},
        },
        ["name"],
    )
)


@router.get("", summary="List transactional messages")
async def list_messages(request: Request, ws: Workspace) -> Response:
    rows = await runtime_of(request).db.read(lambda s: templates.list_templates(s, ws.workspace_id))
    return json_response({"messages": rows})


@router.post("", summary="Create a transactional message (Tidings)", openapi_extra=_TEMPLATE_BODY)
async def create_message(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    created = await runtime.db.write(lambda s: templates.create_template(s, ws.workspace_id, body, now=now))
    return json_response({"message": created})


@router.get("/{transactional_id}", summary="A transactional message, by id or trigger name")
async def get_message(transactional_id: str, request: Request, ws: Workspace) -> Response:
    ref = path_value(transactional_id)
    view = await runtime_of(request).db.read(
        lambda s: templates.template_view(templates.get_template(s, ws.workspace_id, ref))
    )
    return json_response({"message": view})


@router.put(
    "/{transactional_id}", summary="Change a transactional message (Tidings)", openapi_extra=_TEMPLATE_BODY
)
async def update_message(transactional_id: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    ref = path_value(transactional_id)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    updated = await runtime.db.write(
        lambda s: templates.update_template(s, ws.workspace_id, ref, body, now=now)
    )
    return json_response({"message": updated})


@router.get("/{transactional_id}/contents", summary="A transactional message's content and translations")
async def message_contents(transactional_id: str, request: Request, ws: Workspace) -> Response:
    ref = path_value(transactional_id)
    rows = await runtime_of(request).db.read(
        lambda s: templates.contents(templates.get_template(s, ws.workspace_id, ref))
    )
    return json_response({"contents": rows})


@router.get("/{transactional_id}/language/{language}", summary="One translation of a transactional message")
async def get_language(transactional_id: str, language: str, request: Request, ws: Workspace) -> Response:
    ref = path_value(transactional_id)
    row = await runtime_of(request).db.read(
        lambda s: templates.language_content(templates.get_template(s, ws.workspace_id, ref), language)
    )
    return json_response(row)


@router.put(
    "/{transactional_id}/language/{language}",
    summary="Set one translation of a transactional message",
    openapi_extra=docs.json_body(docs.obj({"content": docs.OBJECT}, ["content"])),
)
async def put_language(transactional_id: str, language: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    ref = path_value(transactional_id)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    row = await runtime.db.write(
        lambda s: templates.set_language(s, ws.workspace_id, ref, language, body.get("content"), now=now)
    )
    return json_response(row)


# -- deliveries and metrics of a transactional message ---------------------------------------------------

Period = Annotated[str, Query(pattern="^(hours|days|weeks|months)$", description="Bucket length")]
Steps = Annotated[
    int | None,
    Query(ge=0, description="How many buckets, ending now (0: the most; fewer than 2 count as 2)"),
]


@router.get("/{transactional_id}/messages", summary="A transactional message's deliveries, newest first")
async def message_deliveries(
    transactional_id: str,
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    metric: Annotated[str | None, Query()] = None,
    state: Annotated[str | None, Query()] = None,
    start_ts: StartTs = None,
    end_ts: EndTs = None,
    get_tracked_responses: Annotated[bool, Query()] = False,
) -> Response:
    ref = path_value(transactional_id)

    def load(session: Session) -> dict[str, Any]:
        template = templates.get_template(session, ws.workspace_id, ref)
        return deliveries.list_messages(
            session,
            ws.workspace_id,
            start=start,
            limit=limit,
            metric=metric,
            state=state,
            start_ts=start_ts,
            end_ts=end_ts,
            template_id=template.id,
        )

    return json_response(await runtime_of(request).db.read(load))


@router.get("/{transactional_id}/metrics", summary="A transactional message's metrics per period")
async def message_metrics(
    transactional_id: str, request: Request, ws: Workspace, period: Period = "days", steps: Steps = None
) -> Response:
    runtime = runtime_of(request)
    ref = path_value(transactional_id)
    now = runtime.clock.now_int()

    def load(session: Session) -> dict[str, Any]:
        template = templates.get_template(session, ws.workspace_id, ref)
        return deliveries.template_metrics(
            session, ws.workspace_id, template.id, period=period, steps=steps, now=now
        )

    return json_response(await runtime.db.read(load))


@router.get("/{transactional_id}/metrics/links", summary="Clicks per link of a transactional message")
async def message_link_metrics(
    transactional_id: str,
    request: Request,
    ws: Workspace,
    period: Period = "days",
    steps: Steps = None,
    unique: Annotated[bool, Query(description="Count each person once per period")] = False,
) -> Response:
    runtime = runtime_of(request)
    ref = path_value(transactional_id)
    now = runtime.clock.now_int()

    def load(session: Session) -> dict[str, Any]:
        template = templates.get_template(session, ws.workspace_id, ref)
        return deliveries.link_metrics(
            session, ws.workspace_id, template.id, period=period, steps=steps, unique=unique, now=now
        )

    return json_response(await runtime.db.read(load))


async def _unsupported(channel: str) -> Response:
    raise Forbidden(f"{channel} messages are not supported by this workspace; send email, sms or push")


@send_router.post("/in_app", summary="In-app messages (not supported: 403, as for a workspace without them)")
async def send_in_app(request: Request, ws: Workspace) -> Response:
    return await _unsupported("in-app")


@send_router.post("/inbox_message", summary="Inbox messages (not supported: 403)")
async def send_inbox_message(request: Request, ws: Workspace) -> Response:
    return await _unsupported("inbox")


@send_router.post("/whatsapp", summary="WhatsApp messages (not supported: 403)")
async def send_whatsapp(request: Request, ws: Workspace) -> Response:
    return await _unsupported("WhatsApp")

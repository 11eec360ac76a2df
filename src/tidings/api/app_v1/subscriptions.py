"""App API: subscription topics, person-bound subscription center links, and the ESP suppression list.

Listing topics, the subscription center token and the ESP suppression endpoints are Customer.io's;
creating, changing and deleting topics (Customer.io does that in its UI) are Tidings' extension in the same
style. Tidings is its own ESP, so the "ESP suppression" lists are the addresses it will not mail: bounces and
spam reports land there by themselves, and these endpoints add and remove others.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.app_v1.common import Workspace
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.paths import path_value
from tidings.api.surfaces import AppRoute, json_response
from tidings.errors import InvalidInput
from tidings.tracking import service as tracking

router = APIRouter(route_class=AppRoute, tags=["App API: subscriptions"])

MAX_BODY = 64_000
_TOPIC_FIELDS = {
    "name": docs.STRING,
    "description": docs.STRING,
    "subscribed_by_default": {"type": "boolean", "description": "opted in unless the person said no"},
}
_TOPIC_BODY = docs.json_body(docs.obj(_TOPIC_FIELDS, ["name"]))
_TOPIC_CHANGE = docs.json_body(docs.obj(_TOPIC_FIELDS))
_SUPPRESSION_BODY = docs.json_body(docs.obj({"reason": docs.STRING}), required=False)
SuppressionType = Annotated[str, Path(description="bounces, blocks, spam_reports or invalid_emails")]
OptionalIdType = Annotated[
    str | None,
    Query(
        pattern="^(id|email|cio_id)$",
        description="How to read the identifier; without it an id, or an email when it has an @",
    ),
]


# -- topics ----------------------------------------------------------------------------------------------


@router.get("/v1/subscription_topics", summary="List subscription topics")
async def list_topics(request: Request, ws: Workspace) -> Response:
    topics = await runtime_of(request).db.read(lambda s: tracking.list_topics(s, ws.workspace_id))
    return json_response({"topics": topics})


@router.post(
    "/v1/subscription_topics", summary="Create a subscription topic (Tidings)", openapi_extra=_TOPIC_BODY
)
async def create_topic(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    topic = await runtime.db.write(lambda s: tracking.create_topic(s, ws.workspace_id, body, now=now))
    return json_response({"topic": topic})


@router.get("/v1/subscription_topics/{topic_id}", summary="A subscription topic (Tidings)")
async def get_topic(topic_id: int, request: Request, ws: Workspace) -> Response:
    topic = await runtime_of(request).db.read(lambda s: tracking.get_topic(s, ws.workspace_id, topic_id))
    return json_response({"topic": topic})


@router.put(
    "/v1/subscription_topics/{topic_id}",
    summary="Change a subscription topic (Tidings)",
    openapi_extra=_TOPIC_CHANGE,
)
async def update_topic(topic_id: int, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    topic = await runtime.db.write(lambda s: tracking.update_topic(s, ws.workspace_id, topic_id, body))
    return json_response({"topic": topic})


@router.delete(
    "/v1/subscription_topics/{topic_id}",
    summary="Delete a subscription topic and people's choices about it (Tidings)",
)
async def delete_topic(topic_id: int, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: tracking.delete_topic(s, ws.workspace_id, topic_id, now=now))
    return json_response({})


# -- subscription center ---------------------------------------------------------------------------------


@router.get(
    "/v1/subscription_center/{customer_id}/token",
    summary="A signed link to a person's subscription center, valid for 24 hours",
)
async def subscription_center_token(
    customer_id: str, request: Request, ws: Workspace, id_type: OptionalIdType = None
) -> Response:
    runtime = runtime_of(request)
    identifier = path_value(customer_id)
    now = runtime.clock.now_int()
    public_url = runtime.settings.base_url
    # A write: the workspace's link-signing key is made on first use.
    answer = await runtime.db.write(
        lambda s: tracking.subscription_center_token(
            s, ws.workspace_id, identifier, id_type, now=now, public_url=public_url
        )
    )
    return json_response(answer)


# -- ESP suppression -------------------------------------------------------------------------------------


@router.get("/v1/esp/suppression/{suppression_type}", summary="Suppressed addresses of one type")
async def list_suppressions(
    suppression_type: SuppressionType,
    request: Request,
    ws: Workspace,
    limit: Annotated[int, Query(ge=1, le=tracking.MAX_SUPPRESSION_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Response:
    page = await runtime_of(request).db.read(
        lambda s: tracking.list_suppressions(s, ws.workspace_id, suppression_type, limit=limit, offset=offset)
    )
    return json_response(page)


@router.post(
    "/v1/esp/suppression/{suppression_type}/{email_address}",
    summary="Suppress an address",
    openapi_extra=_SUPPRESSION_BODY,
)
async def add_suppression(
    suppression_type: SuppressionType, email_address: str, request: Request, ws: Workspace
) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY, allow_empty=True)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput("reason must be a string", field="reason")
    email = path_value(email_address)
    now = runtime.clock.now_int()
    await runtime.db.write(
        lambda s: tracking.add_suppression(
            s, ws.workspace_id, suppression_type, email, now=now, reason=reason
        )
    )
    return json_response({})


@router.delete("/v1/esp/suppression/{suppression_type}/{email_address}", summary="Un-suppress an address")
async def remove_suppression(
    suppression_type: SuppressionType, email_address: str, request: Request, ws: Workspace
) -> Response:
    email = path_value(email_address)
    await runtime_of(request).db.write(
        lambda s: tracking.remove_suppression(s, ws.workspace_id, suppression_type, email)
    )
    return json_response({})


@router.get(
    "/v1/esp/search_suppression/{email_address}", summary="Whether, and why, an address is suppressed"
)
async def search_suppression(email_address: str, request: Request, ws: Workspace) -> Response:
    email = path_value(email_address)
    found = await runtime_of(request).db.read(
        lambda s: tracking.search_suppression(s, ws.workspace_id, email)
    )
    return json_response(found)

"""App API: newsletters (``/v1/newsletters``) — create, read, change, schedule, send, test sends, contents
and translations, A/B test groups, metrics and messages. The logic is in
:mod:`tidings.newsletters.service`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import docs
from tidings.api.app_v1.common import MAX_BODY, Start, Workspace
from tidings.api.app_v1.messages import INT64_MAX, EndTs, Limit, Metric, StartTs, TrackedResponses
from tidings.api.auth import runtime_of
from tidings.api.body import read_object
from tidings.api.surfaces import AppRoute, json_response
from tidings.deliveries import queries as deliveries
from tidings.newsletters import service as newsletters

router = APIRouter(prefix="/v1/newsletters", route_class=AppRoute, tags=["App API: newsletters"])

Id = Annotated[int, Path(ge=0, le=INT64_MAX)]
Period = Annotated[str, Query(pattern="^(hours|days|weeks|months)$", description="Bucket length")]
Steps = Annotated[
    int | None,
    Query(ge=0, description="How many buckets, ending now (0: the most; fewer than 2 count as 2)"),
]
Type = Annotated[str | None, Query(description="Channel: email (empty: all)")]
Unique = Annotated[bool, Query(description="Count each person once per period")]

_EMAIL = {
    "subject": docs.STRING,
    "body": docs.STRING,
    "from": docs.STRING,
    "from_id": {
        "type": "integer",
        "description": "A sender identity (GET /v1/sender_identities); not with from",
    },
    "reply_to": docs.STRING,
    "preheader_text": docs.STRING,
    "body_plain": docs.STRING,
    "body_amp": docs.STRING,
    "headers": docs.OBJECT,
}
_SETTINGS = {
    "name": docs.STRING,
    "type": {"enum": ["email"]},
    "recipients": docs.OBJECT,
    "tags": {"type": "array", "items": docs.STRING},
    "subscription_topic_id": {"type": "integer"},
    "layout_id": {"type": "integer"},
    "rate_limit_email_rate": {"type": "integer", "minimum": 1},
    "rate_limit_time_period": {"enum": [60, 3600, 86400]},
    "rate_limit_spread": {"type": "boolean"},
    "ramp": docs.obj({"start": {"type": "integer", "minimum": 1}, "growth": {"type": "number"}}, ["start"]),
    "send_in_recipient_timezone": {"type": "boolean"},
}
_CREATE = docs.json_body(
    docs.obj(
        {**_SETTINGS, **_EMAIL, "send_now": {"type": "boolean"}, "scheduled_at": docs.UNIX},
        ["name", "type", "recipients", "subject", "body"],
    ),
    example={
        "name": "March news",
        "type": "email",
        "recipients": {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}},
        "from": "news@example.com",
        "subject": "What's new, {{ customer.first_name | default: 'friend' }}",
        "body": "<p>Spring is here.</p>",
        "scheduled_at": 1767258000,
        "rate_limit_email_rate": 1000,
        "rate_limit_time_period": 3600,
    },
)
_UPDATE = docs.json_body(docs.obj({**_SETTINGS, **_EMAIL}, []))
_CONTENT = docs.json_body(docs.obj({**_EMAIL, "layout_id": {"type": "integer"}}, []))
_LANGUAGE = docs.json_body(docs.obj({"language": docs.STRING, **_EMAIL}, ["language"]))
_SCHEDULE = docs.json_body(
    docs.obj({"scheduled_at": docs.UNIX, "send_in_recipient_timezone": {"type": "boolean"}}, ["scheduled_at"])
)
_TEST = docs.json_body(
    docs.obj(
        {
            "emails": {"type": "array", "items": docs.STRING},
            "identifiers": docs.IDENTIFIERS,
            "test_group_id": {"type": "integer"},
        },
        ["emails"],
    )
)
_ADD_GROUP = docs.json_body(docs.obj({"label": docs.STRING, **_EMAIL}, []))
_GROUPS = docs.json_body(
    docs.obj(
        {
            "test_groups": {
                "type": "array",
                "items": docs.obj(
                    {"id": {"type": "integer"}, "percentage": {"type": "integer"}, "label": docs.STRING},
                    ["id"],
                ),
            },
            "winner_settings": docs.obj(
                {
                    "test_percentage": {"type": "integer", "minimum": 1, "maximum": 99},
                    "metric": {"enum": ["opened", "clicked"]},
                    "wait": {"type": "integer", "description": "seconds"},
                },
                ["test_percentage", "wait"],
            ),
        },
        [],
    ),
    example={
        "test_groups": [{"id": 1, "percentage": 70}, {"id": 2, "percentage": 30}],
        "winner_settings": {"test_percentage": 20, "metric": "opened", "wait": 14400},
    },
)


@router.get("", summary="List newsletters")
async def list_newsletters(
    request: Request,
    ws: Workspace,
    limit: Annotated[int, Query(ge=1, le=newsletters.MAX_PAGE)] = 50,
    sort: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    start: Start = None,
) -> Response:
    page = await runtime_of(request).db.read(
        lambda s: newsletters.list_newsletters(s, ws.workspace_id, limit=limit, sort=sort, start=start)
    )
    return json_response(page)


@router.post("", summary="Create a newsletter (and send or schedule it)", openapi_extra=_CREATE)
async def create_newsletter(request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    created = await runtime.db.write(lambda s: newsletters.create(s, ws, body, now=now))
    return json_response({"newsletter": created})


@router.get("/{newsletter_id}", summary="One newsletter")
async def get_newsletter(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: newsletters.view(s, newsletters.get(s, ws.workspace_id, newsletter_id))
    )
    return json_response({"newsletter": found})


@router.put("/{newsletter_id}", summary="Change a draft newsletter (Tidings)", openapi_extra=_UPDATE)
async def update_newsletter(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    changed = await runtime.db.write(lambda s: newsletters.update(s, ws, newsletter_id, body, now=now))
    return json_response({"newsletter": changed})


@router.delete("/{newsletter_id}", summary="Delete a newsletter")
async def delete_newsletter(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    await runtime_of(request).db.write(lambda s: newsletters.delete(s, ws.workspace_id, newsletter_id))
    return json_response({})


@router.post("/{newsletter_id}/schedule", summary="Schedule a newsletter", openapi_extra=_SCHEDULE)
async def schedule_newsletter(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    found = await runtime.db.write(
        lambda s: newsletters.schedule_send(s, ws.workspace_id, newsletter_id, body, now=now)
    )
    return json_response({"newsletter": found})


@router.post("/{newsletter_id}/send", summary="Send a newsletter now")
async def send_newsletter(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()
    found = await runtime.db.write(lambda s: newsletters.send_now(s, ws.workspace_id, newsletter_id, now=now))
    return json_response({"newsletter": found})


@router.post("/{newsletter_id}/cancel", summary="Stop a scheduled or sending newsletter (Tidings)")
async def cancel_newsletter(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()
    found = await runtime.db.write(lambda s: newsletters.cancel(s, ws.workspace_id, newsletter_id, now=now))
    return json_response({"newsletter": found})


@router.post("/{newsletter_id}/test", summary="Send test copies to addresses (Tidings)", openapi_extra=_TEST)
async def test_newsletter(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    sent = await runtime.db.write(
        lambda s: newsletters.send_test(s, ws.workspace_id, newsletter_id, body, now=now)
    )
    return json_response(sent)


# -- contents and translations -----------------------------------------------------------------------


@router.get("/{newsletter_id}/contents", summary="A newsletter's content, one entry per language")
async def list_contents(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: newsletters.contents(s, ws.workspace_id, newsletter_id)
    )
    return json_response(found)


@router.get("/{newsletter_id}/contents/{content_id}", summary="A newsletter's content")
async def get_content(newsletter_id: Id, content_id: Id, request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: newsletters.get_content(s, ws.workspace_id, newsletter_id, content_id)
    )
    return json_response(found)


@router.put(
    "/{newsletter_id}/contents/{content_id}", summary="Change a newsletter's content", openapi_extra=_CONTENT
)
async def put_content(newsletter_id: Id, content_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    found = await runtime.db.write(
        lambda s: newsletters.put_content(s, ws.workspace_id, newsletter_id, content_id, body, now=now)
    )
    return json_response(found)


@router.post("/{newsletter_id}/language", summary="Add a translation", openapi_extra=_LANGUAGE)
async def add_language(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    fields = {key: value for key, value in body.items() if key != "language"}
    found = await runtime.db.write(
        lambda s: newsletters.put_language(
            s, ws.workspace_id, newsletter_id, body.get("language"), fields, now=now, creating=True
        )
    )
    return json_response(found)


@router.get("/{newsletter_id}/language/{language}", summary="One translation")
async def get_language(newsletter_id: Id, language: str, request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: newsletters.get_language(s, ws.workspace_id, newsletter_id, language)
    )
    return json_response(found)


@router.put("/{newsletter_id}/language/{language}", summary="Set a translation", openapi_extra=_CONTENT)
async def put_language(newsletter_id: Id, language: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    found = await runtime.db.write(
        lambda s: newsletters.put_language(s, ws.workspace_id, newsletter_id, language, body, now=now)
    )
    return json_response(found)


@router.delete("/{newsletter_id}/language/{language}", summary="Delete a translation")
async def delete_language(newsletter_id: Id, language: str, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()
    await runtime.db.write(
        lambda s: newsletters.delete_language(s, ws.workspace_id, newsletter_id, language, now=now)
    )
    return json_response({})


# -- A/B test groups ---------------------------------------------------------------------------------


@router.get("/{newsletter_id}/test_groups", summary="A newsletter's A/B test groups")
async def list_test_groups(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: newsletters.test_groups(s, ws.workspace_id, newsletter_id)
    )
    return json_response(found)


@router.post(
    "/{newsletter_id}/test_groups",
    summary="Add an A/B test group (a copy of the default content)",
    openapi_extra=_ADD_GROUP,
)
async def add_test_group(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY, allow_empty=True)
    now = runtime.clock.now_int()
    found = await runtime.db.write(lambda s: newsletters.add_test_group(s, ws, newsletter_id, body, now=now))
    return json_response({"newsletter": found})


@router.put(
    "/{newsletter_id}/test_groups",
    summary="Set the test groups' percentages, labels and winner settings (Tidings)",
    openapi_extra=_GROUPS,
)
async def update_test_groups(newsletter_id: Id, request: Request, ws: Workspace) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    found = await runtime.db.write(
        lambda s: newsletters.update_test_groups(s, ws.workspace_id, newsletter_id, body, now=now)
    )
    return json_response(found)


@router.post(
    "/{newsletter_id}/test_group/{test_group_id}/language",
    summary="Add a translation to a test group",
    openapi_extra=_LANGUAGE,
)
async def add_group_language(
    newsletter_id: Id, test_group_id: str, request: Request, ws: Workspace
) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    fields = {key: value for key, value in body.items() if key != "language"}
    found = await runtime.db.write(
        lambda s: newsletters.put_language(
            s,
            ws.workspace_id,
            newsletter_id,
            body.get("language"),
            fields,
            now=now,
            creating=True,
            test_group_id=test_group_id,
        )
    )
    return json_response(found)


@router.get(
    "/{newsletter_id}/test_group/{test_group_id}/language/{language}", summary="A test group's translation"
)
async def get_group_language(
    newsletter_id: Id, test_group_id: str, language: str, request: Request, ws: Workspace
) -> Response:
    found = await runtime_of(request).db.read(
        lambda s: newsletters.get_language(
            s, ws.workspace_id, newsletter_id, language, test_group_id=test_group_id
        )
    )
    return json_response(found)


@router.put(
    "/{newsletter_id}/test_group/{test_group_id}/language/{language}",
    summary="Set a test group's translation",
    openapi_extra=_CONTENT,
)
async def put_group_language(
    newsletter_id: Id, test_group_id: str, language: str, request: Request, ws: Workspace
) -> Response:
    runtime = runtime_of(request)
    body = await read_object(request, MAX_BODY)
    now = runtime.clock.now_int()
    found = await runtime.db.write(
        lambda s: newsletters.put_language(
            s, ws.workspace_id, newsletter_id, language, body, now=now, test_group_id=test_group_id
        )
    )
    return json_response(found)


@router.delete(
    "/{newsletter_id}/test_group/{test_group_id}/language/{language}",
    summary="Delete a test group's translation",
)
async def delete_group_language(
    newsletter_id: Id, test_group_id: str, language: str, request: Request, ws: Workspace
) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()
    await runtime.db.write(
        lambda s: newsletters.delete_language(
            s, ws.workspace_id, newsletter_id, language, now=now, test_group_id=test_group_id
        )
    )
    return json_response({})


# -- metrics and messages ----------------------------------------------------------------------------


async def _metrics(
    request: Request,
    ws: Any,
    newsletter_id: int,
    content_id: int | None,
    period: str,
    steps: int | None,
    type: str | None,
) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()

    def load(session: Session) -> dict[str, Any]:
        scope = newsletters.content_scope(session, ws.workspace_id, newsletter_id, content_id, type)
        return deliveries.scope_metrics(session, ws.workspace_id, scope, period=period, steps=steps, now=now)

    return json_response(await runtime.db.read(load))


async def _link_metrics(
    request: Request,
    ws: Any,
    newsletter_id: int,
    content_id: int | None,
    period: str,
    steps: int | None,
    unique: bool,
) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()

    def load(session: Session) -> dict[str, Any]:
        scope = newsletters.content_scope(session, ws.workspace_id, newsletter_id, content_id, None)
        return deliveries.scope_link_metrics(
            session, ws.workspace_id, scope, period=period, steps=steps, unique=unique, now=now
        )

    return json_response(await runtime.db.read(load))


@router.get("/{newsletter_id}/metrics", summary="A newsletter's metrics per period")
async def newsletter_metrics(
    newsletter_id: Id,
    request: Request,
    ws: Workspace,
    period: Period = "days",
    steps: Steps = None,
    type: Type = None,
) -> Response:
    return await _metrics(request, ws, newsletter_id, None, period, steps, type)


@router.get("/{newsletter_id}/metrics/links", summary="Clicks per link of a newsletter")
async def newsletter_link_metrics(
    newsletter_id: Id,
    request: Request,
    ws: Workspace,
    period: Period = "days",
    steps: Steps = None,
    unique: Unique = False,
) -> Response:
    return await _link_metrics(request, ws, newsletter_id, None, period, steps, unique)


@router.get("/{newsletter_id}/contents/{content_id}/metrics", summary="A newsletter content's metrics")
async def content_metrics(
    newsletter_id: Id,
    content_id: Id,
    request: Request,
    ws: Workspace,
    period: Period = "days",
    steps: Steps = None,
    type: Type = None,
) -> Response:
    return await _metrics(request, ws, newsletter_id, content_id, period, steps, type)


@router.get("/{newsletter_id}/contents/{content_id}/metrics/links", summary="Clicks per link of a content")
async def content_link_metrics(
    newsletter_id: Id,
    content_id: Id,
    request: Request,
    ws: Workspace,
    period: Period = "days",
    steps: Steps = None,
    unique: Unique = False,
) -> Response:
    return await _link_metrics(request, ws, newsletter_id, content_id, period, steps, unique)


@router.get("/{newsletter_id}/messages", summary="A newsletter's deliveries, newest first")
async def newsletter_messages(
    newsletter_id: Id,
    request: Request,
    ws: Workspace,
    start: Start = None,
    limit: Limit = 50,
    metric: Metric = None,
    state: Annotated[str | None, Query()] = None,
    start_ts: StartTs = None,
    end_ts: EndTs = None,
    get_tracked_responses: TrackedResponses = False,
) -> Response:
    page = await runtime_of(request).db.read(
        lambda s: newsletters.messages(
            s,
            ws.workspace_id,
            newsletter_id,
            start=start,
            limit=limit,
            metric=metric,
            state=state,
            start_ts=start_ts,
            end_ts=end_ts,
        )
    )
    return json_response(page)

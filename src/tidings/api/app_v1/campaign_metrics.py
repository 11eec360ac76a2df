"""App API: metrics and deliveries of campaigns and API-triggered broadcasts, counted from the
deliveries and journeys tables.

Routes (``{kind}`` is ``campaigns`` or ``broadcasts``; a campaign id under ``/broadcasts``, or a broadcast's
under ``/campaigns``, is 404 like a missing one):

- ``GET /v1/{kind}/{id}/metrics`` and ``/actions/{action_id}/metrics``. Version 1 (the default):
  ``period`` (hours, days, weeks, months), ``steps``, ``type`` (a channel: email, sms or twilio, push,
  webhook, slack, in_app; empty means all) → ``{"metric": {"series": {metric: [count, …]}}}``, buckets
  oldest first, the last one ending now, as the transactional metrics. ``version=2`` takes ``res``
  (hours|hourly|days|daily|weeks|weekly|months|monthly, required), ``tz`` (IANA name, default UTC),
  ``start`` and ``end`` (unix; ``end`` defaults to now, ``start`` to 24 hours, 30 days, 12 weeks or
  12 months before) and ``type``. Customer.io's v2 shape is unverified; Tidings answers
  ``{"metric": {"series": {…}, "res": "days", "tz": "UTC", "start": <first bucket's start>,
  "end": <last bucket's end, exclusive>, "buckets": [<each bucket's start>, …]}}`` with buckets aligned
  to the resolution in ``tz`` (weeks start on Monday), the first holding ``start``, the last ``end``.
- ``GET …/metrics/links`` and ``/actions/{action_id}/metrics/links``: ``period``, ``steps``, ``unique`` →
  ``{"links": [{"link": {"id", "href"}, "metric": {"series": {"clicked": […]}}}]}``.
- ``GET /v1/campaigns/{id}/journey_metrics?start&end&res`` (all three required; ``tz`` optional): the v2
  shape with the series ``started`` (journeys that entered), ``finished`` (completed the workflow),
  ``exited`` (left early) and ``converted`` (met the goal), each journey counted in the bucket of that
  moment.
- ``GET /v1/{kind}/{id}/messages``: the deliveries, newest first, as ``/v1/messages``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from tidings.api.app_v1.common import Start, Workspace
from tidings.api.app_v1.messages import (
    INT64_MAX,
    Drafts,
    EndTs,
    Limit,
    Metric,
    StartTs,
    TrackedResponses,
    Type,
)
from tidings.api.auth import runtime_of
from tidings.api.surfaces import AppRoute, json_response
from tidings.campaigns import service as campaigns
from tidings.deliveries import queries as deliveries
from tidings.errors import InvalidInput

router = APIRouter(route_class=AppRoute, tags=["App API: campaign metrics"])

Id = Annotated[int, Path(ge=0, le=INT64_MAX)]
Version = Annotated[int, Query(ge=1, le=2, description="1 (period and steps) or 2 (res, tz, start, end)")]
Period = Annotated[str, Query(pattern="^(hours|days|weeks|months)$", description="Bucket length (v1)")]
Steps = Annotated[
    int | None,
    Query(ge=0, description="How many buckets, ending now (0: the most; fewer than 2 count as 2)"),
]
Res = Annotated[str | None, Query(description=f"Bucket length: {', '.join(deliveries.RESOLUTIONS)}")]
Tz = Annotated[str, Query(description="IANA time zone the buckets align to")]
Unix = Annotated[int | None, Query(ge=0, le=deliveries.MAX_UNIX, description="Unix time")]
Unique = Annotated[bool, Query(description="Count each person once per period")]
State = Annotated[str | None, Query()]

# The deliveries column naming each kind's messages.
COLUMNS = {"campaign": "campaign_id", "broadcast": "broadcast_id"}


def _scope(
    session: Session,
    workspace_id: int,
    kind: str,
    campaign_id: int,
    action_id: int | None,
    channel: str | None,
) -> deliveries.Scope:
    """The deliveries of the campaign (or of one of its actions); 404 when either is not there."""
    if action_id is None:
        campaign = campaigns.get_campaign(session, workspace_id, campaign_id, kind=kind)
        return deliveries.Scope(COLUMNS[kind], campaign.id, channel)
    _, action = campaigns.get_action(session, workspace_id, campaign_id, action_id, kind=kind)
    return deliveries.Scope("action_id", action.id, channel)


async def _metrics(
    request: Request,
    ws: Any,
    kind: str,
    campaign_id: int,
    action_id: int | None,
    *,
    version: int,
    period: str,
    steps: int | None,
    type: str | None,
    res: str | None,
    tz: str,
    start: int | None,
    end: int | None,
) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()
    channel = deliveries.channel_of(type)
    if version == 2:
        if res is None:
            raise InvalidInput("res is required with version 2", field="res")
        edges = deliveries.aligned_edges(res, tz=tz, start=start, end=end, now=now)
    else:
        edges = deliveries.series_edges(period, steps, now=now)

    def load(session: Session) -> dict[str, Any]:
        scope = _scope(session, ws.workspace_id, kind, campaign_id, action_id, channel)
        return deliveries.metrics_series(session, ws.workspace_id, scope, edges)

    series = await runtime.db.read(load)
    if version == 2 and res is not None:
        return json_response({"metric": _aligned(series, res, tz, edges)})
    return json_response({"metric": {"series": series}})


def _aligned(series: dict[str, list[int]], res: str, tz: str, edges: list[int]) -> dict[str, Any]:
    return {
        "series": series,
        "res": deliveries.RESOLUTIONS[res],
        "tz": tz,
        "start": edges[0],
        "end": edges[-1],
        "buckets": edges[:-1],
    }


async def _links(
    request: Request,
    ws: Any,
    kind: str,
    campaign_id: int,
    action_id: int | None,
    *,
    period: str,
    steps: int | None,
    unique: bool,
) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock.now_int()

    def load(session: Session) -> dict[str, Any]:
        scope = _scope(session, ws.workspace_id, kind, campaign_id, action_id, None)
        return deliveries.scope_link_metrics(
            session, ws.workspace_id, scope, period=period, steps=steps, unique=unique, now=now
        )

    return json_response(await runtime.db.read(load))


def _register(prefix: str, kind: str) -> None:
    noun = kind

    @router.get(f"{prefix}/{{campaign_id}}/metrics", summary=f"A {noun}'s metrics per period")
    async def metrics(
        campaign_id: Id,
        request: Request,
        ws: Workspace,
        version: Version = 1,
        period: Period = "days",
        steps: Steps = None,
        type: Type = None,
        res: Res = None,
        tz: Tz = "UTC",
        start: Unix = None,
        end: Unix = None,
    ) -> Response:
        return await _metrics(
            request,
            ws,
            kind,
            campaign_id,
            None,
            version=version,
            period=period,
            steps=steps,
            type=type,
            res=res,
            tz=tz,
            start=start,
            end=end,
        )

    @router.get(f"{prefix}/{{campaign_id}}/metrics/links", summary=f"Clicks per link of a {noun}")
    async def link_metrics(
        campaign_id: Id,
        request: Request,
        ws: Workspace,
        period: Period = "days",
        steps: Steps = None,
        unique: Unique = False,
    ) -> Response:
        return await _links(request, ws, kind, campaign_id, None, period=period, steps=steps, unique=unique)

    @router.get(
        f"{prefix}/{{campaign_id}}/actions/{{action_id}}/metrics",
        summary=f"Metrics of one action of a {noun}",
    )
    async def action_metrics(
        campaign_id: Id,
        action_id: Id,
        request: Request,
        ws: Workspace,
        version: Version = 1,
        period: Period = "days",
        steps: Steps = None,
        type: Type = None,
        res: Res = None,
        tz: Tz = "UTC",
        start: Unix = None,
        end: Unix = None,
    ) -> Response:
        return await _metrics(
            request,
            ws,
            kind,
            campaign_id,
            action_id,
            version=version,
            period=period,
            steps=steps,
            type=type,
            res=res,
            tz=tz,
            start=start,
            end=end,
        )

    @router.get(
        f"{prefix}/{{campaign_id}}/actions/{{action_id}}/metrics/links",
        summary=f"Clicks per link of one action of a {noun}",
    )
    async def action_link_metrics(
        campaign_id: Id,
        action_id: Id,
        request: Request,
        ws: Workspace,
        period: Period = "days",
        steps: Steps = None,
        unique: Unique = False,
    ) -> Response:
        return await _links(
            request, ws, kind, campaign_id, action_id, period=period, steps=steps, unique=unique
        )

    @router.get(f"{prefix}/{{campaign_id}}/messages", summary=f"A {noun}'s deliveries, newest first")
    async def messages(
        campaign_id: Id,
        request: Request,
        ws: Workspace,
        start: Start = None,
        limit: Limit = 50,
        type: Type = None,
        metric: Metric = None,
        state: State = None,
        drafts: Drafts = None,
        start_ts: StartTs = None,
        end_ts: EndTs = None,
        get_tracked_responses: TrackedResponses = False,
    ) -> Response:
        def load(session: Session) -> dict[str, Any]:
            campaign = campaigns.get_campaign(session, ws.workspace_id, campaign_id, kind=kind)
            return deliveries.list_messages(
                session,
                ws.workspace_id,
                start=start,
                limit=limit,
                type=type,
                metric=metric,
                state=state,
                drafts=drafts,
                start_ts=start_ts,
                end_ts=end_ts,
                campaign_id=campaign.id if kind == "campaign" else None,
                broadcast_id=campaign.id if kind == "broadcast" else None,
            )

        return json_response(await runtime_of(request).db.read(load))


for _prefix, _kind in (("/v1/campaigns", "campaign"), ("/v1/broadcasts", "broadcast")):
    _register(_prefix, _kind)


@router.get(
    "/v1/campaigns/{campaign_id}/journey_metrics", summary="Journeys started, finished, exited, converted"
)
async def journey_metrics(
    campaign_id: Id,
    request: Request,
    ws: Workspace,
    start: Unix = None,
    end: Unix = None,
    res: Res = None,
    tz: Tz = "UTC",
) -> Response:
    if start is None or end is None or res is None:
        missing = [name for name, value in (("start", start), ("end", end), ("res", res)) if value is None]
        raise InvalidInput(f"{', '.join(missing)} required", field=missing[0])
    runtime = runtime_of(request)
    edges = deliveries.aligned_edges(res, tz=tz, start=start, end=end, now=runtime.clock.now_int())

    def load(session: Session) -> dict[str, list[int]]:
        campaign = campaigns.get_campaign(session, ws.workspace_id, campaign_id, kind="campaign")
        return deliveries.journey_series(session, ws.workspace_id, campaign.id, edges)

    return json_response({"metric": _aligned(await runtime.db.read(load), res, tz, edges)})

"""Campaign and broadcast metrics (``/metrics``, ``/actions/{id}/metrics``, ``/journey_metrics``,
``/messages``) counted from the deliveries and journeys of real journeys, driven by Customer.io's Python
client with the mail arriving at a real SMTP server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from customerio.track import CustomerIO

from tests.campaigns.conftest import Json, create, email_block, journeys
from tests.harness import Api
from tests.mail import advance, eventually, mail_to
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import ok

DAY = 86400
PEOPLE = ("ada", "bob", "cy")


def _run_two_step_campaign(api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]) -> Json:
    """A campaign of two emails, triggered for three people; returns it once all six are sent and every
    journey has completed."""
    campaign = create(
        api,
        {
            "name": "Orders",
            "trigger": {"type": "event", "event": "ordered"},
            "steps": [email_block("thanks", "Thanks"), email_block("survey", "How was it?")],
        },
    )
    for name in PEOPLE:
        cio.identify(name, email=email(name), first_name=name.title())
        cio.track(name, "ordered")
    for name in PEOPLE:
        mail_to(sink, email(name), 2)

    def sent() -> bool:
        body = ok(
            api.app.get(f"/v1/campaigns/{campaign['id']}/metrics", params={"period": "days", "steps": 3})
        )
        return bool(body["metric"]["series"]["sent"][-1] == 6)

    eventually(sent, what="six sends recorded")
    eventually(
        lambda: len([j for j in journeys(api, campaign["id"]) if j["state"] == "completed"]) == 3,
        what="three completed journeys",
    )
    return campaign


def _bucketed(times: list[int], body: Json) -> list[int]:
    """How many of ``times`` fall in each bucket of a version 2 answer (so a bucket boundary passing
    between the sends and the query changes nothing)."""
    edges = [*body["buckets"], body["end"]]
    return [sum(1 for t in times if a <= t < b) for a, b in pairwise(edges)]


def _sent_times(api: Api, path: str) -> list[int]:
    messages = ok(api.app.get(f"{path}/messages", params={"limit": 100}))["messages"]
    return [m["metrics"]["sent"] for m in messages]


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    [error] = response.json()["errors"]
    assert error["status"] == str(status)
    detail: str = error["detail"]
    return detail


def test_campaign_metrics_count_the_journeys_deliveries(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = _run_two_step_campaign(api, cio, sink, email)
    base = f"/v1/campaigns/{campaign['id']}"

    series = ok(api.app.get(f"{base}/metrics", params={"period": "days", "steps": 3}))["metric"]["series"]
    assert series["created"] == [0, 0, 6]
    assert series["sent"] == [0, 0, 6]
    for metric in ("opened", "clicked", "converted", "bounced", "failed", "drafted"):
        assert series[metric] == [0, 0, 0], metric
    # v1 defaults: 45 days.
    assert len(ok(api.app.get(f"{base}/metrics"))["metric"]["series"]["sent"]) == 45
    # The channel filter: twilio is sms, empty means every channel.
    for type, expected in (("email", 6), ("", 6), ("webhook", 0), ("twilio", 0), ("push", 0)):
        body = ok(api.app.get(f"{base}/metrics", params={"period": "hours", "steps": 2, "type": type}))
        assert body["metric"]["series"]["sent"] == [0, expected], type

    # Time moves on: the sends slide one bucket back.
    advance(api, DAY)
    series = ok(api.app.get(f"{base}/metrics", params={"period": "days", "steps": 3}))["metric"]["series"]
    assert series["sent"] == [0, 6, 0]

    # Each action counts its own deliveries.
    messages = ok(api.app.get(f"{base}/messages", params={"limit": 100}))["messages"]
    by_action: dict[int, int] = {}
    for message in messages:
        by_action[message["action_id"]] = by_action.get(message["action_id"], 0) + 1
    assert sorted(by_action.values()) == [3, 3]
    for action_id, count in by_action.items():
        body = ok(api.app.get(f"{base}/actions/{action_id}/metrics", params={"period": "days", "steps": 3}))
        assert body["metric"]["series"]["sent"] == [0, count, 0]
        assert ok(api.app.get(f"{base}/actions/{action_id}/metrics/links")) == {"links": []}
    assert ok(api.app.get(f"{base}/metrics/links", params={"unique": "true"})) == {"links": []}


def test_messages_list_agrees_with_the_deliveries(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = _run_two_step_campaign(api, cio, sink, email)
    base = f"/v1/campaigns/{campaign['id']}"
    messages = ok(api.app.get(f"{base}/messages", params={"limit": 100}))["messages"]
    assert len(messages) == 6
    assert {m["campaign_id"] for m in messages} == {campaign["id"]}
    assert {m["broadcast_id"] for m in messages} == {None}
    assert {m["recipient"] for m in messages} == {email(name) for name in PEOPLE}
    assert all("sent" in m["metrics"] for m in messages)
    # The deliveries the journeys logged are exactly the messages listed.
    logged = {
        step["delivery_id"]
        for journey in journeys(api, campaign["id"])
        for step in journey["steps"]
        if step["delivery_id"]
    }
    assert logged == {m["id"] for m in messages}
    # Newest first, paged by cursor without gaps or duplicates.
    first = ok(api.app.get(f"{base}/messages", params={"limit": 4}))
    second = ok(api.app.get(f"{base}/messages", params={"limit": 4, "start": first["next"]}))
    assert [m["id"] for m in first["messages"] + second["messages"]] == [m["id"] for m in messages]
    assert second["next"] == ""
    # Filters: channel, metric, creation time.
    assert len(ok(api.app.get(f"{base}/messages", params={"type": "email"}))["messages"]) == 6
    assert ok(api.app.get(f"{base}/messages", params={"type": "push"}))["messages"] == []
    assert ok(api.app.get(f"{base}/messages", params={"metric": "opened"}))["messages"] == []
    created = min(m["created"] for m in messages)
    assert ok(api.app.get(f"{base}/messages", params={"end_ts": created - 1}))["messages"] == []
    assert _error(api.app.get(f"{base}/messages", params={"metric": "nope"}), 400)
    # The same campaign is no broadcast.
    _error(api.app.get(f"/v1/broadcasts/{campaign['id']}/messages"), 404)


def test_journey_metrics(api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]) -> None:
    campaign = _run_two_step_campaign(api, cio, sink, email)
    now = advance(api, 0)
    path = f"/v1/campaigns/{campaign['id']}/journey_metrics"
    body = ok(api.app.get(path, params={"start": now - 2 * DAY, "end": now, "res": "daily"}))["metric"]
    assert body["res"] == "days"
    assert len(body["buckets"]) == 3
    assert body["start"] == body["buckets"][0] <= now - 2 * DAY
    assert body["end"] > now
    ran = journeys(api, campaign["id"])
    assert body["series"] == {
        "started": _bucketed([j["entered_at"] for j in ran], body),
        "finished": _bucketed([j["finished_at"] for j in ran], body),
        "exited": [0, 0, 0],
        "converted": [0, 0, 0],
    }
    assert sum(body["series"]["started"]) == sum(body["series"]["finished"]) == 3
    # All three parameters are required.
    for missing in ("start", "end", "res"):
        params: dict[str, str | int] = {"start": now - DAY, "end": now, "res": "hours"}
        del params[missing]
        assert missing in _error(api.app.get(path, params=params), 400)
    _error(api.app.get(path, params={"start": now, "end": now - DAY, "res": "days"}), 400)
    _error(api.app.get(path, params={"start": now - DAY, "end": now, "res": "fortnights"}), 400)
    _error(api.app.get(path, params={"start": 0, "end": now, "res": "hours"}), 400)  # too many buckets
    _error(
        api.app.get("/v1/campaigns/999999999/journey_metrics", params={"start": 0, "end": 1, "res": "days"}),
        404,
    )


def test_metrics_version_2_buckets_align_to_the_time_zone(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = _run_two_step_campaign(api, cio, sink, email)
    now = advance(api, 0)
    base = f"/v1/campaigns/{campaign['id']}"
    sent = _sent_times(api, base)
    assert len(sent) == 6
    for tz in ("UTC", "America/New_York", "Asia/Kolkata"):
        params: dict[str, str | int] = {
            "version": 2,
            "res": "daily",
            "tz": tz,
            "start": now - 3 * DAY,
            "end": now,
        }
        body = ok(api.app.get(f"{base}/metrics", params=params))["metric"]
        zone = ZoneInfo(tz)
        assert body["tz"] == tz
        assert body["res"] == "days"
        assert len(body["buckets"]) == 4
        for edge in [*body["buckets"], body["end"]]:
            local = datetime.fromtimestamp(edge, zone)
            assert (local.hour, local.minute, local.second) == (0, 0, 0), (tz, local)
        assert body["series"]["sent"] == _bucketed(sent, body)
        assert body["series"]["sent"][0] == 0
    # Defaults: end is now, 24 hourly buckets ending with the current hour.
    hourly = ok(api.app.get(f"{base}/metrics", params={"version": 2, "res": "hours"}))["metric"]
    assert len(hourly["series"]["created"]) == 24
    assert hourly["series"]["sent"] == _bucketed(sent, hourly)
    assert sum(hourly["series"]["created"]) == 6
    assert hourly["start"] % 3600 == 0
    assert hourly["end"] > now
    # Months and weeks start on the first of the month and on Monday.
    monthly = ok(api.app.get(f"{base}/metrics", params={"version": 2, "res": "monthly"}))["metric"]
    assert len(monthly["buckets"]) == 12
    assert monthly["series"]["sent"] == _bucketed(sent, monthly)
    assert all(datetime.fromtimestamp(b, ZoneInfo("UTC")).day == 1 for b in monthly["buckets"])
    weekly = ok(api.app.get(f"{base}/metrics", params={"version": 2, "res": "weeks", "tz": "Europe/Paris"}))
    assert all(
        datetime.fromtimestamp(b, ZoneInfo("Europe/Paris")).weekday() == 0
        for b in weekly["metric"]["buckets"]
    )
    # Per action too.
    action_id = ok(api.app.get(f"{base}/messages", params={"limit": 1}))["messages"][0]["action_id"]
    body = ok(
        api.app.get(
            f"{base}/actions/{action_id}/metrics",
            params={"version": 2, "res": "days", "start": now - DAY, "end": now},
        )
    )
    assert sum(body["metric"]["series"]["sent"]) == 3


@pytest.mark.parametrize(
    "params",
    [
        {"version": 2},  # res is required with version 2
        {"version": 3},
        {"version": 2, "res": "yearly"},
        {"version": 2, "res": "days", "tz": "Mars/Olympus_Mons"},
        {"version": 2, "res": "days", "tz": "../../etc/passwd"},
        {"version": 2, "res": "days", "start": 100, "end": 50},
        {"version": 2, "res": "days", "start": -1},
        {"period": "years"},
        {"steps": -1},
        {"type": "carrier_pigeon"},
    ],
)
def test_bad_metrics_parameters_are_400(api: Api, params: dict[str, Any]) -> None:
    campaign = create(
        api,
        {"name": "Idle", "trigger": {"type": "event", "event": "never"}, "steps": [email_block("a", "A")]},
    )
    _error(api.app.get(f"/v1/campaigns/{campaign['id']}/metrics", params=params), 400)


def test_unknown_campaigns_broadcasts_and_actions_are_404(api: Api) -> None:
    campaign = create(
        api,
        {"name": "Idle", "trigger": {"type": "event", "event": "never"}, "steps": [email_block("a", "A")]},
    )
    other = create(
        api,
        {"name": "Other", "trigger": {"type": "event", "event": "never"}, "steps": [email_block("b", "B")]},
    )
    [action] = ok(api.app.get(f"/v1/campaigns/{campaign['id']}/actions"))["actions"]
    [other_action] = ok(api.app.get(f"/v1/campaigns/{other['id']}/actions"))["actions"]
    base = f"/v1/campaigns/{campaign['id']}"
    # A campaign without deliveries has all-zero series.
    series = ok(api.app.get(f"{base}/metrics", params={"period": "weeks", "steps": 2}))["metric"]["series"]
    assert all(counts == [0, 0] for counts in series.values())
    assert ok(api.app.get(f"{base}/actions/{action['id']}/metrics", params={"steps": 2}))["metric"]["series"][
        "sent"
    ] == [0, 0]
    for path in (
        "/v1/campaigns/999999999/metrics",
        "/v1/campaigns/999999999/metrics/links",
        "/v1/campaigns/999999999/messages",
        f"{base}/actions/999999999/metrics",
        f"{base}/actions/{other_action['id']}/metrics",
        f"{base}/actions/{other_action['id']}/metrics/links",
        f"/v1/broadcasts/{campaign['id']}/metrics",
        f"/v1/broadcasts/{campaign['id']}/metrics/links",
        f"/v1/broadcasts/{campaign['id']}/actions/{action['id']}/metrics",
        f"/v1/broadcasts/{campaign['id']}/messages",
    ):
        _error(api.app.get(path), 404)


def test_broadcast_metrics(api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]) -> None:
    broadcast = create(
        api,
        {"name": "Launch", "trigger": {"type": "broadcast"}, "steps": [email_block("news", "We launched")]},
    )
    for name in PEOPLE:
        cio.identify(name, email=email(name), first_name=name.title())
    ok(api.app.post(f"/v1/campaigns/{broadcast['id']}/triggers", json={"ids": list(PEOPLE)}))
    for name in PEOPLE:
        mail_to(sink, email(name))
    base = f"/v1/broadcasts/{broadcast['id']}"

    def series() -> Json:
        body: Json = ok(api.app.get(f"{base}/metrics", params={"period": "hours", "steps": 2}))["metric"][
            "series"
        ]
        return body

    eventually(lambda: series()["sent"] == [0, 3], what="three broadcast sends")
    messages = ok(api.app.get(f"{base}/messages"))["messages"]
    assert len(messages) == 3
    assert {m["broadcast_id"] for m in messages} == {broadcast["id"]}
    assert {m["campaign_id"] for m in messages} == {None}
    [action_id] = {m["action_id"] for m in messages}
    body = ok(api.app.get(f"{base}/actions/{action_id}/metrics", params={"period": "hours", "steps": 2}))
    assert body["metric"]["series"]["sent"] == [0, 3]
    assert ok(api.app.get(f"{base}/metrics/links")) == {"links": []}
    assert ok(api.app.get(f"{base}/actions/{action_id}/metrics/links")) == {"links": []}
    v2 = ok(api.app.get(f"{base}/metrics", params={"version": 2, "res": "hourly"}))["metric"]
    assert v2["series"]["sent"] == _bucketed(_sent_times(api, base), v2)
    assert sum(v2["series"]["sent"]) == 3
    # A broadcast is not a campaign.
    _error(api.app.get(f"/v1/campaigns/{broadcast['id']}/metrics"), 404)
    _error(
        api.app.get(
            f"/v1/campaigns/{broadcast['id']}/journey_metrics", params={"start": 0, "end": 1, "res": "days"}
        ),
        404,
    )

"""Every trigger type starts journeys from the data Customer.io's clients send: attribute changes,
relationships and object changes (Track v1 and v2), date attributes (once and yearly, with an offset) and
schedules — with time moved by the server's clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from customerio import analytics
from customerio.track import CustomerIO

from tests.campaigns.conftest import create, email_block, journeys
from tests.harness import Api
from tests.mail import advance, eventually, mail_to, no_mail_to
from tests.messaging.smtp_sink import SmtpSink
from tidings.campaigns.timers import next_run


def test_attribute_change_trigger_with_from_and_to(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    create(
        api,
        {
            "name": "Upgraded",
            "trigger": {"type": "attribute", "attribute": "plan", "from": "free", "to": "pro"},
            "steps": [email_block("congrats", "Now {{ trigger.to }}, was {{ trigger.from }}")],
        },
    )
    upgrader, newcomer = email("upgrader"), email("newcomer")
    cio.identify("upgrader", email=upgrader, plan="free")
    cio.identify("newcomer", email=newcomer, plan="pro")  # from nothing, not from free
    cio.identify("upgrader", plan="pro")
    assert mail_to(sink, upgrader)[0].message["Subject"] == "Now pro, was free"
    no_mail_to(sink, newcomer, settle=0.5)


def test_relationship_and_object_triggers(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    create(
        api,
        {
            "name": "Joined an account",
            "trigger": {"type": "relationship", "object_type_id": "1", "on": "added"},
            "steps": [email_block("joined", "Joined {{ trigger.object_id }}")],
        },
    )
    create(
        api,
        {
            "name": "Account status",
            "trigger": {"type": "object", "object_type_id": "1", "on": "updated", "attribute": "status"},
            "steps": [
                email_block("status", "Account {{ trigger.object_id }} is {{ trigger.changes.status.to }}")
            ],
        },
    )
    member = email("member")
    cio.identify(
        "member",
        email=member,
        cio_relationships={
            "action": "add_relationships",
            "relationships": [{"identifiers": {"object_type_id": "1", "object_id": "acme"}}],
        },
    )
    assert mail_to(sink, member)[0].message["Subject"] == "Joined acme"
    entity = {
        "type": "object",
        "identifiers": {"object_type_id": "1", "object_id": "acme"},
        "action": "identify",
    }
    assert (
        api.track.post("/api/v2/entity", json={**entity, "attributes": {"name": "Acme"}}).status_code == 200
    )
    no_mail_to(sink, member, expected=1, settle=0.5)  # a change of another attribute
    assert (
        api.track.post("/api/v2/entity", json={**entity, "attributes": {"status": "late"}}).status_code == 200
    )
    assert mail_to(sink, member, 2)[1].message["Subject"] == "Account acme is late"


def test_date_attribute_triggers_once_and_yearly(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    now = advance(api, 0)
    create(
        api,
        {
            "name": "Renewal reminder",
            "trigger": {"type": "date", "attribute": "renews_at", "offset": "-1d"},
            "steps": [email_block("remind", "Renews tomorrow")],
        },
    )
    create(
        api,
        {
            "name": "Birthday",
            "trigger": {"type": "date", "attribute": "birthday", "recurring": "yearly"},
            "steps": [email_block("cake", "Happy birthday")],
        },
    )
    renewing, born = email("renewing"), email("born")
    cio.identify("renewing", email=renewing, renews_at=now + 3 * 86400)
    # Born 28 years (a whole number of leap cycles, so 29 February exists) before the day two days from now:
    # that day's midnight is more than one day ahead and at most two, whatever the time of day (earlier
    # tests have moved the package's server clock).
    in_two_days = datetime.fromtimestamp(now + 2 * 86400, UTC)
    birthday = in_two_days.replace(year=in_two_days.year - 28, hour=0, minute=0, second=0, microsecond=0)
    cio.identify("born", email=born, birthday=birthday.date().isoformat())
    no_mail_to(sink, renewing, settle=0.3)
    advance(api, 2 * 86400 + 60)  # the renewal's day before, and the birthday's midnight
    assert mail_to(sink, renewing)[0].message["Subject"] == "Renews tomorrow"
    assert mail_to(sink, born)[0].message["Subject"] == "Happy birthday"
    advance(api, 2 * 86400)
    no_mail_to(sink, renewing, expected=1, settle=0.3)  # once only
    advance(api, 365 * 86400)
    assert len(mail_to(sink, born, 2)) == 2  # and again a year later


def test_scheduled_campaign_reaches_its_audience(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    now = advance(api, 0)
    campaign = create(
        api,
        {
            "name": "Weekly digest",
            "trigger": {
                "type": "scheduled",
                "at": now + 3600,
                "audience": {"attribute": {"field": "digest", "operator": "eq", "value": "yes"}},
            },
            "reentry": "always",
            "steps": [email_block("digest", "Digest")],
        },
    )
    reader, other = email("reader"), email("other")
    cio.identify("reader", email=reader, digest="yes")
    cio.identify("other", email=other, digest="no")
    no_mail_to(sink, reader, settle=0.3)
    advance(api, 3601)
    assert mail_to(sink, reader)[0].message["Subject"] == "Digest"
    no_mail_to(sink, other, settle=0.3)
    eventually(lambda: len(journeys(api, campaign["id"], state="completed")) == 1, what="one journey")


def test_recurring_schedule_runs_every_day_at_local_time() -> None:
    trigger = {"type": "scheduled", "every": "day", "time": "09:00", "timezone": "Pacific/Auckland"}
    start = int(datetime(2026, 11, 24, 0, 0, tzinfo=UTC).timestamp())  # 13:00 in Auckland
    first = next_run(trigger, start)
    assert first is not None
    assert datetime.fromtimestamp(first, UTC) == datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
    weekly = {**trigger, "every": "week", "day": "fri"}
    friday = next_run(weekly, start)
    assert friday is not None
    assert datetime.fromtimestamp(friday, UTC).strftime("%a %H:%M") == "Thu 20:00"  # Friday 09:00 NZDT


def test_anonymous_events_trigger_once_the_visitor_is_identified(
    api: Api, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    create(
        api,
        {
            "name": "Viewed pricing",
            "trigger": {"type": "event", "event": "Viewed Pricing"},
            "steps": [email_block("pricing", "About {{ event.plan }}")],
        },
    )
    cdp = analytics.Client(api.creds.pipelines_write_key, host=api.server.base_url, sync_mode=True)
    visitor = email("visitor")
    # The server's clock may be ahead (other tests move it): the event happens at the server's now.
    moment = datetime.fromtimestamp(advance(api, 0), UTC)
    cdp.track(
        anonymous_id="anon-visitor", event="Viewed Pricing", properties={"plan": "team"}, timestamp=moment
    )
    no_mail_to(sink, visitor, settle=0.3)
    cdp.identify(user_id="visitor", anonymous_id="anon-visitor", traits={"email": visitor}, timestamp=moment)
    assert mail_to(sink, visitor)[0].message["Subject"] == "About team"

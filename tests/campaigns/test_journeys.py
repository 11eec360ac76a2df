"""Whole journeys driven by Customer.io's Python client: triggers, delays, branches and waits, with the
email arriving at a real SMTP server and time moved by the server's clock (never slept past)."""

from __future__ import annotations

from collections.abc import Callable

from customerio.constants import EMAIL, ID
from customerio.track import CustomerIO

from tests.campaigns.conftest import create, email_block, journeys
from tests.harness import Api
from tests.mail import Json, advance, eventually, mail_to, no_mail_to, ok
from tests.messaging.smtp_sink import SmtpSink


def test_event_triggered_journey_with_a_delay(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = create(
        api,
        {
            "name": "Onboarding",
            "trigger": {"type": "event", "event": "signed_up"},
            "steps": [
                email_block("welcome", "Welcome {{ event.plan }}"),
                {"id": "wait", "type": "delay", "duration": "1d"},
                email_block("tips", "Tips for {{ customer.first_name }}"),
            ],
        },
    )
    address = email("ada")
    cio.identify("ada", email=address, first_name="Ada")
    cio.track("ada", "signed_up", data={"plan": "pro"})
    [first] = mail_to(sink, address)
    assert first.message["Subject"] == "Welcome pro"
    no_mail_to(sink, address, expected=1, settle=0.5)
    advance(api, 86400 + 1)
    second = mail_to(sink, address, 2)[1]
    assert second.message["Subject"] == "Tips for Ada"
    [journey] = eventually(
        lambda: [j for j in journeys(api, campaign["id"]) if j["state"] == "completed"], what="completion"
    )
    outcomes = [(s["block"], s["outcome"]) for s in journey["steps"]]
    assert outcomes[0] == ("trigger", "entered")
    assert [b for b, _ in outcomes[1:]] == ["welcome", "wait", "wait", "tips"]
    assert all(s["delivery_id"] for s in journey["steps"] if s["block"] in ("welcome", "tips"))


def test_branch_and_wait_for_a_matching_event_with_timeout(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = create(
        api,
        {
            "name": "Carts",
            "trigger": {"type": "event", "event": "cart_started", "filters": {"channel": "web"}},
            "steps": [
                {
                    "id": "paid",
                    "type": "wait_until",
                    "event": {"name": "order_paid", "match": {"order_id": "{{ event.order_id }}"}},
                    "timeout": "2h",
                    "timeout_steps": [email_block("nudge", "Still there? {{ event.order_id }}")],
                },
                {
                    "id": "vip",
                    "type": "branch",
                    "condition": {"attribute": {"field": "plan", "operator": "eq", "value": "vip"}},
                    "yes": [email_block("thanks_vip", "VIP thanks {{ journey.wait_event.order_id }}")],
                    "no": [email_block("thanks", "Thanks")],
                },
            ],
        },
    )
    paid, lapsed, other = email("paid"), email("lapsed"), email("other")
    cio.identify("paid", email=paid, plan="vip")
    cio.identify("lapsed", email=lapsed)
    cio.identify("other", email=other)
    cio.track("paid", "cart_started", data={"order_id": "A1", "channel": "web"})
    cio.track("lapsed", "cart_started", data={"order_id": "B1", "channel": "web"})
    cio.track("other", "cart_started", data={"order_id": "C1", "channel": "app"})  # filtered out
    eventually(lambda: len(journeys(api, campaign["id"])) == 2, what="two journeys")
    cio.track("paid", "order_paid", data={"order_id": "WRONG"})  # another order: keeps waiting
    no_mail_to(sink, paid, settle=0.5)
    cio.track("paid", "order_paid", data={"order_id": "A1"})
    [mail] = mail_to(sink, paid)
    assert mail.message["Subject"] == "VIP thanks A1"
    no_mail_to(sink, lapsed, settle=0.2)
    advance(api, 2 * 3600 + 1)
    # Sent in the same batch, so they may arrive in either order.
    subjects = sorted(m.message["Subject"] for m in mail_to(sink, lapsed, 2))
    assert subjects == ["Still there? B1", "Thanks"]
    no_mail_to(sink, other, settle=0.2)


def test_reentry_rules_and_entry_filters(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    once = create(
        api,
        {
            "name": "Once",
            "trigger": {"type": "event", "event": "visit"},
            "filters": {"attribute": {"field": "country", "operator": "eq", "value": "NZ"}},
            "steps": [email_block("hello", "Once")],
        },
    )
    every = create(
        api,
        {
            "name": "Every hour",
            "trigger": {"type": "event", "event": "visit"},
            "reentry": {"mode": "every", "every": "1h"},
            "steps": [email_block("hello", "Hourly")],
        },
    )
    kiwi, other = email("kiwi"), email("other")
    cio.identify("kiwi", email=kiwi, country="NZ")
    cio.identify("other", email=other, country="AU")
    for _ in range(3):
        cio.track("kiwi", "visit")
        cio.track("other", "visit")
    eventually(lambda: len(journeys(api, once["id"])) == 6, what="six triggered journeys")
    no_mail_to(sink, kiwi, expected=2, settle=1.0)  # one "Once", one "Hourly"
    no_mail_to(sink, other, expected=1, settle=0.0)  # filtered out of "Once"
    reasons = {j["exit_reason"] for j in journeys(api, once["id"]) if j["state"] == "rejected"}
    assert reasons == {"already entered (re-entry: once)", "did not match the campaign's filters"}
    advance(api, 3601)
    cio.track("kiwi", "visit")
    subjects = sorted(m.message["Subject"] for m in mail_to(sink, kiwi, 3))
    assert subjects == ["Hourly", "Hourly", "Once"]
    assert len(journeys(api, every["id"], state="completed")) >= 3


def test_goal_conversion_exits_and_is_attributed_to_the_last_message(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = create(
        api,
        {
            "name": "Convert",
            "trigger": {"type": "event", "event": "trial"},
            "goal": {"event": "purchased", "within": "3d"},
            "exit": {"on_goal": True},
            "steps": [
                email_block("pitch", "Buy now"),
                {"id": "wait", "type": "delay", "duration": "1d"},
                email_block("again", "Last chance"),
            ],
        },
    )
    buyer = email("buyer")
    cio.identify("buyer", email=buyer)
    cio.track("buyer", "trial")
    mail_to(sink, buyer)
    [journey] = journeys(api, campaign["id"])
    delivery_id = next(s["delivery_id"] for s in journey["steps"] if s["block"] == "pitch")
    cio.track("buyer", "purchased")
    eventually(lambda: journeys(api, campaign["id"])[0]["state"] == "exited", what="the journey to exit")
    [journey] = journeys(api, campaign["id"])
    assert journey["exit_reason"] == "goal met"
    assert journey["converted_at"]
    message = api.app.get(f"/v1/messages/{delivery_id}").json()["message"]
    assert message["metrics"].get("converted")
    advance(api, 86400 + 1)
    no_mail_to(sink, buyer, expected=1, settle=0.8)


def test_segment_trigger_exits_people_who_leave_the_segment(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    segment = api.app.post(
        "/v1/segments",
        json={
            "segment": {
                "name": "Trialists",
                "conditions": {"attribute": {"field": "plan", "operator": "eq", "value": "trial"}},
            }
        },
    ).json()["segment"]
    campaign = create(
        api,
        {
            "name": "Trial drip",
            "trigger": {"type": "segment", "segment_id": segment["id"]},
            "exit": {"on_leave_segment": True},
            "steps": [
                email_block("day0", "Welcome to the trial"),
                {"id": "wait", "type": "delay", "duration": "2d"},
                email_block("day2", "Two days in"),
            ],
        },
    )
    stays, leaves = email("stays"), email("leaves")
    cio.identify("stays", email=stays, plan="trial")
    cio.identify("leaves", email=leaves, plan="trial")
    mail_to(sink, stays)
    mail_to(sink, leaves)
    cio.identify("leaves", plan="paid")
    eventually(
        lambda: {j["state"] for j in journeys(api, campaign["id"])} == {"waiting", "exited"},
        what="the leaver's journey to end",
    )
    advance(api, 2 * 86400 + 1)
    assert [m.message["Subject"] for m in mail_to(sink, stays, 2)][1] == "Two days in"
    no_mail_to(sink, leaves, expected=1, settle=0.3)


def test_pause_holds_journeys_and_edits_keep_journeys_on_their_version(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    definition = {
        "name": "Versions",
        "trigger": {"type": "event", "event": "go"},
        "steps": [{"id": "wait", "type": "delay", "duration": "1h"}, email_block("end", "Version one")],
    }
    campaign = create(api, definition)
    early, late = email("early"), email("late")
    cio.identify("early", email=early)
    cio.track("early", "go")
    eventually(lambda: journeys(api, campaign["id"])[0]["state"] == "waiting", what="a waiting journey")
    changed = {
        **definition,
        "steps": [{"id": "wait", "type": "delay", "duration": "1h"}, email_block("end2", "Version two")],
    }
    updated = api.app.put(f"/v1/campaigns/{campaign['id']}", json=changed).json()["campaign"]
    assert updated["version"] == 2
    api.app.post(f"/v1/campaigns/{campaign['id']}/pause")
    cio.identify("late", email=late)
    cio.track("late", "go")  # paused: nobody enters
    advance(api, 3601)
    no_mail_to(sink, early, settle=0.8)
    api.app.post(f"/v1/campaigns/{campaign['id']}/resume")
    assert mail_to(sink, early)[0].message["Subject"] == "Version one"
    cio.track("late", "go")
    eventually(lambda: len(journeys(api, campaign["id"], state="waiting")) == 1, what="the late journey")
    advance(api, 3601)
    assert mail_to(sink, late)[0].message["Subject"] == "Version two"
    archived = api.app.post(f"/v1/campaigns/{campaign['id']}/archive").json()["campaign"]
    assert archived["state"] == "archived"
    assert archived["active"] is False


def test_only_events_at_most_72_hours_old_trigger(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = create(
        api,
        {
            "name": "Fresh only",
            "trigger": {"type": "event", "event": "bought"},
            "reentry": "always",
            "steps": [email_block("thanks", "Thanks for order {{ event.order }}")],
        },
    )
    buyer = email("buyer")
    cio.identify("buyer", email=buyer)
    now = advance(api, 0)
    cio.track("buyer", "bought", data={"order": "old"}, timestamp=now - 73 * 3600)
    cio.track("buyer", "bought", data={"order": "recent"}, timestamp=now - 71 * 3600)
    assert mail_to(sink, buyer)[0].message["Subject"] == "Thanks for order recent"
    no_mail_to(sink, buyer, expected=1, settle=0.5)
    assert len(journeys(api, campaign["id"])) == 1


def test_a_goal_condition_met_after_the_journey_ended_still_converts(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = create(
        api,
        {
            "name": "Pay up",
            "trigger": {"type": "event", "event": "invoice"},
            "goal": {"condition": {"attribute": {"field": "paid", "operator": "is_true"}}, "within": "2d"},
            "steps": [email_block("ask", "Please pay")],
        },
    )
    payer, late = email("payer"), email("late")
    for name, address in (("payer", payer), ("late", late)):
        cio.identify(name, email=address)
        cio.track(name, "invoice")
        mail_to(sink, address)
    eventually(lambda: len(journeys(api, campaign["id"], state="completed")) == 2, what="both journeys done")
    cio.identify("payer", paid=True)
    advance(api, 3 * 86400)
    cio.identify("late", paid=True)  # after the goal's window
    eventually(
        lambda: [j["converted_at"] is not None for j in journeys(api, campaign["id"])] == [False, True],
        what="only the payer's journey to convert",
    )
    metrics = api.app.get(f"/v1/campaigns/{campaign['id']}/metrics", params={"period": "days", "steps": 7})
    assert sum(metrics.json()["metric"]["series"]["converted"]) == 1


def test_a_merge_hands_the_secondarys_journeys_and_messages_to_the_primary(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    """As in Customer.io, merging two people moves the secondary's journeys and delivery history: a
    journey waiting in a delay goes on for the primary, its next email reaches the primary, and campaigns
    the secondary entered count as entered by the primary (re-entry: once)."""
    onboarding = create(
        api,
        {
            "name": "Merged onboarding",
            "trigger": {"type": "event", "event": "joined"},
            "steps": [
                email_block("hello", "Hello"),
                {"id": "wait", "type": "delay", "duration": "1d"},
                email_block("later", "Later {{ customer.first_name }}"),
            ],
        },
    )
    welcome = create(
        api,
        {
            "name": "Welcome once",
            "trigger": {"type": "event", "event": "joined"},
            "steps": [email_block("welcome", "Welcome")],
        },
    )
    duplicate, main = email("dup"), email("main")
    cio.identify("dup", email=duplicate)
    cio.track("dup", "joined")
    assert sorted(m.message["Subject"] for m in mail_to(sink, duplicate, 2)) == ["Hello", "Welcome"]
    cio.identify("main", email=main, first_name="Main")
    [waiting] = journeys(api, onboarding["id"])
    cio.merge_customers(ID, "main", EMAIL, duplicate)
    [moved] = journeys(api, onboarding["id"])
    assert moved["state"] == waiting["state"] == "waiting"
    assert moved["person_id"] != waiting["person_id"]
    # The delivery history moved with the journeys.
    messages = ok(api.app.get("/v1/customers/main/messages"))["messages"]
    assert sorted(m["subject"] for m in messages) == ["Hello", "Welcome"]
    # Both campaigns count as entered by the merged person.
    cio.track("main", "joined")
    for campaign_id in (onboarding["id"], welcome["id"]):

        def rejected(campaign_id: int = campaign_id) -> list[Json]:
            return journeys(api, campaign_id, state="rejected")

        assert [j["exit_reason"] for j in eventually(rejected, what="a rejection")] == [
            "already entered (re-entry: once)"
        ]
    advance(api, 86400 + 1)
    [later] = mail_to(sink, main)
    assert later.message["Subject"] == "Later Main"
    no_mail_to(sink, main, expected=1, settle=0.5)
    no_mail_to(sink, duplicate, expected=2, settle=0.0)
    [finished] = eventually(lambda: journeys(api, onboarding["id"], state="completed"), what="completion")
    assert [s["block"] for s in finished["steps"]] == ["trigger", "hello", "wait", "wait", "later"]

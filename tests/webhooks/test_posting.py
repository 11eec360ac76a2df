"""What reaches an endpoint: signed, Customer.io-shaped envelopes of the events it subscribed to."""

from __future__ import annotations

import httpx

from tests.harness import Api
from tests.webhooks.conftest import (
    cio_id_of,
    create_webhook,
    identify,
    make_delivery,
    ok,
    outbox,
    report,
    server_now,
    signature_valid,
    spec_errors,
    wait_sent,
)
from tests.webhooks.receiver import Receiver
from tidings.ids import is_ulid


def test_a_reported_metric_is_posted_once_signed_and_valid(api: Api, receiver: Receiver) -> None:
    delivery_id, template_id = make_delivery(api, "ann")
    hook = create_webhook(api, receiver.endpoint(), ["email_delivered"])
    before = server_now(api)
    report(api, delivery_id, "delivered", timestamp=1_700_000_000)
    [post] = receiver.wait_for(1)
    status = wait_sent(api, hook["id"])

    assert post.headers["content-type"] == "application/json"
    assert "Customer.io" in post.headers["user-agent"]
    assert before <= int(post.headers["x-cio-timestamp"]) <= server_now(api)
    assert signature_valid(api, post)
    envelope = post.json()
    assert spec_errors(envelope) == []
    assert is_ulid(envelope["event_id"])
    assert {key: envelope[key] for key in ("object_type", "metric", "timestamp")} == {
        "object_type": "email",
        "metric": "delivered",
        "timestamp": 1_700_000_000,
    }
    assert envelope["data"] == {
        "delivery_id": delivery_id,
        "customer_id": "ann",
        "identifiers": {"id": "ann", "email": "ann@example.com", "cio_id": cio_id_of(api, "ann")},
        "transactional_message_id": template_id,
        "recipient": "ann@example.com",
        "subject": "Your receipt",
    }
    assert status["last_status"] == 200
    assert status["failing_since"] is None
    assert status["last_success_at"] is not None
    assert outbox(api, hook["id"]) == [("sent", "delivered")]
    assert len(receiver.received()) == 1


def test_metric_specific_data(api: Api, receiver: Receiver) -> None:
    delivery_id, _ = make_delivery(api, "bo")
    events = ["email_bounced", "email_clicked", "email_dropped", "email_spammed"]
    hook = create_webhook(api, receiver.endpoint(), events)
    report(api, delivery_id, "clicked", href="https://example.com/pricing")
    report(api, delivery_id, "bounced", reason="550 mailbox unavailable", recipient="other@example.com")
    report(api, delivery_id, "spammed")
    report(api, delivery_id, "dropped")
    posts = receiver.wait_for(4)
    wait_sent(api, hook["id"])
    envelopes = [post.json() for post in posts]
    assert [envelope["metric"] for envelope in envelopes] == ["clicked", "bounced", "spammed", "dropped"]
    assert all(signature_valid(api, post) for post in posts)
    clicked, bounced, spammed, dropped = envelopes
    assert clicked["data"]["href"] == "https://example.com/pricing"
    # The spec also requires link_id on clicks: Tidings has no tracked-link id for a click reported through
    # /metrics, and that is the only thing missing.
    assert spec_errors({**clicked, "data": {**clicked["data"], "link_id": 1}}) == []
    assert bounced["data"]["failure_message"] == "550 mailbox unavailable"
    assert bounced["data"]["recipient"] == "other@example.com"
    assert dropped["data"]["failure_message"] == ""
    for envelope in (bounced, spammed, dropped):
        assert spec_errors(envelope) == [], envelope
    assert len({envelope["event_id"] for envelope in envelopes}) == 4


def test_unsubscribe_posts_email_and_customer_unsubscribed(api: Api, receiver: Receiver) -> None:
    delivery_id, template_id = make_delivery(api, "un")
    hook = create_webhook(api, receiver.endpoint(), ["email_unsubscribed", "customer_unsubscribed"])
    answer = httpx.post(f"{api.server.base_url}/unsubscribe/{delivery_id}", json={"unsubscribe": True})
    assert answer.status_code == 200
    email, customer = (post.json() for post in receiver.wait_for(2))
    identifiers = {"id": "un", "email": "un@example.com", "cio_id": cio_id_of(api, "un")}
    assert (email["object_type"], email["metric"]) == ("email", "unsubscribed")
    assert email["data"] == {
        "delivery_id": delivery_id,
        "customer_id": "un",
        "identifiers": identifiers,
        "transactional_message_id": template_id,
        "recipient": "un@example.com",
        "subject": "Your receipt",
    }
    assert (customer["object_type"], customer["metric"]) == ("customer", "unsubscribed")
    assert customer["data"] == {
        "customer_id": "un",
        "identifiers": identifiers,
        "email_address": "un@example.com",
    }
    assert spec_errors(email) == []
    assert spec_errors(customer) == []
    # Unsubscribing again (clients retry one-click posts) changes nothing and posts nothing more.
    again = httpx.post(f"{api.server.base_url}/unsubscribe/{delivery_id}", json={"unsubscribe": True})
    assert again.status_code == 200
    wait_sent(api, hook["id"])
    assert outbox(api, hook["id"]) == [("sent", "unsubscribed")] * 2
    assert len(receiver.received()) == 2


def test_only_subscribed_events_are_posted(api: Api, receiver: Receiver) -> None:
    delivery_id, _ = make_delivery(api, "filt")
    opens = create_webhook(api, receiver.endpoint("opens"), ["email_opened"])
    deliveries = create_webhook(api, receiver.endpoint("deliveries"), ["email_delivered", "email_bounced"])
    for metric in ("delivered", "converted", "opened"):
        report(api, delivery_id, metric)
    receiver.wait_for(1, "opens")
    receiver.wait_for(1, "deliveries")
    wait_sent(api, opens["id"])
    wait_sent(api, deliveries["id"])
    assert outbox(api, opens["id"]) == [("sent", "opened")]
    assert outbox(api, deliveries["id"]) == [("sent", "delivered")]
    assert [post.json()["metric"] for post in receiver.received("opens")] == ["opened"]
    assert [post.json()["metric"] for post in receiver.received("deliveries")] == ["delivered"]


def test_full_resolution_decides_about_repeated_opens_and_clicks(api: Api, receiver: Receiver) -> None:
    delivery_id, _ = make_delivery(api, "fr")
    events = ["email_opened", "email_clicked"]
    unique = create_webhook(api, receiver.endpoint("unique"), events)
    every = create_webhook(api, receiver.endpoint("every"), events, full_resolution=True)
    for metric in ("opened", "opened", "clicked", "clicked", "opened"):
        report(api, delivery_id, metric, href="https://example.com/")
    receiver.wait_for(5, "every")
    receiver.wait_for(2, "unique")
    wait_sent(api, unique["id"])
    wait_sent(api, every["id"])
    assert outbox(api, every["id"]) == [("sent", "opened")] * 2 + [("sent", "clicked")] * 2 + [
        ("sent", "opened")
    ]
    assert outbox(api, unique["id"]) == [("sent", "opened"), ("sent", "clicked")]
    assert [post.json()["metric"] for post in receiver.received("every")] == [
        "opened",
        "opened",
        "clicked",
        "clicked",
        "opened",
    ]
    assert len(receiver.received("unique")) == 2


def test_push_events_name_the_device(api: Api, receiver: Receiver) -> None:
    delivery_id, template_id = make_delivery(api, "pu", channel="push", recipient="tok-ios-1", subject=None)
    ok(api.track.put("/api/v1/customers/pu/devices", json={"device": {"id": "tok-ios-1", "platform": "ios"}}))
    hook = create_webhook(api, receiver.endpoint(), ["push_opened", "push_delivered"])
    ok(
        api.track.post(
            "/api/v1/push/events",
            json={"delivery_id": delivery_id, "event": "opened", "device_id": "tok-ios-1"},
        )
    )
    report(api, delivery_id, "delivered")
    opened, delivered = (post.json() for post in receiver.wait_for(2))
    wait_sent(api, hook["id"])
    assert (opened["object_type"], opened["metric"]) == ("push", "opened")
    assert opened["data"]["recipients"] == [{"device_id": "tok-ios-1", "device_platform": "ios"}]
    assert opened["data"]["transactional_message_id"] == template_id
    assert (delivered["object_type"], delivered["metric"]) == ("push", "delivered")
    assert delivered["data"]["recipients"] == [{"device_id": "tok-ios-1", "device_platform": "ios"}]
    assert spec_errors(opened) == []
    assert spec_errors(delivered) == []


def test_a_delivery_tidings_does_not_know_is_reported_as_email(api: Api, receiver: Receiver) -> None:
    create_webhook(api, receiver.endpoint(), ["email_opened"])
    report(api, "external-delivery-1", "opened", recipient="someone@example.com")
    [post] = receiver.wait_for(1)
    envelope = post.json()
    assert (envelope["object_type"], envelope["metric"]) == ("email", "opened")
    assert envelope["data"] == {
        "delivery_id": "external-delivery-1",
        "customer_id": "",
        "identifiers": {"id": None, "email": None},
        "recipient": "someone@example.com",
    }


def test_another_workspaces_events_are_not_posted(api: Api, other_api: Api, receiver: Receiver) -> None:
    mine = create_webhook(api, receiver.endpoint("mine"), ["email_opened"])
    create_webhook(other_api, receiver.endpoint("theirs"), ["email_opened"])
    their_delivery, _ = make_delivery(other_api, "them")
    report(other_api, their_delivery, "opened")
    receiver.wait_for(1, "theirs")
    my_delivery, _ = make_delivery(api, "me")
    report(api, my_delivery, "opened")
    [post] = receiver.wait_for(1, "mine")
    assert post.json()["data"]["delivery_id"] == my_delivery
    wait_sent(api, mine["id"])
    assert outbox(api, mine["id"]) == [("sent", "opened")]
    assert len(receiver.received()) == 2


def test_subscription_changes_through_the_track_api_are_posted(api: Api, receiver: Receiver) -> None:
    create_webhook(
        api,
        receiver.endpoint(),
        ["customer_unsubscribed", "customer_subscribed", "customer_cio_subscription_preferences_changed"],
    )
    identify(api, "sub", email="sub@example.com")
    identify(api, "sub", unsubscribed=True)
    identify(api, "sub", unsubscribed=True)  # no change, no post
    identify(api, "sub", unsubscribed=False, cio_subscription_preferences={"topics": {"topic_1": False}})
    posts = [post.json() for post in receiver.wait_for(3)]
    assert [post["metric"] for post in posts] == [
        "unsubscribed",
        "subscribed",
        "cio_subscription_preferences_changed",
    ]
    assert all(post["object_type"] == "customer" for post in posts)
    assert posts[0]["data"]["email_address"] == "sub@example.com"
    assert posts[2]["data"]["content"] == '{"topics":{"topic_1":false}}'
    for post in posts[:2]:
        assert spec_errors(post) == [], post

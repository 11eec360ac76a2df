"""customerio-node's APIClient sends through Tidings; the opens, clicks and unsubscribe that follow reach a
local reporting-webhook receiver, whose posts are verified with the signature check Customer.io's own Node
client ships (``verifyRequestSignature``)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.clients.test_node_clients import run_node
from tests.harness import Api
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import message, ok, settled
from tests.transactional.test_send import mail_for, part
from tests.webhooks.receiver import Receiver

EVENTS = ["email_sent", "email_opened", "email_clicked", "email_unsubscribed", "customer_unsubscribed"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def test_node_sends_and_metrics_come_back_as_signed_webhooks(
    api: Api, sink: SmtpSink, receiver: Receiver
) -> None:
    hook = ok(
        api.app.post(
            "/v1/reporting_webhooks",
            json={"name": "all", "endpoint": receiver.endpoint(), "events": EVENTS, "with_content": True},
        )
    )
    ok(
        api.app.post(
            "/v1/transactional",
            json={
                "name": "Order",
                "trigger_name": "order",
                "content": {
                    "from": "shop@example.com",
                    "subject": "Order {{ trigger.order.id }}",
                    "body": (
                        '<p>Total {{ trigger.order.total }}</p><a href="https://example.com/o">See it</a>'
                    ),
                },
            },
        )
    )
    person = f"n-{secrets.token_hex(4)}"
    ok(api.track.put(f"/api/v1/customers/{person}", json={"email": f"{person}@example.com"}))
    steps = run_node(api, "messaging.js", "send", NODE_PERSON=person, NODE_TEMPLATE="order")

    assert steps["sendEmail.template"]["ok"], steps
    delivery_id = steps["sendEmail.template"]["value"]["delivery_id"]
    assert isinstance(steps["sendEmail.template"]["value"]["queued_at"], int)
    assert steps["sendEmail.inline"]["ok"], steps
    assert not steps["sendEmail.missingTo"]["ok"]
    assert steps["sendEmail.missingTo"]["error"]["statusCode"] == 400
    assert "to is required" in steps["sendEmail.missingTo"]["error"]["message"]
    assert steps["sendSMS.unknownTemplate"]["error"]["statusCode"] == 404

    mail = mail_for(sink, delivery_id)
    assert mail["Subject"] == "Order N-7"
    html = part(mail, "html")
    assert "Total 42" in html
    pixel = re.search(r'<img src="([^"]+/o/[^"]+)"', html)
    click = re.search(r'href="([^"]+/c/[^"]+)"', html)
    assert pixel is not None
    assert click is not None
    assert settled(api, delivery_id)["state"] == "sent"
    with httpx.Client() as browser:
        browser.get(pixel.group(1))
        browser.get(pixel.group(1))
        assert browser.get(click.group(1)).headers["location"] == "https://example.com/o"
        unsubscribe = re.search(r"<(http[^>]+)>", mail["List-Unsubscribe"] or "")
        assert unsubscribe is not None
        browser.post(unsubscribe.group(1), data={"List-Unsubscribe": "One-Click"})
    assert message(api, delivery_id)["state"] == "unsubscribed"

    # Posts arrive once each (the second open is not unique), in the order things happened.
    posts = receiver.wait_for(6)
    # Customer events name the person only; message events name the delivery.
    mine = [
        p
        for p in posts
        if p.json()["data"].get("delivery_id") == delivery_id
        or (p.json()["object_type"] == "customer" and p.json()["data"]["identifiers"]["id"] == person)
    ]
    names = [f"{p.json()['object_type']}_{p.json()['metric']}" for p in mine]
    assert names == [
        "email_sent",
        "email_opened",
        "email_clicked",
        "email_unsubscribed",
        "customer_unsubscribed",
    ]
    sent = mine[0].json()
    assert sent["data"]["identifiers"]["id"] == person
    assert (
        sent["data"]["transactional_message_id"]
        == ok(api.app.get("/v1/transactional/order"))["message"]["id"]
    )
    assert "Total 42" in sent["data"]["content"]
    assert mine[2].json()["data"]["href"] == "https://example.com/o"

    # Customer.io's own Node check accepts every signature, and refuses a tampered body.
    verified = run_node(
        api,
        "messaging.js",
        "verify",
        CIO_WEBHOOK_SIGNING_KEY=api.creds.webhook_signing_key,
        CIO_WEBHOOK_POSTS=json.dumps(
            [
                {
                    "timestamp": p.headers["x-cio-timestamp"],
                    "signature": p.headers["x-cio-signature"],
                    "body": p.body.decode(),
                }
                for p in posts
            ]
        ),
    )
    assert verified["valid"]["value"] == [True] * len(posts)
    assert verified["tampered"]["value"] == [False] * len(posts)
    ok(api.app.delete(f"/v1/reporting_webhooks/{hook['id']}"))

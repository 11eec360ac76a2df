"""Outbound safety: unless the operator allows it, Tidings does not post to private or loopback addresses,
whatever a workspace configures; the refusal shows in the webhook's status and the post waits."""

from __future__ import annotations

import time

from tests.harness import Api
from tests.webhooks.conftest import create_webhook, make_delivery, report, wait_until, webhook
from tests.webhooks.receiver import Receiver


def test_a_loopback_endpoint_is_refused_and_never_posted(guarded_api: Api, receiver: Receiver) -> None:
    delivery_id, _ = make_delivery(guarded_api, "ssrf")
    hook = create_webhook(guarded_api, receiver.endpoint(), ["email_delivered"])
    report(guarded_api, delivery_id, "delivered")
    wait_until(lambda: webhook(guarded_api, hook["id"])["status"]["last_error"] is not None, "the refusal")
    status = webhook(guarded_api, hook["id"])["status"]
    assert status["last_error"].startswith("refused:")
    assert "127.0.0.1" in status["last_error"]
    assert status["last_status"] is None
    assert status["failing_since"] is not None
    assert status["pending"] == 1
    time.sleep(0.3)
    assert receiver.received() == []

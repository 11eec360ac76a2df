"""Per-endpoint order and retries: a failing post holds back the later ones (Customer.io's backlog) until it
gets through or is abandoned after 7 days; a disabled webhook's posts wait; the failure shows in the
webhook's status. The server's clock is moved past each wait instead of sleeping through it."""

from __future__ import annotations

import time

from tests.harness import Api
from tests.webhooks.conftest import (
    HOUR,
    Json,
    advance,
    create_webhook,
    make_delivery,
    ok,
    outbox,
    report,
    server_now,
    signature_valid,
    wait_sent,
    wait_until,
    webhook,
)
from tests.webhooks.receiver import Receiver

DAY = 86400
# Long enough for several worker polls (every 0.1 s): what has not arrived by then was held back.
QUIET_SECONDS = 0.4


def wait_failing(api: Api, webhook_id: int, attempts: int) -> Json:
    """Wait until the worker has recorded ``attempts`` failed attempts of the webhook's oldest post."""

    def recorded() -> bool:
        rows = api.server.sql(
            "SELECT attempts FROM webhook_posts WHERE webhook_id = :h ORDER BY id LIMIT 1", h=webhook_id
        )
        return bool(rows) and rows[0][0] >= attempts

    wait_until(recorded, f"attempt {attempts} to be recorded")
    status: Json = webhook(api, webhook_id)["status"]
    return status


def test_a_failing_post_holds_back_the_later_ones_until_it_gets_through(api: Api, receiver: Receiver) -> None:
    delivery_id, _ = make_delivery(api, "ord")
    hook = create_webhook(api, receiver.endpoint(), ["email_delivered", "email_opened", "email_clicked"])
    receiver.fail_next(2, status=500)
    for metric in ("delivered", "opened", "clicked"):
        report(api, delivery_id, metric, href="https://example.com/")
    receiver.wait_for(1)
    started = server_now(api)
    status = wait_failing(api, hook["id"], 1)
    assert status["last_status"] == 500
    assert status["last_error"].startswith("HTTP 500")
    assert abs(status["failing_since"] - started) <= 5
    assert status["pending"] == 3
    # 500 is one of the statuses Customer.io waits an hour after; nothing goes out meanwhile.
    time.sleep(QUIET_SECONDS)
    advance(api, HOUR - 60)
    time.sleep(QUIET_SECONDS)
    assert len(receiver.received()) == 1
    advance(api, 61)
    receiver.wait_for(2)
    wait_failing(api, hook["id"], 2)
    time.sleep(QUIET_SECONDS)
    assert len(receiver.received()) == 2
    advance(api, HOUR + 1)
    posts = receiver.wait_for(5)
    status = wait_sent(api, hook["id"])

    assert [post.status for post in posts] == [500, 500, 200, 200, 200]
    assert [post.json()["metric"] for post in posts] == ["delivered"] * 3 + ["opened", "clicked"]
    # Every attempt sends the same bytes, signed afresh.
    assert posts[0].body == posts[1].body == posts[2].body
    assert all(signature_valid(api, post) for post in posts)
    assert status["failing_since"] is None
    assert status["last_status"] == 200
    assert status["last_success_at"] >= started + 2 * HOUR
    assert outbox(api, hook["id"]) == [("sent", "delivered"), ("sent", "opened"), ("sent", "clicked")]
    time.sleep(QUIET_SECONDS)
    assert len(receiver.received()) == 5


def test_other_statuses_back_off_exponentially_from_30_seconds(api: Api, receiver: Receiver) -> None:
    delivery_id, _ = make_delivery(api, "exp")
    hook = create_webhook(api, receiver.endpoint(), ["email_delivered"])
    receiver.fail_next(2, status=503)
    report(api, delivery_id, "delivered")
    receiver.wait_for(1)
    assert wait_failing(api, hook["id"], 1)["last_status"] == 503
    advance(api, 20)
    time.sleep(QUIET_SECONDS)
    assert len(receiver.received()) == 1
    advance(api, 11)
    receiver.wait_for(2)
    wait_failing(api, hook["id"], 2)
    # The second wait is twice as long: 60 s.
    advance(api, 40)
    time.sleep(QUIET_SECONDS)
    assert len(receiver.received()) == 2
    advance(api, 21)
    posts = receiver.wait_for(3)
    assert [post.status for post in posts] == [503, 503, 200]
    wait_sent(api, hook["id"])


def test_a_disabled_webhook_keeps_its_posts_until_enabled(api: Api, receiver: Receiver) -> None:
    delivery_id, _ = make_delivery(api, "dis")
    hook = create_webhook(api, receiver.endpoint(), ["email_delivered", "email_opened"])
    receiver.fail_next(1, status=500)
    report(api, delivery_id, "delivered")
    receiver.wait_for(1)
    wait_failing(api, hook["id"], 1)
    ok(api.app.put(f"/v1/reporting_webhooks/{hook['id']}", json={"disabled": True}))
    # While disabled: what waits is kept but not posted; new events are not queued for it.
    report(api, delivery_id, "opened")
    advance(api, 2 * HOUR)
    time.sleep(QUIET_SECONDS)
    assert len(receiver.received()) == 1
    assert webhook(api, hook["id"])["status"]["pending"] == 1
    ok(api.app.put(f"/v1/reporting_webhooks/{hook['id']}", json={"disabled": False}))
    posts = receiver.wait_for(2)
    assert [(post.status, post.json()["metric"]) for post in posts] == [
        (500, "delivered"),
        (200, "delivered"),
    ]
    wait_sent(api, hook["id"])
    assert outbox(api, hook["id"]) == [("sent", "delivered")]


def test_a_post_is_abandoned_after_seven_days_and_the_queue_moves_on(api: Api, receiver: Receiver) -> None:
    delivery_id, _ = make_delivery(api, "aband")
    hook = create_webhook(api, receiver.endpoint(), ["email_delivered", "email_opened"])
    receiver.fail_next(2, status=410)
    report(api, delivery_id, "delivered")
    report(api, delivery_id, "opened")
    receiver.wait_for(1)
    wait_failing(api, hook["id"], 1)
    advance(api, 7 * DAY + HOUR)
    posts = receiver.wait_for(3)
    status = wait_sent(api, hook["id"])
    assert [(post.status, post.json()["metric"]) for post in posts] == [
        (410, "delivered"),
        (410, "delivered"),
        (200, "opened"),
    ]
    assert outbox(api, hook["id"]) == [("abandoned", "delivered"), ("sent", "opened")]
    assert "abandoned" in status["last_error"]
    assert status["failing_since"] is None


def test_deleting_a_webhook_drops_its_waiting_posts(api: Api, receiver: Receiver) -> None:
    delivery_id, _ = make_delivery(api, "del")
    hook = create_webhook(api, receiver.endpoint(), ["email_delivered"])
    receiver.fail_next(1, status=500)
    report(api, delivery_id, "delivered")
    report(api, delivery_id, "delivered")
    wait_failing(api, hook["id"], 1)
    assert webhook(api, hook["id"])["status"]["pending"] == 2
    ok(api.app.delete(f"/v1/reporting_webhooks/{hook['id']}"))
    assert outbox(api, hook["id"]) == []

"""The outbox in-process, on each store: what emit writes (content only in ``_sent`` events of with_content
webhooks), and how workers claim (only a webhook's oldest pending post, one worker at a time, a dead
worker's lease running out, PostgreSQL workers skipping each other's locked rows)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from tidings.db import Database
from tidings.models import WebhookPost
from tidings.webhooks import sender
from tidings.webhooks import service as webhooks
from tidings.workspaces.service import create_workspace

NOW = 1_800_000_000


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.close()


def _workspace(db: Database) -> int:
    workspace_id: int = db.run(lambda s: create_workspace(s, "outbox", now=NOW)).workspace_id
    return workspace_id


def _webhook(db: Database, workspace_id: int, events: list[str], **fields: Any) -> int:
    body = {"name": "hook", "endpoint": "https://hooks.example.com/", "events": events, **fields}
    webhook_id: int = db.run(lambda s: webhooks.create_webhook(s, workspace_id, body, now=NOW))["id"]
    return webhook_id


def _emit(db: Database, workspace_id: int, metric: str, *, count: int = 1, **extra: Any) -> None:
    def unit(session: Any) -> None:
        for index in range(count):
            webhooks.emit(
                session,
                workspace_id,
                object_type="email",
                metric=metric,
                timestamp=NOW,
                data={"delivery_id": f"d{index}"},
                now=NOW,
                **extra,
            )

    db.run(unit)


def _posts(db: Database, webhook_id: int) -> list[WebhookPost]:
    with db.read_session() as session:
        return list(
            session.scalars(
                select(WebhookPost).where(WebhookPost.webhook_id == webhook_id).order_by(WebhookPost.id)
            )
        )


def test_sent_events_carry_content_only_for_webhooks_with_content(db: Database) -> None:
    workspace_id = _workspace(db)
    plain = _webhook(db, workspace_id, ["email_sent", "email_delivered"])
    with_content = _webhook(db, workspace_id, ["email_sent", "email_delivered"], with_content=True)
    disabled = _webhook(db, workspace_id, ["email_sent"], disabled=True)
    rendered = {"subject": "Hi", "html": "<p>Hi</p>", "text": "Hi", "headers": {"X-Campaign": "spring"}}
    _emit(db, workspace_id, "sent", content=rendered)
    _emit(db, workspace_id, "delivered", content=rendered)

    [plain_sent, plain_delivered] = [json.loads(post.body) for post in _posts(db, plain)]
    [content_sent, content_delivered] = [json.loads(post.body) for post in _posts(db, with_content)]
    assert plain_sent["data"] == {"delivery_id": "d0"}
    assert content_sent["data"] == {
        "delivery_id": "d0",
        "content": "<p>Hi</p>",
        "headers": {"X-Campaign": ["spring"]},
    }
    # One event, one id, whoever hears of it.
    assert plain_sent["event_id"] == content_sent["event_id"]
    assert plain_delivered["data"] == content_delivered["data"] == {"delivery_id": "d0"}
    assert _posts(db, disabled) == []
    post = _posts(db, plain)[0]
    assert (post.state, post.attempts, post.next_attempt_at, post.created_at) == ("pending", 0, NOW, NOW)


def test_push_and_sms_content_follow_the_spec() -> None:
    push = {"title": "Hi", "message": "Sale", "devices": [{"token": "t", "platform": "ios"}]}
    assert json.loads(webhooks._content_fields("push", push)["content"]) == {"title": "Hi", "message": "Sale"}
    assert webhooks._content_fields("sms", {"body": "Sale", "to": "+15550100"}) == {"content": "Sale"}
    assert webhooks._content_fields("webhook", {"body": '{"a":1}', "url": "https://x"}) == {
        "content": '{"a":1}'
    }


def test_only_the_oldest_pending_post_is_claimed_and_by_one_worker(db: Database) -> None:
    workspace_id = _workspace(db)
    webhook_id = _webhook(db, workspace_id, ["email_opened"])
    _emit(db, workspace_id, "opened", count=3)
    first, second, _ = (post.id for post in _posts(db, webhook_id))

    def claim(worker: str, now: float) -> list[sender.Claimed]:
        with db.session() as session:
            return sender.claim(session, worker_id=worker, now=now, limit=10)

    [a] = claim("a", NOW)
    assert a.post_id == first
    assert a.signing_key is not None
    assert a.signing_key.startswith("whsec_")
    # The head is in flight: nobody may take it, nor the posts behind it.
    assert claim("b", NOW + 1) == []
    # Worker a died: once its lease ran out, b takes the same post over.
    [b] = claim("b", NOW + sender.LEASE_SECONDS + 1)
    assert b.post_id == first
    with db.session() as session:
        assert not sender.record(session, a, sender.Outcome(200, None), now=NOW + 70, worker_id="a")
    with db.session() as session:
        assert sender.record(session, b, sender.Outcome(200, None), now=NOW + 70, worker_id="b")
    [c] = claim("c", NOW + 71)
    assert c.post_id == second


def test_failures_wait_and_a_post_is_abandoned_after_seven_days(db: Database) -> None:
    workspace_id = _workspace(db)
    webhook_id = _webhook(db, workspace_id, ["email_opened"])
    _emit(db, workspace_id, "opened", count=2)

    def attempt(now: float, outcome: sender.Outcome) -> None:
        with db.session() as session:
            [claimed] = sender.claim(session, worker_id="w", now=now, limit=1)
        with db.session() as session:
            assert sender.record(session, claimed, outcome, now=now, worker_id="w")

    attempt(NOW, sender.Outcome(503, "HTTP 503"))
    head = _posts(db, webhook_id)[0]
    assert (head.state, head.attempts, head.next_attempt_at) == ("pending", 1, NOW + 30)
    with db.session() as session:
        assert sender.claim(session, worker_id="w", now=NOW + 29, limit=1) == []
    attempt(NOW + 30, sender.Outcome(None, "ConnectError: refused", long_wait=True))
    assert _posts(db, webhook_id)[0].next_attempt_at == NOW + 30 + 3600
    attempt(NOW + 7 * 86400, sender.Outcome(500, "HTTP 500", long_wait=True))
    head, following = _posts(db, webhook_id)
    assert (head.state, head.attempts) == ("abandoned", 3)
    assert following.state == "pending"
    status = db.run(lambda s: webhooks.get_webhook(s, workspace_id, webhook_id))["status"]
    assert status["failing_since"] == NOW
    assert status["last_status"] == 500
    assert status["pending"] == 1


def test_retry_delays_double_up_to_an_hour() -> None:
    delays = [sender.retry_delay(attempts, long_wait=False) for attempts in range(1, 10)]
    assert delays == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert sender.retry_delay(1, long_wait=True) == 3600
    assert sender.retry_delay(10_000, long_wait=False) == 3600


def test_postgresql_workers_skip_each_others_locked_heads(postgres_db: Database) -> None:
    db = postgres_db
    workspace_id = _workspace(db)
    busy = _webhook(db, workspace_id, ["email_opened"])
    idle = _webhook(db, workspace_id, ["email_opened"])
    _emit(db, workspace_id, "opened", count=2)
    busy_head = _posts(db, busy)[0].id
    idle_head = _posts(db, idle)[0].id
    with db.session() as first:
        # Worker a's claim transaction is still open (its rows locked, its lease not yet visible).
        [a] = sender.claim(first, worker_id="a", now=NOW, limit=1)
        started = time.monotonic()
        with db.session() as second:
            claimed = sender.claim(second, worker_id="b", now=NOW, limit=10)
        assert time.monotonic() - started < 2
    assert {a.post_id, *(c.post_id for c in claimed)} == {busy_head, idle_head}
    assert len(claimed) == 1

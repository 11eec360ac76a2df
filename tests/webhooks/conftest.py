"""Fixtures and helpers for reporting-webhook tests: a server per backend whose worker polls every 0.1 s,
whose clock the tests may move (``POST /_tidings/clock``, so retries an hour away are reached without
waiting) and which may post to 127.0.0.1; a local receiver per test; a workspace per test whose webhooks
are deleted afterwards (so the shared server stops retrying them).

Posts are asynchronous (the worker sends them), so tests wait with :meth:`Receiver.wait_for` and
:func:`wait_until`, which poll with a deadline.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.conftest import BACKENDS, serve
from tests.harness import Api, Server
from tests.webhooks.receiver import Received, Receiver

DEADLINE_SECONDS = 15.0
SERVER_ENV = {
    "TIDINGS_CLOCK_CONTROL": "true",
    "TIDINGS_WORKER_POLL_SECONDS": "0.1",
    "TIDINGS_OUTBOUND_ALLOW_PRIVATE": "true",
}
HOUR = 3600

Json = dict[str, Any]

# Customer.io's reporting-webhook spec: what Tidings posts must be a valid request body of it.
_SPEC = json.loads(
    (Path(__file__).parent / "specs" / "customerio-reporting-webhooks.openapi.json").read_text()
)
_MEDIA = _SPEC["webhooks"]["reportingWebhook"]["post"]["requestBody"]["content"]["application/json"]
_ENVELOPE = jsonschema_rs.validator_for({**_MEDIA["schema"], "components": _SPEC["components"]})


@pytest.fixture(scope="package", params=BACKENDS)
def webhook_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    backend: str = request.param
    yield from serve(backend, tmp_path_factory.mktemp(f"webhooks-{backend}"), **SERVER_ENV)


@pytest.fixture(scope="package")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default outbound policy: private and loopback addresses are refused."""
    env = {key: value for key, value in SERVER_ENV.items() if key != "TIDINGS_OUTBOUND_ALLOW_PRIVATE"}
    yield from serve("sqlite", tmp_path_factory.mktemp("webhooks-guarded"), **env)


def _workspace(server: Server) -> Iterator[Api]:
    client = Api(server, server.new_workspace())
    yield client
    for webhook in client.app.get("/v1/reporting_webhooks").json()["reporting_webhooks"]:
        client.app.delete(f"/v1/reporting_webhooks/{webhook['id']}")
    client.close()


@pytest.fixture
def api(webhook_server: Server) -> Iterator[Api]:
    yield from _workspace(webhook_server)


@pytest.fixture
def other_api(webhook_server: Server) -> Iterator[Api]:
    """A second workspace on the same server, for isolation tests."""
    yield from _workspace(webhook_server)


@pytest.fixture
def guarded_api(guarded_server: Server) -> Iterator[Api]:
    yield from _workspace(guarded_server)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


# -- helpers -------------------------------------------------------------------------------------------


def ok(response: httpx.Response) -> Json:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    body: Json = response.json() if response.content.strip() else {}
    return body


def app_error(response: httpx.Response, status: int) -> str:
    """Assert an App API error envelope with this status; return its detail."""
    assert response.status_code == status, response.text
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert errors[0]["status"] == str(status)
    detail: str = errors[0]["detail"]
    return detail


def wait_until(check: Callable[[], bool], what: str, timeout: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def advance(api: Api, seconds: float) -> int:
    """Move the server's clock forward; return its new time."""
    now: int = ok(api.app.post("/_tidings/clock", json={"advance": seconds}))["now"]
    return now


def server_now(api: Api) -> int:
    """The server's clock (moved by earlier tests), not the local one."""
    return advance(api, 0)


def create_webhook(api: Api, endpoint: str, events: list[str], **fields: Any) -> Json:
    body = {"name": fields.pop("name", "test hook"), "endpoint": endpoint, "events": events, **fields}
    return ok(api.app.post("/v1/reporting_webhooks", json=body))


def webhook(api: Api, webhook_id: int) -> Json:
    return ok(api.app.get(f"/v1/reporting_webhooks/{webhook_id}"))


def identify(api: Api, customer_id: str, **attributes: Any) -> None:
    ok(api.track.put(f"/api/v1/customers/{customer_id}", json=attributes))


def cio_id_of(api: Api, customer_id: str) -> str:
    cio_id: str = ok(api.attributes(customer_id))["customer"]["identifiers"]["cio_id"]
    return cio_id


def make_delivery(
    api: Api,
    customer_id: str,
    *,
    channel: str = "email",
    recipient: str | None = None,
    subject: str | None = "Your receipt",
) -> tuple[str, int]:
    """A transactional delivery to the person ``customer_id`` (created by the Track API if new), laid down by
    SQL as the messaging layer would; return (delivery id, transactional message id)."""
    identify(api, customer_id, email=f"{customer_id}@example.com")
    server = api.server
    workspace_id = api.creds.workspace_id
    person_id = server.sql(
        "SELECT id FROM people WHERE workspace_id = :w AND customer_id = :c", w=workspace_id, c=customer_id
    )[0][0]
    name = f"receipt-{secrets.token_hex(4)}"
    server.execute(
        "INSERT INTO message_templates (workspace_id, name, description, channel, content, languages,"
        " link_tracking, open_tracking, send_to_unsubscribed, hide_message_body, queue_drafts, auto_created,"
        " created_at, updated_at) VALUES (:w, :n, '', :ch, '{}', '{}', true, true, true, false, false, false,"
        " 1, 1)",
        w=workspace_id,
        n=name,
        ch=channel,
    )
    template_id: int = server.sql(
        "SELECT id FROM message_templates WHERE workspace_id = :w AND name = :n", w=workspace_id, n=name
    )[0][0]
    delivery_id = f"dlv{secrets.token_hex(10)}"
    server.execute(
        "INSERT INTO deliveries (id, workspace_id, person_id, channel, recipient, subject, template_id,"
        " created_at) VALUES (:d, :w, :p, :ch, :r, :s, :t, 1)",
        d=delivery_id,
        w=workspace_id,
        p=person_id,
        ch=channel,
        r=recipient if recipient is not None else f"{customer_id}@example.com",
        s=subject,
        t=template_id,
    )
    return delivery_id, template_id


def report(api: Api, delivery_id: str, metric: str, **fields: Any) -> None:
    ok(api.track.post("/api/v1/metrics", json={"delivery_id": delivery_id, "metric": metric, **fields}))


def signature_valid(api: Api, post: Received) -> bool:
    """Customer.io's check: hex HMAC-SHA256 of ``v0:<X-CIO-Timestamp>:<raw body>`` under the signing key."""
    message = b"v0:" + post.headers["x-cio-timestamp"].encode() + b":" + post.body
    expected = hmac.new(api.creds.webhook_signing_key.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, post.headers["x-cio-signature"])


def spec_errors(envelope: Json) -> list[str]:
    """Where ``envelope`` breaks Customer.io's reporting-webhook request schema (empty when valid)."""
    return [error.message for error in _ENVELOPE.iter_errors(envelope)]


def outbox(api: Api, webhook_id: int) -> list[tuple[str, str]]:
    """(state, metric) of every post written for a webhook, oldest first."""
    rows = api.server.sql(
        "SELECT state, body FROM webhook_posts WHERE webhook_id = :h ORDER BY id", h=webhook_id
    )
    return [(row[0], json.loads(row[1])["metric"]) for row in rows]


def wait_sent(api: Api, webhook_id: int) -> Json:
    """Wait until nothing of the webhook's is pending any more; return its status."""
    wait_until(lambda: webhook(api, webhook_id)["status"]["pending"] == 0, "the webhook's posts to be sent")
    status: Json = webhook(api, webhook_id)["status"]
    return status

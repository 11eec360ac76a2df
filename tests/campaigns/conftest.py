"""A server per backend with a real SMTP server (aiosmtpd), a movable clock and a fast-polling worker,
shared by the campaign tests; a fresh workspace per test. Tests tell their mail apart by recipient."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from customerio.track import CustomerIO

from tests.clients.test_python_track import track_client
from tests.conftest import BACKENDS, serve, workspace_api
from tests.harness import Api, Server
from tests.messaging.smtp_sink import Received, SmtpSink
from tests.transactional.conftest import ok

Json = dict[str, Any]


@pytest.fixture(scope="package")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture(scope="package", params=BACKENDS)
def campaign_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink
) -> Iterator[Server]:
    backend: str = request.param
    env = {
        "TIDINGS_SMTP_URL": sink.url,
        "TIDINGS_WORKER_POLL_SECONDS": "0.05",
        "TIDINGS_OUTBOUND_ALLOW_PRIVATE": "true",
        "TIDINGS_CLOCK_CONTROL": "true",
    }
    yield from serve(backend, tmp_path_factory.mktemp(f"campaigns-{backend}"), **env)


@pytest.fixture
def api(campaign_server: Server) -> Iterator[Api]:
    yield from workspace_api(campaign_server)


@pytest.fixture
def cio(api: Api) -> Iterator[CustomerIO]:
    client = track_client(api)
    yield client
    client.http.close()


@pytest.fixture
def email() -> Callable[[str], str]:
    """Addresses unique to the test, so the shared SMTP server's mail can be told apart."""
    tag = uuid.uuid4().hex[:10]
    return lambda name: f"{name}-{tag}@example.com"


def mail_to(sink: SmtpSink, address: str, count: int = 1, timeout: float = 20) -> list[Received]:
    """Wait until ``count`` messages to ``address`` have arrived; return them (oldest first)."""
    end = time.monotonic() + timeout
    while True:
        found = [m for m in list(sink.messages) if address in m.rcpt_tos]
        if len(found) >= count:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"expected {count} message(s) to {address}, got {len(found)}")
        time.sleep(0.05)


def no_mail_to(sink: SmtpSink, address: str, expected: int = 0, settle: float = 1.0) -> None:
    """Give the worker a moment, then check that no more than ``expected`` messages reached ``address``."""
    time.sleep(settle)
    found = [m for m in list(sink.messages) if address in m.rcpt_tos]
    assert len(found) == expected, f"{address} got {len(found)} messages, expected {expected}"


def create(api: Api, definition: Json, *, activate: bool = True) -> Json:
    campaign: Json = ok(api.app.post("/v1/campaigns", json=definition))["campaign"]
    if activate:
        campaign = ok(api.app.post(f"/v1/campaigns/{campaign['id']}/activate"))["campaign"]
    return campaign


def advance(api: Api, seconds: float) -> int:
    now: int = ok(api.app.post("/_tidings/clock", json={"advance": seconds}))["now"]
    return now


def journeys(api: Api, campaign_id: int, **params: Any) -> list[Json]:
    found: list[Json] = ok(
        api.app.get(f"/v1/campaigns/{campaign_id}/journeys", params={"steps": "true", **params})
    )["journeys"]
    return found


def eventually(check: Callable[[], Any], *, what: str, deadline: float = 20.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def email_block(
    block_id: str, subject: str, body: str = "<p>Hi {{ customer.first_name | default: 'there' }}</p>"
) -> Json:
    return {
        "id": block_id,
        "type": "email",
        "content": {
            "from": "news@example.com",
            "to": "{{ customer.email }}",
            "subject": subject,
            "body": body,
        },
    }

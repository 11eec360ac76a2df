"""A server per backend with a real SMTP server (aiosmtpd), a movable clock and a fast-polling worker,
shared by the newsletter tests; a fresh workspace per test. Tests tell their mail apart by recipient."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from customerio.track import CustomerIO

from tests.clients.test_python_track import track_client
from tests.conftest import BACKENDS, serve, workspace_api
from tests.harness import Api, Server
from tests.messaging.smtp_sink import Received, SmtpSink

Json = dict[str, Any]


@pytest.fixture(scope="package")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture(scope="package", params=BACKENDS)
def newsletter_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink
) -> Iterator[Server]:
    backend: str = request.param
    env = {
        "TIDINGS_SMTP_URL": sink.url,
        "TIDINGS_WORKER_POLL_SECONDS": "0.05",
        "TIDINGS_CLOCK_CONTROL": "true",
    }
    yield from serve(backend, tmp_path_factory.mktemp(f"newsletters-{backend}"), **env)


@pytest.fixture
def api(newsletter_server: Server) -> Iterator[Api]:
    yield from workspace_api(newsletter_server)


@pytest.fixture
def other_api(newsletter_server: Server) -> Iterator[Api]:
    yield from workspace_api(newsletter_server)


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


def ok(response: httpx.Response) -> Json:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    body: Json = response.json()
    return body


def error(response: httpx.Response, status: int) -> str:
    """The App API envelope's detail, after checking the status."""
    assert response.status_code == status, f"{response.request.url}: {response.status_code} {response.text}"
    errors = response.json()["errors"]
    assert errors
    assert errors[0]["status"] == str(status)
    detail: str = errors[0]["detail"]
    return detail


def mails_to(sink: SmtpSink, address: str) -> list[Received]:
    return [m for m in list(sink.messages) if address in m.rcpt_tos]


def mail_to(sink: SmtpSink, address: str, count: int = 1, timeout: float = 20) -> list[Received]:
    """Wait until ``count`` messages to ``address`` have arrived; return them (oldest first)."""
    end = time.monotonic() + timeout
    while True:
        found = mails_to(sink, address)
        if len(found) >= count:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"expected {count} message(s) to {address}, got {len(found)}")
        time.sleep(0.05)


def now(api: Api) -> int:
    return advance(api, 0)


def advance(api: Api, seconds: float) -> int:
    moved: int = ok(api.app.post("/_tidings/clock", json={"advance": seconds}))["now"]
    return moved


def eventually(check: Callable[[], Any], *, what: str, deadline: float = 20.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def newsletter_body(**fields: Any) -> Json:
    body: Json = {
        "name": "March news",
        "type": "email",
        "recipients": {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}},
        "from": "news@example.com",
        "subject": "News for {{ customer.first_name | default: 'you' }}",
        "body": '<p>Hello</p><p><a href="https://example.com/spring">Spring</a></p>',
    }
    body.update(fields)
    return body


def create(api: Api, **fields: Any) -> Json:
    created: Json = ok(api.app.post("/v1/newsletters", json=newsletter_body(**fields)))["newsletter"]
    return created


def get(api: Api, newsletter_id: int) -> Json:
    found: Json = ok(api.app.get(f"/v1/newsletters/{newsletter_id}"))["newsletter"]
    return found


def sent(api: Api, newsletter_id: int) -> Json:
    """The newsletter once every delivery has been written."""
    found: Json = eventually(
        lambda: (n := get(api, newsletter_id))["state"] == "sent" and n,
        what=f"newsletter {newsletter_id} sent",
    )
    return found


def messages(api: Api, newsletter_id: int, **params: Any) -> list[Json]:
    found: list[Json] = ok(
        api.app.get(f"/v1/newsletters/{newsletter_id}/messages", params={"limit": 1000, **params})
    )["messages"]
    return found

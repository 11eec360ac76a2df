"""A server per backend with a real SMTP server (aiosmtpd), a movable clock and a fast-polling worker,
shared by the newsletter tests; a fresh workspace per test. Tests tell their mail apart by recipient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from customerio.track import CustomerIO

from tests.clients.test_python_track import track_client
from tests.conftest import BACKENDS, workspace_api
from tests.harness import Api, Server
from tests.mail import advance, eventually, ok, serve_with_mail, unique_addresses
from tests.messaging.smtp_sink import SmtpSink

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
    yield from serve_with_mail(backend, tmp_path_factory.mktemp(f"newsletters-{backend}"), sink)


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
    return unique_addresses()


def error(response: httpx.Response, status: int) -> str:
    """The App API envelope's detail, after checking the status."""
    assert response.status_code == status, f"{response.request.url}: {response.status_code} {response.text}"
    errors = response.json()["errors"]
    assert errors
    assert errors[0]["status"] == str(status)
    detail: str = errors[0]["detail"]
    return detail


def now(api: Api) -> int:
    return advance(api, 0)


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

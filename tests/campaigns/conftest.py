"""A server per backend with a real SMTP server (aiosmtpd), a movable clock and a fast-polling worker,
shared by the campaign tests; a fresh workspace per test. Tests tell their mail apart by recipient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from customerio.track import CustomerIO

from tests.clients.test_python_track import track_client
from tests.conftest import BACKENDS, workspace_api
from tests.harness import Api, Server
from tests.mail import ok, serve_with_mail, unique_addresses
from tests.messaging.smtp_sink import SmtpSink

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
    workdir = tmp_path_factory.mktemp(f"campaigns-{backend}")
    yield from serve_with_mail(backend, workdir, sink, TIDINGS_OUTBOUND_ALLOW_PRIVATE="true")


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
    return unique_addresses()


def create(api: Api, definition: Json, *, activate: bool = True) -> Json:
    campaign: Json = ok(api.app.post("/v1/campaigns", json=definition))["campaign"]
    if activate:
        campaign = ok(api.app.post(f"/v1/campaigns/{campaign['id']}/activate"))["campaign"]
    return campaign


def journeys(api: Api, campaign_id: int, **params: Any) -> list[Json]:
    found: list[Json] = ok(
        api.app.get(f"/v1/campaigns/{campaign_id}/journeys", params={"steps": "true", **params})
    )["journeys"]
    return found


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

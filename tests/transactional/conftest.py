"""A server per backend that sends email to a real SMTP server (aiosmtpd) and whose worker polls fast,
shared by the transactional tests; a fresh workspace per test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, serve, workspace_api
from tests.harness import Api, Server
from tests.messaging.smtp_sink import SmtpSink

DEADLINE_SECONDS = 20.0
Json = dict[str, Any]


@pytest.fixture(scope="package")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture(scope="package", params=BACKENDS)
def mail_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink
) -> Iterator[Server]:
    backend: str = request.param
    env = {
        "TIDINGS_SMTP_URL": sink.url,
        "TIDINGS_WORKER_POLL_SECONDS": "0.05",
        "TIDINGS_OUTBOUND_ALLOW_PRIVATE": "true",
        "TIDINGS_CLOCK_CONTROL": "true",
    }
    yield from serve(backend, tmp_path_factory.mktemp(f"transactional-{backend}"), **env)


@pytest.fixture
def api(mail_server: Server) -> Iterator[Api]:
    yield from workspace_api(mail_server)


@pytest.fixture
def other_api(mail_server: Server) -> Iterator[Api]:
    """A second workspace on the same server, for isolation tests."""
    yield from workspace_api(mail_server)


def ok(response: httpx.Response) -> Json:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    body: Json = response.json()
    return body


def eventually(check: Callable[[], Any], *, what: str, deadline: float = DEADLINE_SECONDS) -> Any:
    """Poll ``check`` until it returns something truthy (the worker sends asynchronously)."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def message(api: Api, delivery_id: str) -> Json:
    found: Json = ok(api.app.get(f"/v1/messages/{delivery_id}"))["message"]
    return found


def settled(api: Api, delivery_id: str) -> Json:
    """The delivery once the worker is done with it (sent, failed, dropped, ...)."""

    def done() -> Json | None:
        found = message(api, delivery_id)
        return found if found["state"] not in ("queued", "sending") else None

    result: Json = eventually(done, what=f"delivery {delivery_id} to settle")
    return result

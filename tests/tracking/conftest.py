"""A server per backend whose clock the tests may move (``POST /_tidings/clock``: the first open must stay
the first when a later one comes, a subscription center link must expire), shared by the tracking tests; a
fresh workspace per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BACKENDS, serve, workspace_api
from tests.harness import Api, Server

SERVER_ENV = {"TIDINGS_CLOCK_CONTROL": "true", "TIDINGS_WORKER_POLL_SECONDS": "0.1"}


@pytest.fixture(scope="package", params=BACKENDS)
def tracking_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    backend: str = request.param
    yield from serve(backend, tmp_path_factory.mktemp(f"tracking-{backend}"), **SERVER_ENV)


@pytest.fixture
def api(tracking_server: Server) -> Iterator[Api]:
    yield from workspace_api(tracking_server)


@pytest.fixture
def other_api(tracking_server: Server) -> Iterator[Api]:
    """A second workspace on the same server, for isolation tests."""
    yield from workspace_api(tracking_server)

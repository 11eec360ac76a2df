"""A server per backend whose clock the tests may move (``POST /_tidings/clock``: the first open must stay
the first when a later one comes, a subscription center link must expire), shared by the tracking tests; a
fresh workspace per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BACKENDS, _require_postgres
from tests.harness import Api, Server, postgres_database, start_server, stop_server

SERVER_ENV = {"TIDINGS_CLOCK_CONTROL": "true", "TIDINGS_WORKER_POLL_SECONDS": "0.1"}


@pytest.fixture(scope="package", params=BACKENDS)
def tracking_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    backend: str = request.param
    workdir = tmp_path_factory.mktemp(f"tracking-{backend}")
    if backend == "sqlite":
        running = start_server(f"sqlite:///{workdir / 'tidings.db'}", backend, workdir, **SERVER_ENV)
        yield running
        stop_server(running)
        return
    _require_postgres()
    with postgres_database() as url:
        running = start_server(url, backend, workdir, **SERVER_ENV)
        yield running
        stop_server(running)


@pytest.fixture
def api(tracking_server: Server) -> Iterator[Api]:
    client = Api(tracking_server, tracking_server.new_workspace())
    yield client
    client.close()


@pytest.fixture
def other_api(tracking_server: Server) -> Iterator[Api]:
    """A second workspace on the same server, for isolation tests."""
    client = Api(tracking_server, tracking_server.new_workspace())
    yield client
    client.close()

"""Fixtures: one real Tidings server per database backend for the whole session, a fresh workspace per
test. Every test that takes ``api`` or ``server`` runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Api, Server, postgres_available, postgres_database, start_server, stop_server
from tidings.db import Database
from tidings.db.migrate import upgrade

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    backend: str = request.param
    yield from serve(backend, tmp_path_factory.mktemp(f"server-{backend}"))


def serve(backend: str, workdir: Path, **env: str) -> Iterator[Server]:
    """A running server of ``backend`` on a fresh database, stopped (and its database dropped) after use:
    the body of every server fixture, which test packages call with the settings they need."""
    if backend == "sqlite":
        running = start_server(f"sqlite:///{workdir / 'tidings.db'}", backend, workdir, **env)
        yield running
        stop_server(running)
        return
    _require_postgres()
    with postgres_database() as url:
        running = start_server(url, backend, workdir, **env)
        yield running
        stop_server(running)


def workspace_api(server: Server) -> Iterator[Api]:
    """Clients for a fresh workspace on ``server``, closed after use."""
    client = Api(server, server.new_workspace())
    yield client
    client.close()


def _require_postgres() -> None:
    if not postgres_available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not reachable and CI=true: PostgreSQL tests may not be skipped")
        pytest.skip("PostgreSQL is not reachable")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of each backend, for tests that use Tidings in-process."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tidings.db'}"
        upgrade(url)
        yield url
        return
    _require_postgres()
    with postgres_database() as url:
        upgrade(url)
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, for in-process tests of what only PostgreSQL does."""
    _require_postgres()
    with postgres_database() as url:
        upgrade(url)
        yield url


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    yield database
    database.close()


@pytest.fixture
def api(server: Server) -> Iterator[Api]:
    yield from workspace_api(server)


@pytest.fixture
def other_api(server: Server) -> Iterator[Api]:
    """A second workspace on the same server, for isolation tests."""
    yield from workspace_api(server)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]

"""PostgreSQL connections that die while idle (the database restarted, a proxy dropped them) are replaced
before use: the next requests succeed and nothing is lost."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from tests.conftest import _require_postgres
from tests.harness import POSTGRES_ADMIN_URL, Api, launch_server, postgres_database, stop_server

IDLE_SECONDS = 1.5  # past tidings.db.engine.PING_AFTER_IDLE_SECONDS


def test_connections_killed_while_idle_are_replaced(tmp_path: Path) -> None:
    _require_postgres()
    with postgres_database() as url:
        server = launch_server(url, "postgres", tmp_path, ("--no-worker",), {})
        api = Api(server, server.new_workspace())
        try:
            first = api.track.put("/api/v1/customers/r1", json={"plan": "basic"})
            assert first.status_code == 200, first.text
            time.sleep(IDLE_SECONDS)
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (url.rsplit("/", 1)[1],),
                ).fetchone()
            assert killed is not None
            assert killed[0] >= 1, "the server held pooled connections"
            for n in range(3):
                answer = api.track.put(f"/api/v1/customers/r{n + 2}", json={"plan": "pro"})
                assert answer.status_code == 200, answer.text
            for n in range(1, 5):
                attributes = api.attributes(f"r{n}")
                assert attributes.status_code == 200, attributes.text
                assert attributes.json()["customer"]["attributes"]["plan"] == ("basic" if n == 1 else "pro")
        finally:
            api.close()
            stop_server(server)

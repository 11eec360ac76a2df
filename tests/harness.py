"""Running Tidings for tests: a real ``tidings serve`` subprocess on SQLite or PostgreSQL, fresh
workspaces, and HTTP clients that authenticate the way Customer.io's surfaces do."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from tidings.db import Database
from tidings.db.migrate import upgrade
from tidings.workspaces.service import create_workspace

ROOT = Path(__file__).resolve().parents[1]
TIDINGS = Path(sys.executable).with_name("tidings")
POSTGRES_ADMIN_URL = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_available(admin_url: str = POSTGRES_ADMIN_URL) -> bool:
    try:
        with psycopg.connect(admin_url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test session, dropped afterwards."""
    name = f"tidings_test_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Credentials:
    workspace_id: int
    site_id: str
    track_api_key: str
    app_api_key: str
    pipelines_write_key: str
    webhook_signing_key: str


@dataclass
class Server:
    base_url: str
    database_url: str
    backend: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def new_workspace(self, name: str | None = None) -> Credentials:
        db = Database(self.database_url)
        try:
            created = db.run(
                lambda s: create_workspace(s, name or f"test-{secrets.token_hex(4)}", now=int(time.time()))
            )
        finally:
            db.close()
        return Credentials(
            workspace_id=created.workspace_id,
            site_id=created.site_id,
            track_api_key=created.track_api_key,
            app_api_key=created.app_api_key,
            pipelines_write_key=created.pipelines_write_key,
            webhook_signing_key=created.webhook_signing_key,
        )

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """Read the store directly — only to check what the APIs cannot show yet."""
        db = Database(self.database_url)
        try:
            with db.read_session() as session:
                return list(_execute(session, statement, params))
        finally:
            db.close()

    def execute(self, statement: str, **params: Any) -> None:
        """Write to the store directly — only to lay down rows no API creates yet."""
        db = Database(self.database_url)
        try:
            with db.session() as session:
                session.execute(text(statement), params)
        finally:
            db.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _execute(session: Session, statement: str, params: dict[str, Any]) -> list[Any]:
    return list(session.execute(text(statement), params).all())


def start_server(database_url: str, backend: str, workdir: Path, **env: str) -> Server:
    return launch_server(database_url, backend, workdir, (), env)


def launch_server(
    database_url: str, backend: str, workdir: Path, serve_args: tuple[str, ...], env: dict[str, str]
) -> Server:
    """``tidings serve`` with extra arguments (``--no-worker``) and environment."""
    upgrade(database_url)
    port = free_port()
    log_path = workdir / f"serve-{backend}-{port}.log"
    environment = {
        **os.environ,
        "TIDINGS_DATABASE_URL": database_url,
        "TIDINGS_PORT": str(port),
        "TIDINGS_HOST": "127.0.0.1",
        "TIDINGS_AUTH_CACHE_SECONDS": "0",
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(TIDINGS), "serve", *serve_args],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tidings serve exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return Server(base_url, database_url, backend, process, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"tidings serve did not become ready:\n{log_path.read_text()}")


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGINT)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def stop_worker(process: subprocess.Popen[bytes], log: Path) -> None:
    """Ask a ``tidings worker`` to stop as Ctrl-C does and wait for it; one that does not stop within 15 s
    is made to print its threads' stacks into its log (SIGUSR1), killed, and fails the test with that log.
    A worker still starting is first given time to print that it started: until then Ctrl-C interrupts
    its imports, as it would any program's."""
    deadline = time.monotonic() + 30
    while process.poll() is None and "started" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1)
        process.kill()
        process.wait()
        raise AssertionError(f"the worker did not stop on SIGINT:\n{log.read_text()[-20000:]}") from None
    assert code == 0, f"the worker exited with {code}:\n{log.read_text()[-20000:]}"


class Api:
    """HTTP clients for one workspace, authenticated per surface."""

    def __init__(self, server: Server, creds: Credentials) -> None:
        self.server = server
        self.creds = creds
        self.track = httpx.Client(
            base_url=server.base_url, auth=(creds.site_id, creds.track_api_key), timeout=30
        )
        self.app = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {creds.app_api_key}"}, timeout=30
        )
        self.pipelines = httpx.Client(
            base_url=server.base_url, auth=(creds.pipelines_write_key, ""), timeout=30
        )

    def close(self) -> None:
        for client in (self.track, self.app, self.pipelines):
            client.close()

    def attributes(self, identifier: str, id_type: str = "id") -> httpx.Response:
        return self.app.get(f"/v1/customers/{identifier}/attributes", params={"id_type": id_type})

    def activities(self, identifier: str, id_type: str = "id", **params: Any) -> list[dict[str, Any]]:
        response = self.app.get(
            f"/v1/customers/{identifier}/activities", params={"id_type": id_type, **params}
        )
        response.raise_for_status()
        activities: list[dict[str, Any]] = response.json()["activities"]
        return activities


def run_cli(database_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the ``tidings`` command against a database, as an operator would."""
    environment = {**os.environ, "TIDINGS_DATABASE_URL": database_url}
    return subprocess.run(
        [str(TIDINGS), *args], env=environment, capture_output=True, text=True, check=check, timeout=60
    )

"""Running ``tidings serve`` for a benchmark: throwaway databases, a timed start, its memory, a workspace,
and direct reads of the store to check that every acknowledged write was committed."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import func, select

# The test harness already knows how to find a free port and reach PostgreSQL; the benchmarks share it.
from tests.harness import free_port
from tests.harness import postgres_available as postgres_reachable

from tidings.db import Database
from tidings.db.migrate import upgrade
from tidings.models import Event, Person
from tidings.workspaces.service import create_workspace

TIDINGS = Path(sys.executable).with_name("tidings")
POSTGRES_ADMIN_URL = os.environ.get(
    "TIDINGS_BENCH_POSTGRES_URL",
    os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)
BACKENDS = ("sqlite", "postgres")
READY_TIMEOUT_SECONDS = 60.0
READY_POLL_SECONDS = 0.01


def postgres_available() -> bool:
    return postgres_reachable(POSTGRES_ADMIN_URL)


@contextmanager
def throwaway_database(backend: str, workdir: Path) -> Iterator[str]:
    """An empty database (not yet migrated) that is removed afterwards."""
    if backend == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tidings-bench-", dir=workdir.resolve()) as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}"
        return
    name = f"tidings_bench_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Workspace:
    workspace_id: int
    site_id: str
    track_api_key: str
    pipelines_write_key: str


@dataclass
class RunningServer:
    backend: str
    database_url: str
    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    # Seconds from spawning the process to the first 200 from /healthz.
    ready_seconds: float

    def rss_bytes(self) -> int:
        return process_tree_rss(self.process.pid)

    def new_workspace(self) -> Workspace:
        db = Database(self.database_url)
        try:
            created = db.run(
                lambda s: create_workspace(s, f"bench-{secrets.token_hex(4)}", now=int(time.time()))
            )
        finally:
            db.close()
        return Workspace(
            created.workspace_id, created.site_id, created.track_api_key, created.pipelines_write_key
        )

    def counts(self, workspace_id: int, *, identified_attribute: str | None = None) -> StoreCounts:
        return store_counts(self.database_url, workspace_id, identified_attribute=identified_attribute)


@dataclass(frozen=True)
class StoreCounts:
    people: int
    events: int
    # People carrying ``identified_attribute``: created or updated by an identify, not only by an event.
    identified: int


def store_counts(
    database_url: str, workspace_id: int, *, identified_attribute: str | None = None
) -> StoreCounts:
    db = Database(database_url)
    try:
        with db.read_session() as session:
            people = session.scalar(select(func.count()).where(Person.workspace_id == workspace_id)) or 0
            events = session.scalar(select(func.count()).where(Event.workspace_id == workspace_id)) or 0
            identified = 0
            if identified_attribute is not None:
                identified = (
                    session.scalar(
                        select(func.count()).where(
                            Person.workspace_id == workspace_id,
                            Person.attributes[identified_attribute].as_string().is_not(None),
                        )
                    )
                    or 0
                )
    finally:
        db.close()
    return StoreCounts(people=people, events=events, identified=identified)


def process_tree_rss(pid: int) -> int:
    """Resident memory of a process and its descendants, in bytes (Linux /proc)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            pending.extend(int(child) for child in task.read_text().split())
    return total


def start_server(
    database_url: str,
    backend: str,
    logdir: Path,
    *,
    migrate_first: bool = True,
    env: Mapping[str, str] | None = None,
    serve_args: tuple[str, ...] = (),
) -> RunningServer:
    """Spawn ``tidings serve`` and wait for its first 200 from /healthz.

    With ``migrate_first`` the schema is created before the clock starts (as the benchmarks of request
    handling want); without it, ``serve`` migrates the empty database itself, inside the timed start.
    ``serve_args`` go to ``tidings serve`` (B6 passes ``--no-worker``).
    """
    if migrate_first:
        upgrade(database_url)
    port = free_port()
    logdir = logdir.resolve()
    logdir.mkdir(parents=True, exist_ok=True)
    log_path = logdir / f"serve-{backend}-{port}.log"
    environment = {
        **os.environ,
        "TIDINGS_DATABASE_URL": database_url,
        "TIDINGS_HOST": "127.0.0.1",
        "TIDINGS_PORT": str(port),
        **(env or {}),
    }
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(TIDINGS), "serve", *serve_args],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=logdir,
        )
    deadline = started + READY_TIMEOUT_SECONDS
    with httpx.Client(timeout=1.0) as client:
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"tidings serve exited early:\n{_tail(log_path)}")
            try:
                if client.get(f"{base_url}/healthz").status_code == 200:
                    ready = time.perf_counter() - started
                    return RunningServer(backend, database_url, base_url, port, process, log_path, ready)
            except httpx.TransportError:
                pass
            time.sleep(READY_POLL_SECONDS)
    process.kill()
    process.wait()
    raise RuntimeError(f"tidings serve was not ready in {READY_TIMEOUT_SECONDS:.0f} s")


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextmanager
def serving(backend: str, workdir: Path, *, env: Mapping[str, str] | None = None) -> Iterator[RunningServer]:
    """A migrated throwaway database and a server on it, both gone afterwards."""
    with throwaway_database(backend, workdir) as url:
        server = start_server(url, backend, workdir, env=env)
        try:
            yield server
        finally:
            stop_server(server)


class HelperProcess:
    """A benchmark's helper (an SMTP sink, a model stand-in) as ``python -m MODULE …`` in its own process.
    It prints its ports as one JSON line (``ports``) once it listens; its stdin is the lifeline: it exits
    when this process closes the pipe or goes away."""

    def __init__(self, logdir: Path, module: Sequence[str], label: str, *, timeout: float) -> None:
        logdir.mkdir(parents=True, exist_ok=True)
        self.log_path = logdir.resolve() / f"{label}-{secrets.token_hex(3)}.log"
        self._client = httpx.Client(timeout=timeout)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *module],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=Path(__file__).resolve().parents[1],
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"the {label} did not start:\n{self.log_path.read_text(errors='replace')}")
        self.ports: dict[str, Any] = json.loads(line)

    def stop(self, wait: float = 15) -> None:
        self._client.close()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Analyzer:
    """On PostgreSQL, ``ANALYZE`` the tables a benchmark grows every few seconds, as autovacuum does in
    production. This machine's server runs with ``autovacuum = off`` (a CI setting), so without it the
    statistics stay those of the empty tables, and a plan the server cached for a prepared lookup early
    on (an index on ``workspace_id`` alone, fine for a few rows) is never replaced: each lookup then
    reads the whole workspace, and ingestion slows down as the table grows (B9's import slowed to a
    crawl; B1 and B2 vary from run to run). A no-op on SQLite."""

    def __init__(
        self,
        database_url: str,
        *,
        tables: tuple[str, ...] = ("people", "events", "activities"),
        every: float = 5.0,
    ) -> None:
        self._url, self._every, self._tables = database_url, every, tables
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="analyzer", daemon=True)

    def __enter__(self) -> Analyzer:
        if self._url.startswith("postgresql"):
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(
            self._url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
        ) as db:
            while not self._stop.wait(self._every):
                for table in self._tables:
                    db.execute(f"ANALYZE {table}")

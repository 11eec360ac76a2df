"""B2 — batch ingestion: Track v2 ``POST /api/v2/batch`` and Pipelines ``POST /v1/batch``, 100 events a
request, in events per second.

Each request carries one event for each of 100 people of the connection (the first request creates them),
with unique Pipelines ``messageId``s so nothing is dropped as a duplicate. The baseline is a raw
``executemany`` of equivalent rows into the ``events`` table of the same database, through an engine
configured exactly as the server's writer (same pragmas, same durability), one transaction per 100 rows.
"""

from __future__ import annotations

import secrets
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from sqlalchemy import insert

from bench.b1 import Commitment, commitment
from bench.load import JSON_CONTENT, LoadResult, RequestTemplate, Workload, basic_auth, machine_load, run_load
from bench.server import Analyzer, RunningServer, Workspace
from tidings.db import Database
from tidings.db.engine import create_store_engine
from tidings.ids import new_cio_id, new_ulid
from tidings.models import Event, Person
from tidings.workspaces.service import create_workspace

ITEMS_PER_REQUEST = 100
SURFACES = ("track_v2", "pipelines")
EVENT_PROPERTIES = {"price": 23.5, "currency": "EUR", "sku": "sku-{i}", "order": "{id}-{i}"}


def _properties(index: int) -> dict[str, Any]:
    return {
        key: value.replace("{i}", str(index)) if isinstance(value, str) else value
        for key, value in EVENT_PROPERTIES.items()
    }


def track_v2_item(index: int) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "event",
        "identifiers": {"id": f"{{t}}-u{index}"},
        "name": "purchase",
        "attributes": _properties(index),
    }


def pipelines_item(index: int, timestamp: str) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": f"{{t}}-u{index}",
        "event": "purchase",
        "properties": _properties(index),
        "messageId": f"{{id}}-{index}",
        "timestamp": timestamp,
    }


def batch_workload(surface: str, workspace: Workspace, items: int = ITEMS_PER_REQUEST) -> Workload:
    body: dict[str, Any]
    if surface == "track_v2":
        body = {"batch": [track_v2_item(i) for i in range(items)]}
        return Workload(
            name="track-v2-batch",
            templates=(RequestTemplate("POST", "/api/v2/batch", orjson.dumps(body).decode()),),
            headers=(basic_auth(workspace.site_id, workspace.track_api_key), JSON_CONTENT),
        )
    timestamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {
        "batch": [pipelines_item(i, timestamp) for i in range(items)],
        "sentAt": timestamp,
    }
    return Workload(
        name="pipelines-batch",
        templates=(RequestTemplate("POST", "/v1/batch", orjson.dumps(body).decode()),),
        headers=(basic_auth(workspace.pipelines_write_key, ""), JSON_CONTENT),
    )


def probe(server: RunningServer, surface: str) -> str | None:
    """Send one single-item batch to a fresh workspace; None when it answered 200 and its event is in the
    store, else why the surface cannot be measured."""
    workspace = server.new_workspace()
    workload = batch_workload(surface, workspace, items=1)
    template = workload.templates[0]
    response = httpx.request(
        template.method,
        server.base_url + template.path,
        content=template.body.replace("{id}", "probe").replace("{t}", "probe"),
        headers=dict(workload.headers),
        timeout=30,
    )
    if response.status_code in (404, 405):
        return f"not implemented yet (HTTP {response.status_code} from {template.path})"
    if response.status_code != 200:
        return f"probe answered HTTP {response.status_code}: {response.text[:200]}"
    events = server.counts(workspace.workspace_id).events
    if events != 1:
        return f"probe answered 200 but {events} events were stored instead of 1"
    return None


@dataclass(frozen=True)
class B2Run:
    load: LoadResult
    events_stored: int
    commitment: Commitment

    @property
    def events_per_second(self) -> float:
        return self.load.ok_per_second * ITEMS_PER_REQUEST


@dataclass(frozen=True)
class B2Surface:
    surface: str
    unavailable: str | None
    runs: tuple[B2Run, ...]

    @property
    def events_per_second(self) -> float:
        return statistics.median(run.events_per_second for run in self.runs) if self.runs else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(run.load.p50_ms for run in self.runs) if self.runs else 0.0

    @property
    def p99_ms(self) -> float:
        return statistics.median(run.load.p99_ms for run in self.runs) if self.runs else 0.0

    @property
    def all_committed(self) -> bool:
        return all(run.commitment.holds for run in self.runs)


@dataclass(frozen=True)
class B2Result:
    backend: str
    generator: str
    connections: int
    seconds: float
    surfaces: tuple[B2Surface, ...]
    # Raw executemany, events per second, one figure per repetition.
    baseline_runs: tuple[float, ...]
    baseline_rows: int
    load_average: str

    @property
    def baseline_events_per_second(self) -> float:
        return statistics.median(self.baseline_runs)

    def ratio(self, surface: B2Surface) -> float:
        baseline = self.baseline_events_per_second
        return surface.events_per_second / baseline if baseline and surface.runs else 0.0


def run_b2(
    server: RunningServer,
    *,
    generator: str,
    connections: int = 8,
    seconds: float = 10.0,
    repeats: int = 3,
    max_requests: int = 1_000_000,
    baseline_rows: int = 100_000,
) -> B2Result:
    load_at_start = machine_load()
    with Analyzer(server.database_url):
        surfaces = [
            _surface(
                server,
                surface,
                generator=generator,
                connections=connections,
                seconds=seconds,
                repeats=repeats,
                max_requests=max_requests,
            )
            for surface in SURFACES
        ]
    baseline = tuple(executemany_baseline(server.database_url, baseline_rows) for _ in range(repeats))
    return B2Result(
        server.backend,
        generator,
        connections,
        seconds,
        tuple(surfaces),
        baseline,
        baseline_rows,
        load_at_start,
    )


def _surface(
    server: RunningServer,
    surface: str,
    *,
    generator: str,
    connections: int,
    seconds: float,
    repeats: int,
    max_requests: int,
) -> B2Surface:
    unavailable = probe(server, surface)
    runs: list[B2Run] = []
    for _ in range(0 if unavailable else repeats):
        workspace = server.new_workspace()
        load = run_load(
            generator,
            server.base_url,
            batch_workload(surface, workspace),
            connections=connections,
            seconds=seconds,
            max_requests=max_requests,
            prefix=secrets.token_hex(3),
        )
        stored = server.counts(workspace.workspace_id).events
        runs.append(B2Run(load, stored, batch_commitment(load, stored)))
    return B2Surface(surface, unavailable, tuple(runs))


def batch_commitment(load: LoadResult, events_stored: int) -> Commitment:
    """Every 200 stands for ``ITEMS_PER_REQUEST`` events."""
    scaled = LoadResult(
        generator=load.generator,
        connections=load.connections,
        seconds=load.seconds,
        sent=load.sent * ITEMS_PER_REQUEST,
        answered=load.answered * ITEMS_PER_REQUEST,
        ok=load.ok * ITEMS_PER_REQUEST,
        failed=load.failed * ITEMS_PER_REQUEST,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
    )
    return commitment(scaled, events_stored, None)


def executemany_baseline(database_url: str, rows: int) -> float:
    """Insert ``rows`` event rows for 100 people of a fresh workspace, 100 rows per executemany and per
    transaction; return rows per second. Rows are built before the clock starts."""
    db = Database(database_url)
    try:
        workspace_id = db.run(
            lambda s: create_workspace(s, f"bench-baseline-{secrets.token_hex(4)}", now=int(time.time()))
        ).workspace_id
    finally:
        db.close()
    engine = create_store_engine(database_url, writer=True)
    now = int(time.time())
    try:
        with engine.begin() as connection:
            people = [
                {
                    "workspace_id": workspace_id,
                    "cio_id": new_cio_id(),
                    "customer_id": f"baseline-u{i}",
                    "created_at": now,
                    "updated_at": now,
                    "unsubscribed": False,
                    "attributes": {},
                    "attribute_timestamps": {},
                    "subscription_preferences": {},
                }
                for i in range(ITEMS_PER_REQUEST)
            ]
            person_ids = list(
                connection.execute(insert(Person).returning(Person.id, sort_by_parameter_order=True), people)
                .scalars()
                .all()
            )
        chunks = [
            [_event_row(workspace_id, person_ids[i], start + i, now) for i in range(ITEMS_PER_REQUEST)]
            for start in range(0, rows, ITEMS_PER_REQUEST)
        ]
        statement = insert(Event)
        started = time.perf_counter()
        for chunk in chunks:
            with engine.begin() as connection:
                connection.execute(statement, chunk)
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    return len(chunks) * ITEMS_PER_REQUEST / elapsed


def _event_row(workspace_id: int, person_id: int, sequence: int, now: int) -> dict[str, Any]:
    index = sequence % ITEMS_PER_REQUEST
    return {
        "workspace_id": workspace_id,
        "event_id": new_ulid(),
        "person_id": person_id,
        "anonymous_id": None,
        "type": "event",
        "name": "purchase",
        "data": {**_properties(index), "order": f"baseline-{sequence}"},
        "timestamp": now,
        "received_at": now,
        "can_trigger": True,
        "source": "bench",
    }

"""B1 — Track API v1 ingestion: an identify + event mix over HTTP against ``tidings serve``.

Each connection identifies a new person (``PUT /api/v1/customers/{id}``, four attributes) and then sends
an event for that person (``POST /api/v1/customers/{id}/events``). The baseline is ``GET /healthz`` on the
same server with the same generator and connections; noop and ingest runs alternate, and each ingest run
writes into a fresh workspace so its rows can be counted against the 200s it received.
"""

from __future__ import annotations

import secrets
import statistics
from dataclasses import dataclass

import orjson

from bench.load import JSON_CONTENT, LoadResult, RequestTemplate, Workload, basic_auth, machine_load, run_load
from bench.server import Analyzer, RunningServer, StoreCounts, Workspace

# Set by every identify and by nothing else: people carrying it were written by an identify.
IDENTIFIED_ATTRIBUTE = "plan"

IDENTIFY_BODY = {
    "email": "{id}@example.com",
    "first_name": "Ana",
    IDENTIFIED_ATTRIBUTE: "pro",
    "created_at": 1700000000,
}
EVENT_BODY = {"name": "purchase", "data": {"price": 23.5, "currency": "EUR", "sku": "sku-{id}"}}


def track_v1_mix(workspace: Workspace) -> Workload:
    return Workload(
        name="track-v1-identify-event",
        templates=(
            RequestTemplate("PUT", "/api/v1/customers/{id}", orjson.dumps(IDENTIFY_BODY).decode()),
            RequestTemplate("POST", "/api/v1/customers/{id}/events", orjson.dumps(EVENT_BODY).decode()),
        ),
        headers=(basic_auth(workspace.site_id, workspace.track_api_key), JSON_CONTENT),
    )


NOOP = Workload(name="healthz", templates=(RequestTemplate("GET", "/healthz"),))


@dataclass(frozen=True)
class Commitment:
    """Whether every 200 is in the store. Rows beyond the 200s can only come from requests that were not
    answered 200 (cut off at the end of a wrk run, or lost to a socket error), so they are bounded by those.
    """

    acknowledged: int
    committed: int
    not_acknowledged: int
    # The Python generator tallies 200s per request kind, so each kind is checked on its own too.
    each_kind_committed: bool = True

    @property
    def holds(self) -> bool:
        upper = self.acknowledged + self.not_acknowledged
        return self.each_kind_committed and self.acknowledged <= self.committed <= upper


def commitment(load: LoadResult, committed: int, committed_by_template: tuple[int, ...] | None) -> Commitment:
    each_kind = True
    if load.ok_by_template is not None and committed_by_template is not None:
        each_kind = all(c >= ok for c, ok in zip(committed_by_template, load.ok_by_template, strict=True))
    return Commitment(load.ok, committed, load.sent - load.ok, each_kind)


def b1_commitment(load: LoadResult, counts: StoreCounts) -> Commitment:
    """People written by an identify plus events, against identify and event 200s."""
    return commitment(load, counts.identified + counts.events, (counts.identified, counts.events))


@dataclass(frozen=True)
class B1Run:
    noop: LoadResult
    ingest: LoadResult
    counts: StoreCounts
    commitment: Commitment

    @property
    def ratio(self) -> float:
        return self.ingest.ok_per_second / self.noop.ok_per_second if self.noop.ok_per_second else 0.0


@dataclass(frozen=True)
class B1Result:
    backend: str
    generator: str
    connections: int
    seconds: float
    runs: tuple[B1Run, ...]
    load_average: str

    @property
    def ingest_rps(self) -> float:
        return statistics.median(run.ingest.ok_per_second for run in self.runs)

    @property
    def noop_rps(self) -> float:
        return statistics.median(run.noop.ok_per_second for run in self.runs)

    @property
    def ratio(self) -> float:
        return statistics.median(run.ratio for run in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(run.ingest.p50_ms for run in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(run.ingest.p99_ms for run in self.runs)

    @property
    def noop_p99_ms(self) -> float:
        return statistics.median(run.noop.p99_ms for run in self.runs)

    @property
    def all_committed(self) -> bool:
        return all(run.commitment.holds for run in self.runs)

    @property
    def failed(self) -> int:
        return sum(run.ingest.failed for run in self.runs)


def run_b1(
    server: RunningServer,
    *,
    generator: str,
    connections: int = 32,
    seconds: float = 10.0,
    repeats: int = 3,
    max_requests: int = 10_000_000,
    warmup_seconds: float = 2.0,
) -> B1Result:
    """Alternate noop and ingest runs ``repeats`` times after a short unmeasured warm-up of both."""
    load_at_start = machine_load()

    def load(workload: Workload, duration: float) -> LoadResult:
        return run_load(
            generator,
            server.base_url,
            workload,
            connections=connections,
            seconds=duration,
            max_requests=max_requests,
            prefix=secrets.token_hex(3),
        )

    runs = []
    with Analyzer(server.database_url):
        if warmup_seconds > 0:
            load(NOOP, warmup_seconds)
            load(track_v1_mix(server.new_workspace()), warmup_seconds)
        for _ in range(repeats):
            noop = load(NOOP, seconds)
            workspace = server.new_workspace()
            ingest = load(track_v1_mix(workspace), seconds)
            counts = server.counts(workspace.workspace_id, identified_attribute=IDENTIFIED_ATTRIBUTE)
            runs.append(B1Run(noop, ingest, counts, b1_commitment(ingest, counts)))
    return B1Result(server.backend, generator, connections, seconds, tuple(runs), load_at_start)

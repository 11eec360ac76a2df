"""B9 — footprint of ``tidings serve`` on SQLite and PostgreSQL: the time from spawning the process to its
first 200 from ``/healthz``, its resident memory idle after start and idle after a warm-up of Track v1
traffic, and its peak resident memory while 1,000,000 people are imported.

The import goes through ``POST /api/v2/batch`` (100 new people a request, each with an email and three
attributes), the bulk path a team moving to Tidings uses; the server's RSS is sampled every
``RSS_SAMPLE_SECONDS`` from the first request to the last answer, and the people stored are counted after.

Start-up time is dominated by importing Python modules, so it is measured twice: with every module's
bytecode compiled (what ``scripts/bootstrap`` leaves: uv compiles the dependencies at install, and the
script compiles Tidings' own modules), which the target is judged on; and without any bytecode (every
import compiles from source: a worst case no install produces, reported for information). Each mode gets
its own ``PYTHONPYCACHEPREFIX`` so neither depends on what happens to be cached on this machine (the smoke
test uses the ``inherit`` mode: this process's environment as it is).
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.b1 import track_v1_mix
from bench.load import JSON_CONTENT, LoadResult, RequestTemplate, Workload, basic_auth, machine_load, run_load
from bench.server import (
    Analyzer,
    RunningServer,
    Workspace,
    start_server,
    stop_server,
    throwaway_database,
)

IDLE_SETTLE_SECONDS = 2.0
RSS_SAMPLE_SECONDS = 0.5
IMPORT_PEOPLE_PER_REQUEST = 100
IMPORT_CONNECTIONS = 8
BYTECODE_MODES = ("cached", "none")
# Not measured by `make bench`: whatever this process's environment does (quick, for the smoke test).
INHERIT = "inherit"


@dataclass(frozen=True)
class B9Run:
    backend: str
    bytecode: str
    # Empty database: serve creates the schema before it listens.
    ready_fresh_seconds: float
    # Already migrated database: the everyday restart.
    ready_existing_seconds: float
    rss_idle_bytes: int
    rss_after_warmup_bytes: int
    warmup: LoadResult


@dataclass(frozen=True)
class B9Import:
    backend: str
    people: int
    # People in the workspace afterwards (every 200 committed: equal to ``people``).
    stored: int
    load: LoadResult
    rss_before_bytes: int
    rss_peak_bytes: int
    rss_after_bytes: int
    samples: int
    load_average: str

    @property
    def people_per_second(self) -> float:
        return self.stored / self.load.seconds if self.load.seconds else 0.0


@dataclass(frozen=True)
class B9Result:
    generator: str
    runs: tuple[B9Run, ...]
    load_average: str
    imports: tuple[B9Import, ...] = ()

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(run.backend for run in self.runs))

    def of(self, bytecode: str, backend: str = "sqlite") -> tuple[B9Run, ...]:
        return tuple(run for run in self.runs if run.bytecode == bytecode and run.backend == backend)

    def ready_fresh(self, bytecode: str, backend: str = "sqlite") -> float:
        return statistics.median(run.ready_fresh_seconds for run in self.of(bytecode, backend))

    def ready_existing(self, bytecode: str, backend: str = "sqlite") -> float:
        return statistics.median(run.ready_existing_seconds for run in self.of(bytecode, backend))

    def rss_idle(self, bytecode: str, backend: str = "sqlite") -> float:
        return statistics.median(run.rss_idle_bytes for run in self.of(bytecode, backend))

    def rss_after_warmup(self, bytecode: str, backend: str = "sqlite") -> float:
        return statistics.median(run.rss_after_warmup_bytes for run in self.of(bytecode, backend))


def bytecode_env(mode: str, workdir: Path) -> dict[str, str]:
    if mode == INHERIT:
        return {}
    if mode == "cached":
        return {"PYTHONPYCACHEPREFIX": str(workdir.resolve() / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
    empty = workdir.resolve() / f"pycache-none-{secrets.token_hex(4)}"
    return {"PYTHONPYCACHEPREFIX": str(empty), "PYTHONDONTWRITEBYTECODE": "1"}


def footprint_once(
    workdir: Path,
    backend: str,
    bytecode: str,
    *,
    generator: str,
    warmup_seconds: float,
    warmup_requests: int,
    settle_seconds: float = IDLE_SETTLE_SECONDS,
) -> B9Run:
    env = bytecode_env(bytecode, workdir)
    with throwaway_database(backend, workdir) as url:
        server = start_server(url, backend, workdir, migrate_first=False, env=env)
        try:
            ready_fresh = server.ready_seconds
            time.sleep(settle_seconds)
            rss_idle = server.rss_bytes()
            warmup = run_load(
                generator,
                server.base_url,
                track_v1_mix(server.new_workspace()),
                connections=32,
                seconds=warmup_seconds,
                max_requests=warmup_requests,
                prefix=secrets.token_hex(3),
            )
            time.sleep(settle_seconds)
            rss_warm = server.rss_bytes()
        finally:
            stop_server(server)
        again = start_server(url, backend, workdir, migrate_first=False, env=env)
        stop_server(again)
    return B9Run(backend, bytecode, ready_fresh, again.ready_seconds, rss_idle, rss_warm, warmup)


def import_workload(workspace: Workspace, per_request: int = IMPORT_PEOPLE_PER_REQUEST) -> Workload:
    """``per_request`` new people a request: ``{id}`` is unique to each request of the run."""
    items = [
        {
            "type": "person",
            "action": "identify",
            "identifiers": {"id": f"{{id}}-{index}"},
            "attributes": {
                "email": f"{{id}}-{index}@example.com",
                "first_name": "Ana",
                "plan": "pro",
                "signed_up_at": 1_700_000_000 + index,
            },
        }
        for index in range(per_request)
    ]
    return Workload(
        name="import-people",
        templates=(RequestTemplate("POST", "/api/v2/batch", orjson.dumps({"batch": items}).decode()),),
        headers=(basic_auth(workspace.site_id, workspace.track_api_key), JSON_CONTENT),
    )


class RssSampler:
    """Samples a server's RSS in a thread until stopped; keeps the peak."""

    def __init__(self, server: RunningServer, every: float = RSS_SAMPLE_SECONDS) -> None:
        self._server, self._every = server, every
        self._stop = threading.Event()
        self.peak, self.samples = 0, 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        self.peak = max(self.peak, self._server.rss_bytes())
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._every)


def import_once(
    workdir: Path, backend: str, *, people: int, settle_seconds: float = IDLE_SETTLE_SECONDS
) -> B9Import:
    """Import ``people`` new people into a fresh server through the batch API, sampling its memory."""
    load_at_start = machine_load()
    with throwaway_database(backend, workdir) as url:
        server = start_server(url, backend, workdir)
        try:
            workspace = server.new_workspace()
            time.sleep(settle_seconds)
            before = server.rss_bytes()
            requests = max(1, people // IMPORT_PEOPLE_PER_REQUEST)
            with RssSampler(server) as sampler, Analyzer(url, tables=("people", "activities")):
                load = run_load(
                    "python",
                    server.base_url,
                    import_workload(workspace),
                    connections=IMPORT_CONNECTIONS,
                    seconds=3_600,
                    max_requests=requests,
                    prefix=secrets.token_hex(3),
                )
            time.sleep(settle_seconds)
            after = server.rss_bytes()
            stored = server.counts(workspace.workspace_id).people
        finally:
            stop_server(server)
    return B9Import(
        backend,
        requests * IMPORT_PEOPLE_PER_REQUEST,
        stored,
        load,
        before,
        max(sampler.peak, before, after),
        after,
        sampler.samples,
        load_at_start,
    )


def run_b9(
    workdir: Path,
    *,
    generator: str,
    backends: tuple[str, ...] = ("sqlite",),
    repeats: int = 3,
    warmup_seconds: float = 5.0,
    warmup_requests: int = 1_000_000,
    modes: tuple[str, ...] = BYTECODE_MODES,
    settle_seconds: float = IDLE_SETTLE_SECONDS,
    import_people: int = 0,
) -> B9Result:
    load_at_start = machine_load()
    if "cached" in modes:
        # Fill the bytecode cache once; this start is not measured.
        with throwaway_database("sqlite", workdir) as url:
            stop_server(start_server(url, "sqlite", workdir, env=bytecode_env("cached", workdir)))
    runs = [
        footprint_once(
            workdir,
            backend,
            mode,
            generator=generator,
            warmup_seconds=warmup_seconds,
            warmup_requests=warmup_requests,
            settle_seconds=settle_seconds,
        )
        for backend in backends
        for _ in range(repeats)
        for mode in modes
    ]
    imports = tuple(
        import_once(workdir, backend, people=import_people, settle_seconds=settle_seconds)
        for backend in backends
        if import_people
    )
    return B9Result(generator, tuple(runs), load_at_start, imports)

"""B7 — timers: many journeys due at the same instant, and many waiting journeys that are not due.

1. Steps/s. On a fresh database: a workspace, N people, and an active campaign whose workflow is
   ``[delay 1h, set_journey_attributes, delay 1h]``. N journeys are put (with bulk SQL, not timed) where
   the engine leaves a journey waiting at the first delay: state ``waiting``, block ``first``,
   ``wait = {"until": T}``, ``resume_at = due_at = T``, version 1, each with its ``CampaignEntry``
   (``running = 1``). Then the engine runs with its clock past T, and each due journey runs three steps
   (the delay ends, the attributes are set, the second delay starts waiting): 3·N ``JourneyStep`` rows.
   Measured two ways: in process (``Engine(runtime, worker_id).run_due()`` in a loop until nothing is
   due; wall time of the loop), and with ``tidings worker`` processes (from the first step the database
   shows until no journey is due; the figure including the workers' start-up is kept too).
2. Memory. One ``tidings worker`` on a database with the same campaign and 0 journeys, then on the same
   database with M journeys waiting and not due: its RSS sampled every second while it polls. Waiting
   journeys should cost rows, not memory: the RSS with M journeys is flat and close to the RSS with none.
"""

from __future__ import annotations

import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.server import TIDINGS, process_tree_rss, throwaway_database
from tidings.campaigns.service import change_state, create_campaign
from tidings.config import Settings
from tidings.db import Database
from tidings.db.migrate import upgrade
from tidings.journeys.engine import Engine
from tidings.runtime import Runtime
from tidings.workspaces.service import create_workspace

Progress = Callable[[str], None]
HOUR = 3600
# The first delay's block id: a waiting journey names the block it waits in.
FIRST_DELAY = "first"
CAMPAIGN = {
    "name": "B7 timers",
    "trigger": {"type": "event", "event": "b7_never_sent"},
    "steps": [
        {"id": FIRST_DELAY, "type": "delay", "duration": "1h"},
        {"id": "mark", "type": "set_journey_attributes", "attributes": {"stage": "two"}},
        {"id": "second", "type": "delay", "duration": "1h"},
    ],
}
# Steps each due journey runs: the first delay ends, the attributes are set, the second delay waits.
STEPS_PER_JOURNEY = 3
# Rows a bulk INSERT … SELECT writes at a time.
CHUNK = 100_000
POLL_SECONDS = 0.25
STOP_TIMEOUT_SECONDS = 20.0


def _print(message: str) -> None:
    print(f"  {message}", flush=True)


# -- set-up -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    database_url: str
    backend: str
    workspace_id: int
    campaign_id: int
    # When the journeys are due (each waits at the first delay until T).
    due_at: int


def prepare(database_url: str, backend: str) -> Setup:
    """Migrate, create a workspace and the active campaign (no people, no journeys yet)."""
    upgrade(database_url)
    now = int(time.time())
    db = Database(database_url)
    try:

        def create(session: Any) -> tuple[int, int]:
            workspace = create_workspace(session, f"b7-{secrets.token_hex(4)}", now=now)
            view = create_campaign(session, workspace.workspace_id, CAMPAIGN, now=now)
            change_state(session, workspace.workspace_id, int(view["id"]), "activate", now=now)
            return workspace.workspace_id, int(view["id"])

        workspace_id, campaign_id = db.run(create)
    finally:
        db.close()
    return Setup(database_url, backend, workspace_id, campaign_id, now + HOUR)


def _series(backend: str, low: int, high: int) -> tuple[str, str]:
    """(prefix, FROM clause) of an ``INSERT … SELECT`` over i = low … high."""
    if backend == "sqlite":
        return (
            f"WITH RECURSIVE s(i) AS (SELECT {low} UNION ALL SELECT i + 1 FROM s WHERE i < {high}) ",
            "FROM s",
        )
    return "", f"FROM generate_series(CAST({low} AS BIGINT), CAST({high} AS BIGINT)) AS s(i)"


def insert_waiting(setup: Setup, journeys: int, progress: Progress = _print) -> float:
    """``journeys`` people, each with a journey waiting at the first delay until ``setup.due_at`` and an
    entry row counting it as running. Bulk SQL; returns the seconds it took."""
    started = time.perf_counter()
    backend, ws, cid, due = setup.backend, setup.workspace_id, setup.campaign_id, setup.due_at
    created = due - HOUR
    empty = "CAST('{}' AS jsonb)" if backend == "postgres" else "'{}'"
    wait = f"'{{\"until\": {due}}}'"
    wait = f"CAST({wait} AS jsonb)" if backend == "postgres" else wait
    false = "false" if backend == "postgres" else "0"
    db = Database(setup.database_url)
    try:
        with db.session() as session:
            first = session.execute(text("SELECT COALESCE(MAX(id), 0) FROM people")).scalar_one()
        for low in range(0, journeys, CHUNK):
            high = min(journeys, low + CHUNK) - 1
            prefix, source = _series(backend, low, high)
            key = "'b7-' || CAST(i AS TEXT)"
            with db.session() as session:
                session.execute(
                    text(
                        f"{prefix}INSERT INTO people (workspace_id, cio_id, customer_id, email, email_key, "
                        "created_at, updated_at, unsubscribed, attributes, attribute_timestamps, "
                        f"subscription_preferences) SELECT {ws}, {key}, {key}, {key} || '@example.com', "
                        f"{key} || '@example.com', {created}, {created}, {false}, {empty}, {empty}, {empty} "
                        f"{source}"
                    )
                )
            progress(f"people {high + 1:,} / {journeys:,} ({time.perf_counter() - started:.0f} s)")
        with db.session() as session:
            people = f"FROM people WHERE workspace_id = {ws} AND id > {first}"
            session.execute(
                text(
                    "INSERT INTO journeys (workspace_id, campaign_id, version, person_id, state, block, "
                    'due_at, resume_at, wait, "trigger", attributes, steps, created_at, entered_at) '
                    f"SELECT {ws}, {cid}, 1, id, 'waiting', '{FIRST_DELAY}', {due}, {due}, {wait}, {empty}, "
                    f"{empty}, 2, {created}, {created} {people}"
                )
            )
            session.execute(
                text(
                    "INSERT INTO campaign_entries (campaign_id, person_id, workspace_id, entries, running, "
                    f"last_entered_at) SELECT {cid}, id, {ws}, 1, 1, {created} {people}"
                )
            )
        progress(f"journeys {journeys:,} ({time.perf_counter() - started:.0f} s)")
        if backend == "postgres":
            with db.session() as session:
                for table in ("people", "journeys", "campaign_entries"):
                    session.execute(text(f"ANALYZE {table}"))
    finally:
        db.close()
    return time.perf_counter() - started


def count_due(database_url: str, setup: Setup) -> tuple[int, int]:
    """(journeys still due at T, journey steps written) of the campaign."""
    db = Database(database_url)
    try:
        with db.read_session() as session:
            due = session.execute(
                text("SELECT COUNT(*) FROM journeys WHERE campaign_id = :c AND due_at <= :t"),
                {"c": setup.campaign_id, "t": setup.due_at},
            ).scalar_one()
            steps = session.execute(
                text("SELECT COUNT(*) FROM journey_steps WHERE campaign_id = :c"), {"c": setup.campaign_id}
            ).scalar_one()
    finally:
        db.close()
    return int(due), int(steps)


def journey_states(database_url: str, setup: Setup) -> dict[str, int]:
    db = Database(database_url)
    try:
        with db.read_session() as session:
            rows = session.execute(
                text(
                    "SELECT state, block, COUNT(*) FROM journeys WHERE campaign_id = :c GROUP BY state, block"
                ),
                {"c": setup.campaign_id},
            )
            return {f"{state}@{block}": int(n) for state, block, n in rows}
    finally:
        db.close()


# -- 1. steps/s -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRun:
    backend: str
    # "in-process", or "N worker(s)".
    mode: str
    journeys: int
    steps: int  # JourneyStep rows written
    seconds: float  # the loop (in process), or first step seen → nothing due (workers)
    seconds_with_start: float  # the same, from spawning the workers (= seconds in process)
    setup_seconds: float
    # Journeys by state@block afterwards; all should be waiting@second.
    states: dict[str, int]

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0

    @property
    def journeys_per_second(self) -> float:
        return self.journeys / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.steps == STEPS_PER_JOURNEY * self.journeys and self.states == {
            "waiting@second": self.journeys
        }


def engine_settings(database_url: str, offset: float) -> Settings:
    return Settings(database_url=database_url, clock_offset_seconds=offset)


def run_in_process(
    setup: Setup, journeys: int, setup_seconds: float, *, on_loop: Callable[[], None]
) -> EngineRun:
    """``Engine.run_due()`` in a loop, this process's clock a minute past T, until a batch finds nothing."""
    offset = setup.due_at + 60 - time.time()
    runtime = Runtime.from_settings(engine_settings(setup.database_url, offset))
    engine = Engine(runtime, f"b7-bench:{os.getpid()}")
    try:
        on_loop()
        started = time.perf_counter()
        while engine.run_due():
            pass
        seconds = time.perf_counter() - started
    finally:
        engine.close()
        runtime.db.close()
    _, steps = count_due(setup.database_url, setup)
    return EngineRun(
        setup.backend,
        "in-process",
        journeys,
        steps,
        seconds,
        seconds,
        setup_seconds,
        journey_states(setup.database_url, setup),
    )


def spawn_workers(
    count: int, database_url: str, logdir: Path, *, offset: float = 0.0
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    environment = {
        **os.environ,
        "TIDINGS_DATABASE_URL": database_url,
        "TIDINGS_CLOCK_OFFSET_SECONDS": str(offset),
    }
    started = []
    logdir = logdir.resolve()
    logdir.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        log_path = logdir / f"b7-worker-{secrets.token_hex(3)}-{n}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(TIDINGS), "worker"], env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=logdir
            )
        started.append((process, log_path))
    return started


def stop_processes(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


def run_workers(
    setup: Setup,
    journeys: int,
    setup_seconds: float,
    logdir: Path,
    *,
    workers: int,
    timeout: float,
    on_started: Callable[[Sequence[int]], None] | None = None,
) -> EngineRun:
    """``workers`` ``tidings worker`` processes with their clock a minute past T, until nothing is due."""
    offset = setup.due_at + 60 - time.time()
    spawned = time.perf_counter()
    running = spawn_workers(workers, setup.database_url, logdir, offset=offset)
    processes = [process for process, _ in running]
    try:
        if on_started is not None:
            on_started([process.pid for process in processes])
        deadline = spawned + timeout
        first_seen: float | None = None
        due = journeys
        while time.perf_counter() < deadline:
            for process, log_path in running:
                if process.poll() is not None:
                    raise RuntimeError(f"a worker exited early:\n{_tail(log_path)}")
            due, _ = count_due(setup.database_url, setup)
            now = time.perf_counter()
            if first_seen is None and due < journeys:
                first_seen = now
            if due == 0:
                break
            time.sleep(POLL_SECONDS)
        done = time.perf_counter()
    finally:
        stop_processes(processes)
    _, steps = count_due(setup.database_url, setup)
    # The first poll that saw progress is up to one poll late: count it from the poll before.
    steady = done - (first_seen - POLL_SECONDS) if first_seen is not None else 0.0
    return EngineRun(
        setup.backend,
        f"{workers} worker{'s' if workers > 1 else ''}",
        journeys,
        steps,
        steady,
        done - spawned,
        setup_seconds,
        journey_states(setup.database_url, setup),
    )


@contextmanager
def waiting_journeys(
    backend: str, workdir: Path, journeys: int, progress: Progress = _print
) -> Iterator[tuple[Setup, float]]:
    """A fresh database holding the campaign and ``journeys`` journeys due at T (and the set-up seconds)."""
    with throwaway_database(backend, workdir) as url:
        setup = prepare(url, backend)
        seconds = insert_waiting(setup, journeys, progress)
        yield setup, seconds


# -- 2. memory --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RssRun:
    journeys: int
    # RSS of the worker, bytes, one sample a second (the first samples, its start-up, dropped).
    samples: tuple[int, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else 0.0

    @property
    def growth(self) -> int:
        """Last sample minus first: what polling over the waiting journeys added."""
        return self.samples[-1] - self.samples[0] if self.samples else 0

    @property
    def spread(self) -> int:
        return max(self.samples) - min(self.samples) if self.samples else 0


@dataclass(frozen=True)
class B7Memory:
    backend: str
    empty: RssRun
    full: RssRun
    setup_seconds: float

    @property
    def added_bytes(self) -> float:
        return self.full.median - self.empty.median


def sample_worker_rss(database_url: str, logdir: Path, *, seconds: float, warmup: float) -> tuple[int, ...]:
    [(process, log_path)] = spawn_workers(1, database_url, logdir)
    samples = []
    try:
        time.sleep(warmup)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited early:\n{_tail(log_path)}")
            samples.append(process_tree_rss(process.pid))
            time.sleep(1.0)
    finally:
        stop_processes([process])
    return tuple(samples)


def run_b7_memory(
    backend: str,
    workdir: Path,
    *,
    journeys: int,
    seconds: float,
    warmup: float = 3.0,
    progress: Progress = _print,
) -> B7Memory:
    with throwaway_database(backend, workdir) as url:
        setup = prepare(url, backend)
        progress(f"worker RSS with 0 journeys for {seconds:.0f} s")
        empty = RssRun(0, sample_worker_rss(url, workdir, seconds=seconds, warmup=warmup))
        setup_seconds = insert_waiting(setup, journeys, progress)
        progress(f"worker RSS with {journeys:,} waiting journeys for {seconds:.0f} s")
        full = RssRun(journeys, sample_worker_rss(url, workdir, seconds=seconds, warmup=warmup))
        _, steps = count_due(url, setup)
        if steps:
            raise RuntimeError(f"journeys that were not due ran {steps} steps")
    return B7Memory(backend, empty, full, setup_seconds)


# -- the whole benchmark ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class B7Figure:
    backend: str
    mode: str
    runs: tuple[EngineRun, ...]

    @property
    def steps_per_second(self) -> float:
        return statistics.median(run.steps_per_second for run in self.runs)

    @property
    def steps_per_second_with_start(self) -> float:
        return statistics.median(
            run.steps / run.seconds_with_start if run.seconds_with_start else 0.0 for run in self.runs
        )

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def complete(self) -> bool:
        return all(run.complete for run in self.runs)


@dataclass(frozen=True)
class B7Result:
    journeys: int
    figures: tuple[B7Figure, ...]
    memory: tuple[B7Memory, ...]

    @property
    def complete(self) -> bool:
        return all(figure.complete for figure in self.figures)

    def figure(self, backend: str, mode: str) -> B7Figure | None:
        return next((f for f in self.figures if f.backend == backend and f.mode == mode), None)


def run_b7_steps(
    backend: str,
    workdir: Path,
    *,
    journeys: int,
    repeats: int,
    workers: Sequence[int] = (),
    timeout: float = 1800.0,
    progress: Progress = _print,
) -> list[B7Figure]:
    """In process, then with each count of worker processes: ``repeats`` runs each on a fresh database."""
    figures = []
    for mode in ("in-process", *(f"{n} worker{'s' if n > 1 else ''}" for n in workers)):
        runs = []
        for repeat in range(repeats):
            with waiting_journeys(backend, workdir, journeys, progress) as (setup, setup_seconds):
                progress(f"{backend} {mode}, run {repeat + 1}/{repeats}: {journeys:,} journeys due")
                if mode == "in-process":
                    run = run_in_process(setup, journeys, setup_seconds, on_loop=lambda: None)
                else:
                    count = int(mode.split()[0])
                    run = run_workers(setup, journeys, setup_seconds, workdir, workers=count, timeout=timeout)
            progress(
                f"  {run.steps:,} steps in {run.seconds:.1f} s: {run.steps_per_second:,.0f} steps/s"
                f"{'' if run.complete else f' INCOMPLETE {run.states}'}"
            )
            runs.append(run)
        figures.append(B7Figure(backend, mode, tuple(runs)))
    return figures


# -- report -----------------------------------------------------------------------------------------------

TARGET_B7_STEPS = 5_000
MB = 1024 * 1024


def render_b7(result: B7Result, stamp: str, skipped: dict[str, str]) -> str:
    lines = [
        f"## B7 — Timers ({result.journeys:,} journeys due at once; waiting journeys and worker memory)",
        "",
        f"{stamp}. Workflow `[delay 1h, set_journey_attributes, delay 1h]`; each due journey runs "
        f"{STEPS_PER_JOURNEY} steps (the delay ends, attributes set, the second delay starts), so "
        f"{STEPS_PER_JOURNEY * result.journeys:,} `JourneyStep` rows a run. Journeys inserted in bulk at "
        "the first delay on a fresh database each run (not timed). In process: `Engine.run_due()` in a "
        "loop until a batch finds nothing. Workers: `tidings worker` processes, from the first step the "
        "database shows until nothing is due (with their start-up in brackets). Medians of the runs. "
        f"Target ≥ {TARGET_B7_STEPS:,} steps/s.",
        "",
        "| backend | engine | runs | steps/s | journeys/s | seconds | all moved on | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in result.figures:
        ok = f.steps_per_second >= TARGET_B7_STEPS
        with_start = f" ({f.steps_per_second_with_start:,.0f})" if f.mode != "in-process" else ""
        lines.append(
            f"| {f.backend} | {f.mode} | {len(f.runs)} | {f.steps_per_second:,.0f}{with_start} | "
            f"{f.steps_per_second / STEPS_PER_JOURNEY:,.0f} | {f.seconds:.1f} | "
            f"{'yes' if f.complete else 'NO'} | {'met' if ok else 'missed'} |"
        )
        lines.append(
            "|  |  |  | "
            + ", ".join(f"{r.steps_per_second:,.0f}" for r in f.runs)
            + " (each run) |  |  |  |  |"
        )
    for backend, reason in skipped.items():
        lines.append(f"| {backend} | skipped: {reason} |  |  |  |  |  |  |")
    for m in result.memory:
        lines += [
            "",
            f"Worker memory ({m.backend}): one `tidings worker` polling (1 s) for "
            f"{len(m.full.samples)} s after a start-up pause, RSS sampled every second.",
            "",
            "| waiting journeys | RSS median | min to max | growth first → last sample | flat |",
            "|---|---|---|---|---|",
        ]
        for run in (m.empty, m.full):
            flat = abs(run.growth) <= 3 * MB
            lines.append(
                f"| {run.journeys:,} | {run.median / MB:.1f} MB | {min(run.samples) / MB:.1f} to "
                f"{max(run.samples) / MB:.1f} MB | {run.growth / MB:+.1f} MB | {'yes' if flat else 'no'} |"
            )
        verdict = "met" if abs(m.added_bytes) <= 5 * MB and abs(m.full.growth) <= 3 * MB else "missed"
        lines.append(
            f"\n{m.full.journeys:,} waiting journeys add {m.added_bytes / MB:+.1f} MB to the worker's median "
            f"RSS (target: flat, within a few MB): {verdict}. Bulk set-up of the rows took "
            f"{m.setup_seconds:.0f} s."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.b7 BACKEND JOURNEYS``: one in-process run, for profiling by hand."""
    args = list(sys.argv[1:] if argv is None else argv)
    backend = args[0] if args else "sqlite"
    journeys = int(args[1]) if len(args) > 1 else 10_000
    workdir = Path(__file__).resolve().parent / "out"
    with waiting_journeys(backend, workdir, journeys) as (setup, seconds):
        ready = Path(os.environ.get("B7_READY_FILE", "")) if os.environ.get("B7_READY_FILE") else None

        def announce() -> None:
            if ready is not None:
                ready.write_text(str(os.getpid()))
                time.sleep(1.0)  # let a profiler attach

        run = run_in_process(setup, journeys, seconds, on_loop=announce)
    print(f"{run.steps:,} steps in {run.seconds:.2f} s: {run.steps_per_second:,.0f} steps/s; {run.states}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

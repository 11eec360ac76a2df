"""B9 — footprint of ``tidings serve`` on the embedded SQLite database: the time from spawning the process
to its first 200 from ``/healthz``, and its resident memory idle after start and idle after a warm-up of
Track v1 traffic.

Start-up time is dominated by importing Python modules, so it is measured twice: with a bytecode cache
(what an installed package has: pip compiles on install) and without one (every import compiles from
source, as in an environment with ``PYTHONDONTWRITEBYTECODE`` and no ``__pycache__``). Each mode gets its
own ``PYTHONPYCACHEPREFIX`` so neither depends on what happens to be cached on this machine (the smoke
test uses the ``inherit`` mode: this process's environment as it is).
"""

from __future__ import annotations

import secrets
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.b1 import track_v1_mix
from bench.load import LoadResult, machine_load, run_load
from bench.server import start_server, stop_server, throwaway_database

IDLE_SETTLE_SECONDS = 2.0
BYTECODE_MODES = ("cached", "none")
# Not measured by `make bench`: whatever this process's environment does (quick, for the smoke test).
INHERIT = "inherit"


@dataclass(frozen=True)
class B9Run:
    bytecode: str
    # Empty database: serve creates the schema before it listens.
    ready_fresh_seconds: float
    # Already migrated database: the everyday restart.
    ready_existing_seconds: float
    rss_idle_bytes: int
    rss_after_warmup_bytes: int
    warmup: LoadResult


@dataclass(frozen=True)
class B9Result:
    generator: str
    runs: tuple[B9Run, ...]
    load_average: str

    def of(self, bytecode: str) -> tuple[B9Run, ...]:
        return tuple(run for run in self.runs if run.bytecode == bytecode)

    def ready_fresh(self, bytecode: str) -> float:
        return statistics.median(run.ready_fresh_seconds for run in self.of(bytecode))

    def ready_existing(self, bytecode: str) -> float:
        return statistics.median(run.ready_existing_seconds for run in self.of(bytecode))

    def rss_idle(self, bytecode: str) -> float:
        return statistics.median(run.rss_idle_bytes for run in self.of(bytecode))

    def rss_after_warmup(self, bytecode: str) -> float:
        return statistics.median(run.rss_after_warmup_bytes for run in self.of(bytecode))


def bytecode_env(mode: str, workdir: Path) -> dict[str, str]:
    if mode == INHERIT:
        return {}
    if mode == "cached":
        return {"PYTHONPYCACHEPREFIX": str(workdir.resolve() / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
    empty = workdir.resolve() / f"pycache-none-{secrets.token_hex(4)}"
    return {"PYTHONPYCACHEPREFIX": str(empty), "PYTHONDONTWRITEBYTECODE": "1"}


def footprint_once(
    workdir: Path,
    bytecode: str,
    *,
    generator: str,
    warmup_seconds: float,
    warmup_requests: int,
    settle_seconds: float = IDLE_SETTLE_SECONDS,
) -> B9Run:
    env = bytecode_env(bytecode, workdir)
    with throwaway_database("sqlite", workdir) as url:
        server = start_server(url, "sqlite", workdir, migrate_first=False, env=env)
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
        again = start_server(url, "sqlite", workdir, migrate_first=False, env=env)
        stop_server(again)
    return B9Run(bytecode, ready_fresh, again.ready_seconds, rss_idle, rss_warm, warmup)


def run_b9(
    workdir: Path,
    *,
    generator: str,
    repeats: int = 3,
    warmup_seconds: float = 5.0,
    warmup_requests: int = 1_000_000,
    modes: tuple[str, ...] = BYTECODE_MODES,
    settle_seconds: float = IDLE_SETTLE_SECONDS,
) -> B9Result:
    load_at_start = machine_load()
    if "cached" in modes:
        # Fill the bytecode cache once; this start is not measured.
        with throwaway_database("sqlite", workdir) as url:
            stop_server(start_server(url, "sqlite", workdir, env=bytecode_env("cached", workdir)))
    runs = [
        footprint_once(
            workdir,
            mode,
            generator=generator,
            warmup_seconds=warmup_seconds,
            warmup_requests=warmup_requests,
            settle_seconds=settle_seconds,
        )
        for _ in range(repeats)
        for mode in modes
    ]
    return B9Result(generator, tuple(runs), load_at_start)

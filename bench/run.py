"""Run the benchmarks and rewrite ``bench/RESULTS.md``: ``python -m bench.run [--only B1,B5,B7,B8,B9] …``.

Only the sections of the benchmarks run are replaced; the others and the notes are kept as they are."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.b1 import B1Result, run_b1
from bench.b2 import B2Result, run_b2
from bench.b3 import B3Result, run_b3
from bench.b4 import B4Result, run_b4
from bench.b5 import B5Result, render_b5, run_b5
from bench.b6 import B6Backend, B6Result, run_b6_backend, run_b6_render
from bench.b6_broadcast import BroadcastRun, render_broadcast, run_broadcast
from bench.b7 import B7Figure, B7Memory, B7Result, render_b7, run_b7_memory, run_b7_steps
from bench.b8 import PROVIDERS as B8_PROVIDERS
from bench.b8 import B8Result, render_b8, run_b8
from bench.b9 import B9Result, run_b9
from bench.load import pick_generator
from bench.report import (
    BENCHMARK_IDS,
    NOTES_MARKER,
    Environment,
    _sections,
    environment,
    header,
    initial_notes,
    render_b1,
    render_b2,
    render_b3,
    render_b4,
    render_b6,
    render_b9,
    summary,
)
from bench.server import BACKENDS, postgres_available, serving

ROOT = Path(__file__).resolve().parents[1]
# bench.report knows B1-B4, B6 and B9; B5, B7 and B8 render their own sections (bench/b5.py, b7.py, b8.py).
ALL_IDS = tuple(sorted({*BENCHMARK_IDS, "B5", "B7", "B8"}, key=lambda name: int(name[1:])))


@dataclass(frozen=True)
class Size:
    seconds: float
    repeats: int
    warmup_seconds: float
    b1_max_requests: int
    b2_max_requests: int
    baseline_rows: int
    b9_repeats: int
    b9_warmup_seconds: float
    b9_warmup_requests: int
    b9_modes: tuple[str, ...]
    # B3: people and events of the workspace the segment is built over; DuckDB runs per figure.
    b3_people: int
    b3_events: int
    # B3: builds through the server (each a new segment over the same data) and DuckDB runs.
    b3_repeats: int
    # B4: people and events of each workspace; measured (and warm-up) requests per kind and workspace.
    b4_people: int
    b4_events: int
    b4_requests: int
    b4_warmup: int
    # B6: distinct people rendered per figure (render runs = repeats); deliveries per delivery run, and
    # the worker process counts to run them with.
    b6_render_people: int
    b6_deliveries: int
    b6_workers: tuple[int, ...]
    # B6 broadcast fan-out: recipients of one API-triggered broadcast.
    b6_broadcast_recipients: int = 100_000
    # B9: people imported through the batch API while the server's memory is sampled.
    b9_import_people: int = 1_000_000
    # B5: people identified first; measured pings a second and for how long, under background events
    # a second (another event name); runs per backend.
    b5_people: int = 2_000
    b5_rate: float = 10.0
    b5_seconds: float = 30.0
    b5_background_rate: float = 100.0
    b5_repeats: int = 3
    # B7: journeys due at once, runs per engine mode and backend, worker process counts (PostgreSQL),
    # waiting journeys for the memory figure and seconds of RSS samples.
    b7_journeys: int = 100_000
    b7_repeats: int = 3
    b7_postgres_repeats: int = 1
    b7_workers: tuple[int, ...] = (2,)
    b7_memory_journeys: int = 1_000_000
    b7_memory_seconds: float = 30.0
    # B8: journeys reaching the LLM action at once, the model's answer delay, providers measured, values of
    # TIDINGS_AI_CONCURRENCY (None: the server's default), and runs of each (provider, setting) per backend.
    b8_journeys: int = 1_000
    b8_delay: float = 0.5
    b8_providers: tuple[str, ...] = B8_PROVIDERS
    b8_concurrency: tuple[int | None, ...] = (None, 64, 256)
    b8_repeats: int = 3


SIZES = {
    "full": Size(
        10.0,
        3,
        2.0,
        10_000_000,
        1_000_000,
        100_000,
        3,
        5.0,
        1_000_000,
        ("cached", "none"),
        b3_people=1_000_000,
        b3_events=10_000_000,
        # A build takes about a second and DuckDB a fifth of one: five of each make steadier medians
        # (the first build of a server is often the slowest).
        b3_repeats=5,
        b4_people=10_000,
        b4_events=100_000,
        b4_requests=1_000,
        b4_warmup=30,
        b6_render_people=20_000,
        b6_deliveries=20_000,
        b6_workers=(1, 2),
    ),
    "small": Size(
        2.0,
        1,
        0.5,
        2_000,
        50,
        2_000,
        1,
        1.0,
        500,
        ("cached",),
        b3_people=2_000,
        b3_events=20_000,
        b3_repeats=3,
        b4_people=500,
        b4_events=5_000,
        b4_requests=100,
        b4_warmup=5,
        b6_render_people=500,
        b6_deliveries=500,
        b6_workers=(1, 2),
        b6_broadcast_recipients=300,
        b9_import_people=500,
        b5_people=100,
        b5_rate=10.0,
        b5_seconds=3.0,
        b5_background_rate=20.0,
        b5_repeats=1,
        b7_journeys=500,
        b7_repeats=1,
        b7_postgres_repeats=1,
        b7_workers=(2,),
        b7_memory_journeys=5_000,
        b7_memory_seconds=3.0,
        b8_journeys=100,
        b8_providers=("openai", "anthropic"),
        b8_concurrency=(None,),
        b8_repeats=1,
    ),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--only", default=",".join(ALL_IDS), help="comma-separated, e.g. B1,B9")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default by --size)")
    parser.add_argument("--repeats", type=int, help="measured runs per figure; medians are reported")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--connections", type=int, default=32, help="B1 concurrent connections")
    parser.add_argument("--batch-connections", type=int, default=8, help="B2 concurrent connections")
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=0.0,
        help="before each benchmark wait (at most --quiet-timeout s) for the 1-minute load average to drop "
        "below this; 0 (default) does not wait",
    )
    parser.add_argument("--quiet-timeout", type=float, default=600.0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out", help="logs, databases")
    return parser.parse_args(argv)


def wait_for_quiet(threshold: float, timeout: float) -> None:
    """Other work on the machine skews every figure; give it a bounded chance to finish first."""
    if threshold <= 0:
        return
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    print(f"  load average {os.getloadavg()[0]:.2f}", flush=True)


def write_results(path: Path, env: Environment, sections: dict[str, str], baseline: str) -> None:
    """``bench.report.write_results`` over every benchmark id, B5, B7 and B8 included: fresh header, the given
    sections, earlier sections of benchmarks not run, the notes kept as written."""
    previous = path.read_text() if path.exists() else ""
    kept = _sections(previous)
    kept.update(sections)
    notes = (
        previous.split(NOTES_MARKER, 1)[1].strip() if NOTES_MARKER in previous else initial_notes(baseline)
    )
    parts = [header(env)]
    for benchmark in ALL_IDS:
        if benchmark in kept:
            parts.append(
                f"<!-- bench:{benchmark} begin -->\n{kept[benchmark]}\n<!-- bench:{benchmark} end -->"
            )
    parts += [NOTES_MARKER, notes]
    path.write_text("\n\n".join(parts) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Stopped from outside: unwind, so servers are stopped and throwaway databases dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    only = {name.strip().upper() for name in args.only.split(",") if name.strip()}
    unknown = only - set(ALL_IDS)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    size = SIZES[args.size]
    seconds = args.duration or size.seconds
    repeats = args.repeats or size.repeats
    generator = pick_generator(args.generator)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    env = environment()
    print(f"bench: {sorted(only)} on {', '.join(backends)} with {generator}; commit {env.commit}", flush=True)

    b1: list[B1Result] = []
    b2: list[B2Result] = []
    skipped: dict[str, str] = {}
    for backend in backends if only & {"B1", "B2"} else ():
        if backend == "postgres" and not postgres_available():
            skipped[backend] = "PostgreSQL is not reachable"
            continue
        with serving(backend, args.workdir) as server:
            if "B1" in only:
                print(f"B1 on {backend} …", flush=True)
                wait_for_quiet(args.quiet_load, args.quiet_timeout)
                b1.append(
                    run_b1(
                        server,
                        generator=generator,
                        connections=args.connections,
                        seconds=seconds,
                        repeats=repeats,
                        max_requests=size.b1_max_requests,
                        warmup_seconds=size.warmup_seconds,
                    )
                )
                print(f"  {b1[-1].ingest_rps:,.0f} req/s, ratio {b1[-1].ratio:.3f}", flush=True)
            if "B2" in only:
                print(f"B2 on {backend} …", flush=True)
                wait_for_quiet(args.quiet_load, args.quiet_timeout)
                b2.append(
                    run_b2(
                        server,
                        generator=generator,
                        connections=args.batch_connections,
                        seconds=seconds,
                        repeats=repeats,
                        max_requests=size.b2_max_requests,
                        baseline_rows=size.baseline_rows,
                    )
                )
    b3: list[B3Result] = []
    b4: list[B4Result] = []
    skipped_b34: dict[str, str] = {}
    for backend in backends if only & {"B3", "B4"} else ():
        if backend == "postgres" and not postgres_available():
            skipped_b34[backend] = "PostgreSQL is not reachable"
            continue
        if "B3" in only:
            print(f"B3 on {backend} …", flush=True)
            wait_for_quiet(args.quiet_load, args.quiet_timeout)
            b3.append(
                run_b3(
                    backend,
                    args.workdir,
                    people=size.b3_people,
                    events=size.b3_events,
                    repeats=size.b3_repeats,
                )
            )
        if "B4" in only:
            print(f"B4 on {backend} …", flush=True)
            wait_for_quiet(args.quiet_load, args.quiet_timeout)
            b4.append(
                run_b4(
                    backend,
                    args.workdir,
                    people=size.b4_people,
                    events=size.b4_events,
                    requests=size.b4_requests,
                    warmup=size.b4_warmup,
                )
            )
    b6: B6Result | None = None
    skipped_b6: dict[str, str] = {}
    broadcast_runs: list[BroadcastRun] = []
    if "B6" in only:
        print("B6 render …", flush=True)
        wait_for_quiet(args.quiet_load, args.quiet_timeout)
        render = run_b6_render(people=size.b6_render_people, repeats=repeats)
        print(f"  {render.full:,.0f} renders/s, python-liquid ratio {render.ratio:.3f}", flush=True)
        b6_backends: list[B6Backend] = []
        for backend in backends:
            if backend == "postgres" and not postgres_available():
                skipped_b6[backend] = "PostgreSQL is not reachable"
                continue
            print(f"B6 on {backend} …", flush=True)
            wait_for_quiet(args.quiet_load, args.quiet_timeout)
            b6_backends.append(
                run_b6_backend(
                    backend,
                    args.workdir,
                    deliveries=size.b6_deliveries,
                    workers=size.b6_workers,
                    generator=generator,
                    connections=args.connections,
                    seconds=seconds,
                    repeats=repeats,
                    max_requests=size.b1_max_requests,
                    warmup_seconds=size.warmup_seconds,
                )
            )
        b6 = B6Result(render, tuple(b6_backends))
        for backend in backends:
            if backend in skipped_b6:
                continue
            print(f"B6 broadcast fan-out on {backend} …", flush=True)
            wait_for_quiet(args.quiet_load, args.quiet_timeout)
            broadcast_runs += run_broadcast(
                backend, args.workdir, recipients=size.b6_broadcast_recipients, workers=size.b6_workers
            )
    b5: list[B5Result] = []
    b7_figures: list[B7Figure] = []
    b7_memory: list[B7Memory] = []
    skipped_b57: dict[str, str] = {}
    for backend in backends if only & {"B5", "B7"} else ():
        if backend == "postgres" and not postgres_available():
            skipped_b57[backend] = "PostgreSQL is not reachable"
            continue
        if "B5" in only:
            print(f"B5 on {backend} …", flush=True)
            wait_for_quiet(args.quiet_load, args.quiet_timeout)
            b5.append(
                run_b5(
                    backend,
                    args.workdir,
                    people=size.b5_people,
                    rate=size.b5_rate,
                    seconds=args.duration or size.b5_seconds,
                    background_rate=size.b5_background_rate,
                    repeats=args.repeats or size.b5_repeats,
                )
            )
            print(f"  p50 {b5[-1].p50_ms:.0f} ms, p99 {b5[-1].p99_ms:.0f} ms", flush=True)
        if "B7" in only:
            print(f"B7 on {backend} …", flush=True)
            wait_for_quiet(args.quiet_load, args.quiet_timeout)
            b7_figures += run_b7_steps(
                backend,
                args.workdir,
                journeys=size.b7_journeys,
                repeats=args.repeats
                or (size.b7_postgres_repeats if backend == "postgres" else size.b7_repeats),
                workers=size.b7_workers if backend == "postgres" else (),
            )
            b7_memory.append(
                run_b7_memory(
                    backend,
                    args.workdir,
                    journeys=size.b7_memory_journeys,
                    seconds=size.b7_memory_seconds,
                )
            )
    b8: list[B8Result] = []
    skipped_b8: dict[str, str] = {}
    for backend in backends if "B8" in only else ():
        if backend == "postgres" and not postgres_available():
            skipped_b8[backend] = "PostgreSQL is not reachable"
            continue
        print(f"B8 on {backend} …", flush=True)
        wait_for_quiet(args.quiet_load, args.quiet_timeout)
        b8.append(
            run_b8(
                backend,
                args.workdir,
                journeys=size.b8_journeys,
                providers=size.b8_providers,
                concurrencies=size.b8_concurrency,
                repeats=args.repeats or size.b8_repeats,
                delay=size.b8_delay,
            )
        )
    b9: B9Result | None = None
    if "B9" in only:
        print("B9 …", flush=True)
        wait_for_quiet(args.quiet_load, args.quiet_timeout)
        b9 = run_b9(
            args.workdir,
            generator=generator,
            backends=tuple(b for b in backends if b != "postgres" or postgres_available()),
            repeats=size.b9_repeats,
            warmup_seconds=size.b9_warmup_seconds,
            warmup_requests=size.b9_warmup_requests,
            modes=size.b9_modes,
            import_people=size.b9_import_people,
        )

    sections: dict[str, str] = {}
    if "B1" in only:
        sections["B1"] = render_b1(b1, env, skipped)
    if "B2" in only:
        sections["B2"] = render_b2(b2, env, skipped)
    if "B3" in only:
        sections["B3"] = render_b3(b3, env, skipped_b34)
    if "B4" in only:
        sections["B4"] = render_b4(b4, env, skipped_b34)
    if "B5" in only:
        sections["B5"] = render_b5(b5, env.stamp, skipped_b57)
    if b6 is not None:
        sections["B6"] = (
            render_b6(b6, env, skipped_b6) + "\n" + render_broadcast(broadcast_runs, env.stamp, skipped_b6)
        )
    b7 = B7Result(size.b7_journeys, tuple(b7_figures), tuple(b7_memory))
    if "B7" in only:
        sections["B7"] = render_b7(b7, env.stamp, skipped_b57)
    if "B8" in only:
        sections["B8"] = render_b8(b8, env.stamp, skipped_b8)
    if b9 is not None:
        sections["B9"] = render_b9(b9, env)
    write_results(args.output, env, sections, summary(b1, b2, b9, env, b3, b4, b6))
    for text in sections.values():
        print("\n" + text, flush=True)
    print(f"\nwrote {args.output}")
    committed = all(r.all_committed for r in b1) and all(s.all_committed for r in b2 for s in r.surfaces)
    # Wrong answers, not slow ones, fail the run: B3's members must match DuckDB's, B4's every 200 and
    # every membership exact, B6's every delivery received by the sink and `sent`.
    correct = all(r.members_match for r in b3) and all(r.failed == 0 and not r.inconsistent for r in b4)
    correct = correct and (b6 is None or b6.correct)
    # B5: every measured message reached the sink; B7: every due journey moved on by exactly its steps.
    correct = correct and all(r.all_received for r in b5) and b7.complete
    # B8: every journey completed with its own answer, one model request and one charge each.
    correct = correct and all(r.correct for r in b8)
    return 0 if committed and correct else 1


if __name__ == "__main__":
    sys.exit(main())

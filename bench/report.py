"""``bench/RESULTS.md``: one generated section per benchmark, replaced only when that benchmark runs again,
then the hand-kept notes (profiles, and what each change moved), which are never rewritten."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.b1 import B1Result
from bench.b2 import ITEMS_PER_REQUEST, B2Result
from bench.b3 import CONDITIONS_TEXT, B3Result
from bench.b4 import KIND_LABELS, B4Result
from bench.b6 import LINKS_PER_MESSAGE, TEMPLATE_BYTES, B6Result
from bench.b9 import (
    BYTECODE_MODES,
    IMPORT_CONNECTIONS,
    IMPORT_PEOPLE_PER_REQUEST,
    INHERIT,
    RSS_SAMPLE_SECONDS,
    B9Result,
)
from bench.load import machine_load, wrk_version
from bench.server import POSTGRES_ADMIN_URL, postgres_available
from tidings.config import Settings
from tidings.segments.jobs import STEP_KEYS

ROOT = Path(__file__).resolve().parents[1]
NOTES_MARKER = "<!-- bench:notes — everything below is kept as written; bench.run never rewrites it -->"
BENCHMARK_IDS = ("B1", "B2", "B3", "B4", "B6", "B9")
TARGET_B1_RPS = 5_000
TARGET_B1_P99_MS = 50
TARGET_B1_RATIO = 0.5
TARGET_B2_EPS = 50_000
TARGET_B3_SECONDS = 10.0
TARGET_B3_RATIO = 5.0
# The default; the B3 server runs with it.
PART_KEYS: int = Settings.model_fields["segment_build_part"].default
TARGET_B4_ADDED_P99_MS = 10.0
TARGET_B6_RENDERS = 20_000
TARGET_B6_MESSAGES = 2_000
TARGET_B9_RSS_MB = 150
TARGET_B9_READY_S = 3.0
TARGET_B9_IMPORT_RSS_MB = 500
MB = 1024 * 1024


@dataclass(frozen=True)
class Environment:
    date: str
    commit: str
    cores: int
    memory_gib: float
    cpu: str
    python: str
    sqlite: str
    postgres: str
    wrk: str
    load_average: str

    @property
    def stamp(self) -> str:
        return f"{self.date}, commit `{self.commit}`"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip()


def _commit() -> str:
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{head}+dirty" if _git("status", "--porcelain", "--untracked-files=no") else head


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _postgres_version() -> str:
    if not postgres_available():
        return "not reachable"
    with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def environment() -> Environment:
    return Environment(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=_commit(),
        cores=os.cpu_count() or 0,
        memory_gib=_memory_gib(),
        cpu=_cpu_model(),
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        postgres=_postgres_version(),
        wrk=wrk_version(),
        load_average=machine_load(),
    )


def _mark(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def render_b1(results: Iterable[B1Result], env: Environment, skipped: Mapping[str, str]) -> str:
    results = list(results)
    lines = ["## B1 — Track v1 ingestion (identify + event mix, HTTP)", ""]
    if results:
        first = results[0]
        lines += [
            f"Measured {env.stamp}. Generator: **{first.generator}**, {first.connections} connections, "
            f"{len(first.runs)} runs of {first.seconds:g} s per figure (no-op and ingest runs "
            "alternate); medians.",
            f"Target ≥ {_n(TARGET_B1_RPS)} req/s, p99 ≤ {TARGET_B1_P99_MS} ms, ratio ≥ {TARGET_B1_RATIO}.",
            "",
            "| backend | ingest req/s | p50 | p99 | no-op `/healthz` req/s | no-op p99 | ratio | "
            "every 200 committed | non-200 | load average at start |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        for result in results:
            lines.append(
                f"| {result.backend} | {_n(result.ingest_rps)} | {_ms(result.p50_ms)} | {_ms(result.p99_ms)} "
                f"| {_n(result.noop_rps)} | {_ms(result.noop_p99_ms)} | {result.ratio:.3f} "
                f"| {_mark(result.all_committed)} | {result.failed} | {result.load_average} |"
            )
        lines += ["", "Runs (ingest req/s · p99 · 200s acknowledged / rows committed):", ""]
        for result in results:
            runs = "; ".join(
                f"{run.ingest.ok_per_second:,.0f} · {run.ingest.p99_ms:.0f} ms · "
                f"{run.commitment.acknowledged:,} / {run.commitment.committed:,}"
                for run in result.runs
            )
            lines.append(f"- {result.backend}: {runs}")
    for backend, reason in skipped.items():
        lines.append(f"- {backend}: not measured ({reason})")
    return "\n".join(lines)


def render_b2(results: Iterable[B2Result], env: Environment, skipped: Mapping[str, str]) -> str:
    results = list(results)
    lines = [f"## B2 — Batch ingestion ({ITEMS_PER_REQUEST} events a request)", ""]
    if results:
        first = results[0]
        lines += [
            f"Measured {env.stamp}. Generator: **{first.generator}**, {first.connections} connections, "
            f"{first.seconds:g} s runs; medians. Baseline: raw `executemany` of {first.baseline_rows:,} "
            f"equivalent rows into `events` of the same database, {ITEMS_PER_REQUEST} rows a transaction.",
            f"Target ≥ {_n(TARGET_B2_EPS)} events/s.",
            "",
            "| backend | surface | events/s | p50 | p99 | executemany events/s | ratio "
            "| every 200 committed | load average at start |",
            "|---|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for result in results:
            for surface in result.surfaces:
                name = (
                    "`POST /api/v2/batch`" if surface.surface == "track_v2" else "Pipelines `POST /v1/batch`"
                )
                if surface.unavailable:
                    lines.append(
                        f"| {result.backend} | {name} | not yet measured: {surface.unavailable} | | | "
                        f"{_n(result.baseline_events_per_second)} | | | {result.load_average} |"
                    )
                    continue
                lines.append(
                    f"| {result.backend} | {name} | {_n(surface.events_per_second)} | {_ms(surface.p50_ms)} "
                    f"| {_ms(surface.p99_ms)} | {_n(result.baseline_events_per_second)} "
                    f"| {result.ratio(surface):.3f} | {_mark(surface.all_committed)} "
                    f"| {result.load_average} |"
                )
    for backend, reason in skipped.items():
        lines.append(f"- {backend}: not measured ({reason})")
    return "\n".join(lines)


def render_b3(results: Iterable[B3Result], env: Environment, skipped: Mapping[str, str]) -> str:
    results = list(results)
    title = "## B3 — Segment full build"
    if results:
        title += f" ({results[0].people:,} people, {results[0].events:,} events)"
    lines = [title, ""]
    if results:
        first = results[0]
        lines += [
            f"Measured {env.stamp}. Segment: {CONDITIONS_TEXT}. People and events generated in the database "
            "with SQL (`generate_series` / a recursive CTE; secondary indexes dropped during the load and "
            "created again; PostgreSQL then `VACUUM ANALYZE`, SQLite not analysed). Build = `POST "
            "/v1/segments` → first `GET /v1/segments/{id}` showing `finished` (polled every 50 ms), done by "
            "the worker of `tidings serve` in steps of "
            + " and ".join(f"{keys:,} people on {name}" for name, keys in STEP_KEYS.items())
            + f" (each matched in parts of at most {PART_KEYS:,} keys, two at a time); median of "
            f"{len(first.builds)} builds, each a new segment with the same conditions. Baseline: DuckDB "
            f"{first.duckdb.version} ({first.duckdb.threads} threads, in memory, the same rows generated "
            "with `range()` from the same formulas), the same query with `json_extract_string` and a "
            "correlated count, matching ids materialised with `CREATE TEMP TABLE … AS`; median of "
            f"{len(first.duckdb.runs)} runs.",
            f"Target ≤ {TARGET_B3_SECONDS:g} s, ratio (build / DuckDB) ≤ {TARGET_B3_RATIO:g}.",
            "",
            "| backend | generation (informative) | build | DuckDB | ratio | members | DuckDB members "
            "| same members | ≤ 10 s | ratio ≤ 5 | load average at start |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|",
        ]
        for result in results:
            lines.append(
                f"| {result.backend} | {result.generation_seconds:.1f} s | {result.build.seconds:.2f} s "
                f"| {result.duckdb.seconds:.3f} s | {result.ratio:.1f} | {result.build.members:,} "
                f"| {result.duckdb.members:,} | {_mark(result.members_match)} "
                f"| {_mark(result.build.seconds <= TARGET_B3_SECONDS)} "
                f"| {_mark(result.ratio <= TARGET_B3_RATIO)} | {result.load_average} |"
            )
        lines += ["", "Builds and DuckDB runs (s):", ""]
        for result in results:
            builds = ", ".join(f"{build.seconds:.2f}" for build in result.builds)
            runs = ", ".join(f"{run:.3f}" for run in result.duckdb.runs)
            lines.append(
                f"- {result.backend}: builds {builds}; DuckDB {runs} "
                f"(loading the rows: {result.duckdb.load_seconds:.1f} s)"
            )
    for backend, reason in skipped.items():
        lines.append(f"- {backend}: not measured ({reason})")
    return "\n".join(lines)


def render_b4(results: Iterable[B4Result], env: Environment, skipped: Mapping[str, str]) -> str:
    results = list(results)
    lines = ["## B4 — Real-time membership (100 data-driven segments)", ""]
    if results:
        first = results[0]
        lines += [
            f"Measured {env.stamp}. One server per backend, two workspaces with the same "
            f"{first.people:,} people and {first.events:,} events (generated with SQL as in B3): one "
            f"without segments, one with {first.segments} data-driven segments (40 attribute, 30 event, "
            "20 and/or/not, 10 in-segment conditions; `bench/b4.py`), all built first. Then "
            f"{first.requests:,} requests of each kind to each workspace, sequentially over one keep-alive "
            "connection (httpx), interleaved request by request; latency per request. Added = with "
            "segments minus without. Afterwards every segment's membership is compared with a fresh "
            "evaluation of its condition.",
            f"Target: added p99 ≤ {TARGET_B4_ADDED_P99_MS:g} ms per request.",
            "",
            "| backend | request | p50 no segments | p50 100 segments | p99 no segments "
            "| p99 100 segments | added p99 | ≤ 10 ms |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for result in results:
            for kind in result.kinds:
                lines.append(
                    f"| {result.backend} | {KIND_LABELS[kind.kind]} | {_ms(kind.none.p50_ms)} "
                    f"| {_ms(kind.hundred.p50_ms)} | {_ms(kind.none.p99_ms)} | {_ms(kind.hundred.p99_ms)} "
                    f"| {_ms(kind.added_p99_ms)} | {_mark(kind.added_p99_ms <= TARGET_B4_ADDED_P99_MS)} |"
                )
        lines += [""]
        for result in results:
            if result.inconsistent is None:
                check = "not checked (the run outlasted the generated data's time margin)"
            elif result.inconsistent:
                check = f"**{len(result.inconsistent)} differ** (segments {list(result.inconsistent)})"
            else:
                check = f"all {result.segments} exact"
            lines.append(
                f"- {result.backend}: building the {result.segments} segments took "
                f"{result.build_seconds:.1f} s; non-200 answers: {result.failed}; memberships after the "
                f"run: {check}; load average at start {result.load_average}."
            )
    for backend, reason in skipped.items():
        lines.append(f"- {backend}: not measured ({reason})")
    return "\n".join(lines)


def render_b6(result: B6Result, env: Environment, skipped: Mapping[str, str]) -> str:
    lines = ["## B6 — Messaging: render, delivery to SMTP, transactional send", ""]
    lines += [
        f"Measured {env.stamp}. One message throughout (`bench/b6.py`): an order confirmation of "
        f"{TEMPLATE_BYTES:,} bytes of Liquid (body, a layout with a `<style>` block, a footer snippet) "
        "with a loop over the order's 3 items from the trigger data, 4 customer attributes, a `date` filter "
        f"and {LINKS_PER_MESSAGE} links. Targets: render ≥ {_n(TARGET_B6_RENDERS)}/s, "
        f"≥ {_n(TARGET_B6_MESSAGES)} messages/s end to end to a local SMTP server.",
    ]
    render = result.render
    if render is not None:
        lines += [
            "",
            f"### Render ({render.people:,} distinct people, in process, no server)",
            "",
            f"{len(render.runs)} run(s), each rendering every person once per figure; medians. Baseline: "
            f"python-liquid {render.python_liquid} `Environment()` (no autoescape, its own filters), every "
            "template parsed once, rendering the same fields and layout in a bare loop. Rendered HTML "
            f"{render.html_bytes:,} bytes ({render.tracked_links} click-tracked links, {render.pixels} open "
            f"pixel), MIME message {render.mime_bytes:,} bytes. Load average at start {render.load_average}.",
            "",
            "| what | per second | python-liquid, same work | ratio | ≥ 20,000/s |",
            "|---|---:|---:|---:|---|",
            f"| `render_content`: from, to, subject, preheader, body (HTML), layout, click tracking, open "
            f"pixel, List-Unsubscribe URL | {_n(render.full)} | {_n(render.bare_full)} | {render.ratio:.3f} "
            f"| {_mark(render.full >= TARGET_B6_RENDERS)} |",
            f"| Liquid alone: `LiquidTemplates.render` of the body (HTML) | {_n(render.body)} "
            f"| {_n(render.bare_body)} | {render.body_ratio:.3f} | — |",
            f"| MIME build: `render_message` of the rendered content (CSS inlined, text part from the HTML, "
            f"quoted-printable) | {_n(render.mime)} | — | — | — |",
        ]
    if result.backends:
        first = result.backends[0]
        runs = first.deliveries
        deliveries = runs[0].deliveries if runs else 0
        lines += [
            "",
            f"### Delivery to SMTP ({deliveries:,} deliveries a run)",
            "",
            f"`tidings serve --no-worker` on a fresh database; {first.people:,} people identified "
            "through `/api/v2/batch`; the deliveries queued through `POST /v1/send/email` (16 connections, "
            "not timed), then `tidings worker` process(es) started with `TIDINGS_SMTP_URL` pointing at an "
            "aiosmtpd sink in its own process (`bench/smtp_sink.py`: PIPELINING, counts only). Messages/s = "
            "deliveries / (first message accepted by the sink → the sink holds all of them and every "
            'delivery is `sent` in the database); "with start" counts from spawning the workers. CPU per '
            "message: the worker processes' and the sink's user + system time from the first message seen to "
            "the end, over the messages sent in that time (start-up excluded; the database's CPU is not "
            "counted). One run per row.",
            "",
            "| backend | workers | batch | messages/s | with start | ≥ 2,000/s | received / sent "
            "| other states | worker CPU per message | sink CPU per message | queueing (not timed) "
            "| load average at start |",
            "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---|",
        ]
        for backend in result.backends:
            for run in backend.deliveries:
                other = ", ".join(f"{state} {count:,}" for state, count in run.other_states.items()) or "none"
                lines.append(
                    f"| {backend.backend} | {run.workers} | {run.batch_size or 'default'} "
                    f"| {_n(run.messages_per_second)} | {_n(run.messages_per_second_with_start)} "
                    f"| {_mark(run.messages_per_second >= TARGET_B6_MESSAGES)} "
                    f"| {run.received:,} / {run.sent:,} {_mark(run.all_sent)} | {other} "
                    f"| {run.worker_cpu_ms_per_message:.2f} ms | {run.sink_cpu_ms_per_message:.2f} ms "
                    f"| {run.queue_seconds:.1f} s | {run.load_average} |"
                )
        sends = [(backend.backend, backend.send) for backend in result.backends if backend.send is not None]
        if sends:
            send = sends[0][1]
            lines += [
                "",
                "### Transactional send requests",
                "",
                f"`POST /v1/send/email` naming the message by trigger name, with the person's id and address "
                f"and 3-item `message_data` (a new key per request), against the same `--no-worker` server "
                f"(the deliveries stay queued). Generator: **{send.generator}**, {send.connections} "
                f"connections, {len(send.runs)} run(s) of {send.seconds:g} s alternating with no-op `GET "
                "/healthz` runs, as in B1; medians. The keys name people identified beforehand, so sends go "
                "to existing people until that pool runs out (past it, each send creates its person).",
                "",
                "| backend | send req/s | p50 | p99 | no-op req/s | no-op p99 | ratio | every 200 committed "
                "| non-200 | to existing people |",
                "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
            ]
            for backend_name, measured in sends:
                lines.append(
                    f"| {backend_name} | {_n(measured.send_rps)} | {_ms(measured.p50_ms)} "
                    f"| {_ms(measured.p99_ms)} | {_n(measured.noop_rps)} | {_ms(measured.noop_p99_ms)} "
                    f"| {measured.ratio:.3f} | {_mark(measured.all_committed)} | {measured.failed} "
                    f"| {measured.existing_share:.0%} |"
                )
    for backend_name, reason in skipped.items():
        lines.append(f"- {backend_name}: not measured ({reason})")
    return "\n".join(lines)


def render_b9(result: B9Result, env: Environment) -> str:
    modes = [mode for mode in (*BYTECODE_MODES, INHERIT) if any(run.bytecode == mode for run in result.runs)]
    backends = result.backends
    repeats = len(result.of(modes[0], backends[0])) if modes and backends else 0
    lines = [
        "## B9 — Footprint of `tidings serve`",
        "",
        f"Measured {env.stamp}, load average at start {result.load_average}. {repeats} start(s) per mode "
        "and backend; medians. Ready = spawn → first 200 from `/healthz`. Idle RSS 2 s after ready, and 2 s "
        f"after a warm-up of Track v1 traffic (generator: **{result.generator}**); the RSS of "
        f"`tidings serve` only (PostgreSQL's own memory is not counted). Target ≤ {TARGET_B9_RSS_MB} MB "
        f"idle, ready ≤ {TARGET_B9_READY_S:g} s, judged with every module compiled, as `scripts/bootstrap` "
        "installs Tidings; the row without any bytecode is a worst case no install produces (informative).",
        "",
        "| backend | bytecode cache | ready, empty database (migrates) | ready, migrated database "
        "| idle RSS | RSS after warm-up | warm-up requests | target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    labels = {
        "cached": "all compiled (as `scripts/bootstrap` installs)",
        "none": "none (every import compiles)",
        INHERIT: "as this environment has it",
    }

    def verdict(mode: str, met: bool) -> str:
        # No install leaves modules uncompiled: that row shows the worst case and is not judged.
        if mode == "none":
            return "informative (within)" if met else "informative (over)"
        return "met" if met else "**missed**"

    for backend in backends:
        for mode in modes:
            runs = result.of(mode, backend)
            if not runs:
                continue
            warmup = sorted(run.warmup.ok for run in runs)
            met = (
                result.rss_idle(mode, backend) <= TARGET_B9_RSS_MB * MB
                and result.ready_existing(mode, backend) <= TARGET_B9_READY_S
            )
            lines.append(
                f"| {backend} | {labels[mode]} | {result.ready_fresh(mode, backend):.2f} s "
                f"| {result.ready_existing(mode, backend):.2f} s "
                f"| {result.rss_idle(mode, backend) / MB:.0f} MB "
                f"| {result.rss_after_warmup(mode, backend) / MB:.0f} MB "
                f"| {warmup[len(warmup) // 2]:,} | {verdict(mode, met)} |"
            )
    if not result.imports:
        lines += ["", "Import of 1M people (≤ 500 MB during import): not measured in this run."]
        return "\n".join(lines)
    lines += [
        "",
        f"Import: people created through `POST /api/v2/batch`, {IMPORT_PEOPLE_PER_REQUEST} a request (id, "
        f"email and three attributes each), {IMPORT_CONNECTIONS} connections from the Python generator, into "
        "a fresh database; the server's RSS sampled every "
        f"{RSS_SAMPLE_SECONDS:g} s from the first request to the last answer. Target ≤ "
        f"{TARGET_B9_IMPORT_RSS_MB} MB during the import.",
        "",
        "| backend | people | stored | seconds | people/s | RSS before | peak RSS | RSS after | non-200 "
        "| target | load average at start |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for imported in result.imports:
        met = imported.rss_peak_bytes <= TARGET_B9_IMPORT_RSS_MB * MB and imported.stored == imported.people
        lines.append(
            f"| {imported.backend} | {imported.people:,} | {imported.stored:,} | {imported.load.seconds:.1f} "
            f"| {_n(imported.people_per_second)} | {imported.rss_before_bytes / MB:.0f} MB "
            f"| {imported.rss_peak_bytes / MB:.0f} MB | {imported.rss_after_bytes / MB:.0f} MB "
            f"| {imported.load.failed:,} | {'met' if met else '**missed**'} | {imported.load_average} |"
        )
    return "\n".join(lines)


def header(env: Environment) -> str:
    return "\n".join(
        [
            "# Benchmark results",
            "",
            "Written by `make bench` (`.venv/bin/python -m bench.run`; `--help` for options). Targets "
            "and method: the benchmark table of the project brief (B1 to B9). Each section below is "
            "replaced only when its benchmark runs again, so sections may come from different runs: "
            "each says when.",
            "",
            f"Last run: {env.date}, commit `{env.commit}`, load average at start {env.load_average}.",
            f"Machine: {env.cores} cores ({env.cpu}), {env.memory_gib:.1f} GiB, Python {env.python}, "
            f"SQLite {env.sqlite}, PostgreSQL {env.postgres}, {env.wrk}.",
            "",
            "Server, load generator and database share the machine's cores over loopback, and other work "
            "(other developers' test suites) runs on it too: figures are medians and move between runs; "
            "the ratios against a baseline measured in the same run are the steadier numbers.",
        ]
    )


def _sections(text: str) -> dict[str, str]:
    found = {}
    for match in re.finditer(r"<!-- bench:(B\d+) begin -->\n(.*?)\n<!-- bench:\1 end -->", text, re.S):
        found[match.group(1)] = match.group(2)
    return found


def initial_notes(baseline: str) -> str:
    return "\n".join(
        [
            "## Where the time goes",
            "",
            "Not profiled yet: run B1 under py-spy (`python -m bench.profile`) and summarise the top "
            "frames here.",
            "",
            "## What changed and what it moved",
            "",
            "Each optimisation: what it was expected to move, and the figures before and after.",
            "",
            f"- Baseline (first measurement): {baseline}",
        ]
    )


def write_results(path: Path, env: Environment, sections: Mapping[str, str], baseline: str) -> None:
    """Rewrite ``path``: fresh header, the given sections, earlier sections for benchmarks not run, notes."""
    previous = path.read_text() if path.exists() else ""
    kept = _sections(previous)
    kept.update(sections)
    notes = (
        previous.split(NOTES_MARKER, 1)[1].strip() if NOTES_MARKER in previous else initial_notes(baseline)
    )
    parts = [header(env)]
    for benchmark in BENCHMARK_IDS:
        if benchmark in kept:
            parts.append(
                f"<!-- bench:{benchmark} begin -->\n{kept[benchmark]}\n<!-- bench:{benchmark} end -->"
            )
    parts += [NOTES_MARKER, notes]
    path.write_text("\n\n".join(parts) + "\n")


def summary(
    b1: Iterable[B1Result],
    b2: Iterable[B2Result],
    b9: B9Result | None,
    env: Environment,
    b3: Iterable[B3Result] = (),
    b4: Iterable[B4Result] = (),
    b6: B6Result | None = None,
) -> str:
    """One line of the headline figures, for the change log."""
    items = [
        f"B1 {r.backend} {_n(r.ingest_rps)} req/s (p99 {r.p99_ms:.0f} ms, ratio {r.ratio:.2f})" for r in b1
    ]
    for result in b2:
        for surface in result.surfaces:
            figure = (
                "not yet measured" if surface.unavailable else f"{_n(surface.events_per_second)} events/s"
            )
            items.append(f"B2 {result.backend} {surface.surface} {figure}")
        items.append(f"B2 {result.backend} executemany {_n(result.baseline_events_per_second)} events/s")
    for r3 in b3:
        items.append(f"B3 {r3.backend} build {r3.build.seconds:.1f} s (DuckDB ratio {r3.ratio:.0f})")
    for r4 in b4:
        items.append(f"B4 {r4.backend} added p99 up to {r4.worst_added_p99_ms:.0f} ms")
    if b6 is not None and b6.render is not None:
        items.append(f"B6 render {_n(b6.render.full)}/s (python-liquid ratio {b6.render.ratio:.2f})")
    for backend in b6.backends if b6 is not None else ():
        best = backend.best()
        if best is not None:
            items.append(f"B6 {backend.backend} {_n(best.messages_per_second)} msg/s")
        if backend.send is not None:
            items.append(f"B6 {backend.backend} send {_n(backend.send.send_rps)} req/s")
    if b9 is not None and b9.of("cached"):
        items.append(
            f"B9 idle {b9.rss_idle('cached') / MB:.0f} MB, ready {b9.ready_existing('cached'):.2f} s"
        )
    return f"{env.date}, commit `{env.commit}`: " + "; ".join(items) + "."

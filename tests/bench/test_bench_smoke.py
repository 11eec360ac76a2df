"""The benchmarks at a tiny size, on SQLite with the in-process generator: the benchmark code works and
every 200 it counts is in the store. Timings are never asserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.b1 import run_b1
from bench.b2 import ITEMS_PER_REQUEST, run_b2
from bench.b9 import INHERIT, run_b9
from bench.report import NOTES_MARKER, environment, render_b1, render_b2, render_b9, summary, write_results
from bench.server import RunningServer, serving

from tests.conftest import BACKENDS


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serving("sqlite", tmp_path_factory.mktemp("bench")) as running:
        yield running


def test_b1_commits_every_acknowledged_request(bench_server: RunningServer) -> None:
    result = run_b1(
        bench_server,
        generator="python",
        connections=8,
        seconds=30,
        repeats=1,
        max_requests=300,
        warmup_seconds=0,
    )

    run = result.runs[0]
    assert run.noop.ok == 300
    assert run.ingest.ok == 300
    assert run.ingest.failed == 0
    assert run.ingest.ok_by_template == (run.counts.identified, run.counts.events)
    assert run.commitment.holds
    assert "| sqlite |" in render_b1([result], environment(), {})


def test_b2_commits_every_acknowledged_event(bench_server: RunningServer) -> None:
    result = run_b2(
        bench_server,
        generator="python",
        connections=2,
        seconds=30,
        repeats=1,
        max_requests=4,
        baseline_rows=500,
    )

    assert result.baseline_events_per_second > 0
    for surface in result.surfaces:
        if surface.unavailable is not None:
            # Written against the documented wire format before the surface exists: only a 404 may excuse it.
            assert surface.unavailable.startswith("not implemented yet"), surface.unavailable
            continue
        run = surface.runs[0]
        assert run.load.failed == 0
        assert run.events_stored == run.load.ok * ITEMS_PER_REQUEST == 4 * ITEMS_PER_REQUEST
        assert surface.all_committed
    assert "executemany" in render_b2([result], environment(), {})


@pytest.mark.parametrize("backend", BACKENDS)
def test_b9_measures_start_memory_and_an_import(tmp_path: Path, backend: str) -> None:
    result = run_b9(
        tmp_path,
        generator="python",
        backends=(backend,),
        repeats=1,
        warmup_seconds=30,
        warmup_requests=100,
        modes=(INHERIT,),
        settle_seconds=0.1,
        import_people=300,
    )

    [run] = result.runs
    assert run.backend == backend
    assert run.ready_fresh_seconds > 0
    assert run.ready_existing_seconds > 0
    assert run.rss_idle_bytes > 0
    assert run.rss_after_warmup_bytes > 0
    assert run.warmup.ok == 100
    [imported] = result.imports
    assert imported.load.ok == 3
    assert imported.stored == imported.people == 300
    assert imported.rss_peak_bytes >= imported.rss_before_bytes > 0
    assert imported.samples >= 2
    rendered = render_b9(result, environment())
    assert "as this environment has it" in rendered
    assert f"| {backend} | 300 | 300 |" in rendered


def test_results_keep_other_sections_and_the_notes(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    env = environment()
    write_results(path, env, {"B1": "## B1\n\nfirst"}, summary([], [], None, env))
    with path.open("a") as notes:
        notes.write("- a change and what it moved\n")
    write_results(path, env, {"B9": "## B9\n\nsecond"}, "unused")

    text = path.read_text()
    assert "first" in text
    assert "second" in text
    assert text.index("## B1") < text.index("## B9") < text.index(NOTES_MARKER)
    assert "- a change and what it moved" in text
    assert "unused" not in text

"""B3 and B4 at a tiny size on SQLite: the data generation, the build through the server, the DuckDB
baseline and the real-time request mix work, and their answers are right. Timings are never asserted."""

from __future__ import annotations

from pathlib import Path

from bench.b3 import run_b3
from bench.b4 import KINDS, run_b4
from bench.report import environment, render_b3, render_b4, summary


def test_b3_builds_the_segment_duckdb_finds(tmp_path: Path) -> None:
    result = run_b3("sqlite", tmp_path, people=2_000, events=20_000, repeats=2, progress=lambda _: None)

    assert len(result.builds) == 2
    for build in result.builds:
        assert build.states[-1] == "finished"
        assert build.seconds > 0
        assert build.members == result.duckdb.members
    assert result.duckdb.members > 0
    assert result.members_match
    assert "| sqlite |" in render_b3([result], environment(), {})


def test_b4_keeps_100_segments_exact(tmp_path: Path) -> None:
    result = run_b4(
        "sqlite", tmp_path, people=200, events=2_000, requests=10, warmup=2, progress=lambda _: None
    )

    assert result.segments == 100
    assert result.failed == 0
    assert result.inconsistent == ()
    assert [kind.kind for kind in result.kinds] == list(KINDS)
    for kind in result.kinds:
        assert len(kind.none.samples) == len(kind.hundred.samples) == 10
    text = render_b4([result], environment(), {})
    assert "added p99" in text
    assert "all 100 exact" in text
    assert "B4 sqlite" in summary([], [], None, environment(), [], [result])

"""B5 and B7 at a tiny size on SQLite: the timing SMTP sink, the event → email run, the bulk set-up of
waiting journeys, the engine in process and in a worker process, and the worker's memory samples work, and
every message arrives and every due journey moves on. Timings are never asserted."""

from __future__ import annotations

from pathlib import Path

from bench.b5 import _subject, render_b5, run_b5
from bench.b6_broadcast import render_broadcast, run_broadcast
from bench.b7 import STEPS_PER_JOURNEY, B7Result, render_b7, run_b7_memory, run_b7_steps


def test_the_sink_reads_the_subject() -> None:
    raw = b"From: b@example.com\r\nSubject: 42\r\nTo: x@example.com\r\n\r\nSubject: not this one\r\n"
    assert _subject(raw) == "42"


def test_b5_every_measured_event_becomes_an_email(tmp_path: Path) -> None:
    result = run_b5(
        "sqlite",
        tmp_path,
        people=60,
        rate=10,
        seconds=2,
        background_rate=20,
        repeats=1,
        warmup=0.5,
        progress=lambda _: None,
    )

    [run] = result.runs
    assert run.failed == 0
    assert run.pings == 20
    assert run.received == run.pings
    assert len(run.latencies_ms) == run.pings
    assert run.background_sent > 0
    assert result.all_received
    text = render_b5([result], "now", {})
    assert "| sqlite | 1 |" in text
    assert "20/20" in text


def test_b7_moves_every_due_journey_on(tmp_path: Path) -> None:
    figures = run_b7_steps(
        "sqlite", tmp_path, journeys=300, repeats=1, workers=(1,), timeout=120, progress=lambda _: None
    )

    assert [figure.mode for figure in figures] == ["in-process", "1 worker"]
    for figure in figures:
        [run] = figure.runs
        assert run.steps == STEPS_PER_JOURNEY * 300
        assert run.states == {"waiting@second": 300}
        assert run.complete
    memory = run_b7_memory("sqlite", tmp_path, journeys=2_000, seconds=2, warmup=1, progress=lambda _: None)
    assert memory.empty.journeys == 0
    assert memory.full.journeys == 2_000
    assert memory.empty.samples
    assert memory.full.samples
    assert min(memory.empty.samples + memory.full.samples) > 0
    result = B7Result(300, tuple(figures), (memory,))
    assert result.complete
    text = render_b7(result, "now", {})
    assert "| sqlite | in-process | 1 |" in text
    assert "2,000 waiting journeys" in text


def test_b6_broadcast_fan_out_reaches_everyone(tmp_path: Path) -> None:
    runs = run_broadcast("sqlite", tmp_path, recipients=60, workers=(1,), progress=lambda _: None)
    [run] = runs
    assert run.received == 60
    assert run.sent == 60
    assert run.messages_per_second > 0
    text = render_broadcast(runs, "now", {"postgres": "not reachable"})
    assert "| sqlite | 1 | 60 | 60 | 60 |" in text
    assert "not run: not reachable" in text

"""B8 at a tiny size on SQLite: the stand-in provider in its own process, a server whose catalogue points at
it, journeys held and released at once, and every journey's LLM action answered once, stored and charged.
Timings are never asserted."""

from __future__ import annotations

from pathlib import Path

from bench.b8 import DEFAULT_CONCURRENCY, expected_attributes, expected_prompt, render_b8, run_b8


def test_the_model_answers_what_each_person_calls_for() -> None:
    assert expected_prompt(3).startswith("Classify the sentiment of this review by Ada3: ")
    assert expected_attributes(0)["route"] == "thanks"
    assert expected_attributes(1)["route"] == "sorry"


def test_b8_every_journey_runs_its_llm_action_once(tmp_path: Path) -> None:
    result = run_b8(
        "sqlite",
        tmp_path,
        journeys=20,
        providers=("openai", "anthropic"),
        delay=0.05,
        hold_seconds=2,
        warmup=2,
        timeout=60,
        progress=lambda _: None,
    )

    assert [(f.provider, f.concurrency) for f in result.figures] == [
        ("openai", DEFAULT_CONCURRENCY),
        ("anthropic", DEFAULT_CONCURRENCY),
    ]
    for figure in result.figures:
        [run] = figure.runs
        assert run.states == {"completed": 20}, run.problems()
        assert run.matching == 20
        assert run.model_requests == 20
        assert run.prompts_ok == 20
        assert run.single_attempts == 20
        assert run.ledger_entries == 20
        assert run.peak_in_flight >= 1
        assert run.correct, run.problems()
    assert result.correct
    text = render_b8([result], "now", {"postgres": "not reachable"})
    assert f"| sqlite | openai | {DEFAULT_CONCURRENCY} (default) | 1 |" in text
    assert "| postgres | skipped: not reachable |" in text

"""B6 at a tiny size on SQLite: the render figures, the SMTP sink process, delivery through worker processes
to it, and the send requests work, and every queued delivery arrives. Timings are never asserted."""

from __future__ import annotations

from pathlib import Path

from bench.b6 import (
    LINKS_PER_MESSAGE,
    B6Result,
    order_data,
    run_b6_backend,
    run_b6_render,
    smtp_sink,
)
from bench.report import environment, render_b6, summary

from tidings.ids import new_delivery_id
from tidings.messaging.channels.base import Outgoing
from tidings.messaging.channels.email import EmailChannel


def test_b6_render_measures_every_figure() -> None:
    result = run_b6_render(people=40, repeats=1, warmup=5)

    [run] = result.runs
    assert min(run.full, run.bare_full, run.body, run.bare_body, run.mime) > 0
    assert result.tracked_links == LINKS_PER_MESSAGE
    assert result.pixels == 1
    assert result.html_bytes > 2_000
    assert result.mime_bytes > result.html_bytes
    text = render_b6(B6Result(result), environment(), {})
    assert "`render_content`" in text
    assert "python-liquid" in text


def test_the_sink_counts_messages_and_stops_cleanly(tmp_path: Path) -> None:
    with smtp_sink(tmp_path) as sink, EmailChannel(sink.url) as channel:
        for n in range(3):
            content = {"from": "shop@example.com", "to": f"p{n}@example.com", "subject": "Hi", "text": "x"}
            channel.send(Outgoing(new_delivery_id(), 1, "email", content))
        stats = sink.stats()
        process = sink.process

    assert stats.messages == stats.recipients == 3
    assert stats.connections == 1
    assert stats.first_at is not None
    assert stats.last_at is not None
    assert stats.last_at >= stats.first_at
    assert process.returncode == 0


def test_b6_delivers_every_queued_email_and_commits_every_send(tmp_path: Path) -> None:
    result = run_b6_backend(
        "sqlite",
        tmp_path,
        deliveries=60,
        workers=(1, 2),
        generator="python",
        connections=4,
        seconds=30,
        repeats=1,
        max_requests=80,
        warmup_seconds=0,
        progress=lambda _: None,
    )

    assert [run.workers for run in result.deliveries] == [1, 2]
    for run in result.deliveries:
        assert run.received == run.sent == 60
        assert run.other_states == {}
        assert run.all_sent
        assert run.messages_per_second > 0
        assert run.worker_cpu_seconds > 0
    assert result.send is not None
    [send] = result.send.runs
    assert send.send.ok == 80
    assert send.send.failed == 0
    assert send.noop.ok == 80
    assert send.committed == 80
    assert result.send.all_committed
    # The people pool covers every key the generator makes unless one connection ran far ahead.
    assert result.send.existing_share >= 0.9
    outcome = B6Result(None, (result,))
    assert outcome.correct
    text = render_b6(outcome, environment(), {"postgres": "not in the smoke test"})
    assert "| sqlite | 1 |" in text
    assert "| sqlite | 2 |" in text
    assert "Transactional send requests" in text
    assert "B6 sqlite" in summary([], [], None, environment(), b6=outcome)


def test_order_data_totals_its_items() -> None:
    order = order_data(7)

    assert len(order["items"]) == 3
    assert order["total"] == round(sum(i["price"] * i["quantity"] for i in order["items"]), 2)

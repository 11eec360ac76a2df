"""Durable jobs: leases, reclaiming a crashed worker's jobs, periodic maintenance, `tidings worker`."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.harness import TIDINGS
from tidings.config import Settings
from tidings.models import Job, PipelinesMessage, ReportingWebhook, WebhookPost
from tidings.runtime import Runtime
from tidings.worker import queue, wake
from tidings.worker.loop import PERIODIC_CHECK_SECONDS, Worker
from tidings.worker.tasks import HANDLERS, PERIODIC
from tidings.workspaces.service import create_workspace

DAY = 86400


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    instance = Runtime.from_settings(Settings(database_url=database_url))
    yield instance
    instance.db.close()


def test_a_crashed_workers_job_is_reclaimed_after_its_lease(runtime: Runtime) -> None:
    now = runtime.clock.now()
    with runtime.db.session() as session:
        queue.enqueue(session, "purge_pipelines_messages", run_at=now, now=now)
    with runtime.db.session() as session:
        first = queue.claim(session, worker_id="crashed", now=now, lease_seconds=30)
    assert [job.kind for job in first] == ["purge_pipelines_messages"]
    with runtime.db.session() as session:
        assert queue.claim(session, worker_id="other", now=now + 10, lease_seconds=30) == []
    with runtime.db.session() as session:
        again = queue.claim(session, worker_id="other", now=now + 31, lease_seconds=30)
    assert [(job.id, job.attempts) for job in again] == [(first[0].id, 2)]
    with runtime.db.session() as session:
        queue.finish(session, first[0].id, worker_id="crashed")
        assert session.get(Job, first[0].id) is not None, (
            "a worker that lost its lease may not finish the job"
        )
        queue.finish(session, first[0].id, worker_id="other")
        assert session.get(Job, first[0].id) is None


def test_unique_jobs_are_enqueued_once(runtime: Runtime) -> None:
    now = runtime.clock.now()
    with runtime.db.session() as session:
        for _ in range(3):
            queue.enqueue(session, "purge_pipelines_messages", run_at=now, now=now, unique_key="once")
    with runtime.db.read_session() as session:
        assert session.query(Job).count() == 1


def test_failing_jobs_back_off_then_fail(runtime: Runtime) -> None:
    worker = Worker(runtime)
    now = runtime.clock.now()
    with runtime.db.session() as session:
        queue.enqueue(session, "no_such_kind", run_at=now, now=now)
    assert worker.run_once() == 1
    with runtime.db.read_session() as session:
        job = session.query(Job).one()
        assert job.status == "pending"
        assert job.run_at > now
        assert "no handler" in (job.last_error or "")


def test_periodic_maintenance_purges_expired_dedup_keys(runtime: Runtime) -> None:
    worker = Worker(runtime)
    now = int(runtime.clock.now())
    with runtime.db.session() as session:
        workspace = create_workspace(session, "w", now=now)
        session.add(
            PipelinesMessage(workspace_id=workspace.workspace_id, message_id="old", received_at=now - 8 * DAY)
        )
        session.add(PipelinesMessage(workspace_id=workspace.workspace_id, message_id="new", received_at=now))
    worker.schedule_periodic()
    assert worker.run_once() == 0, "periodic jobs wait for their first interval"
    runtime.clock.advance(3601)
    assert worker.run_once() >= 1
    with runtime.db.read_session() as session:
        assert [m.message_id for m in session.query(PipelinesMessage)] == ["new"]


def test_the_worker_command_runs_due_jobs(database_url: str, tmp_path: Path) -> None:
    url = database_url
    runtime = Runtime.from_settings(Settings(database_url=url))
    now = runtime.clock.now()
    with runtime.db.session() as session:
        queue.enqueue(session, "purge_unlinked_anonymous_events", run_at=now, now=now)
    env = {**os.environ, "TIDINGS_DATABASE_URL": url, "TIDINGS_WORKER_POLL_SECONDS": "0.1"}
    with (tmp_path / "worker.log").open("wb") as log:
        process = subprocess.Popen([str(TIDINGS), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        remaining = 1
        while time.monotonic() < deadline and remaining:
            with runtime.db.read_session() as session:
                remaining = session.query(Job).filter(Job.unique_key.is_(None)).count()
            time.sleep(0.1)
        assert remaining == 0
    finally:
        process.terminate()
        process.wait(timeout=15)
        runtime.db.close()
    assert process.returncode is not None
    assert "Tidings worker" in (tmp_path / "worker.log").read_text()


def test_periodic_maintenance_purges_old_webhook_posts(runtime: Runtime) -> None:
    worker = Worker(runtime)
    now = int(runtime.clock.now())
    with runtime.db.session() as session:
        workspace = create_workspace(session, "w", now=now)
        hook = ReportingWebhook(
            workspace_id=workspace.workspace_id,
            name="h",
            endpoint="https://example.com/hook",
            events=["email_sent"],
            created_at=now,
            updated_at=now,
        )
        session.add(hook)
        session.flush()
        rows = {
            "sent-old": ("sent", now - 40 * DAY, now - 2 * DAY),
            "sent-new": ("sent", now, now),
            "abandoned-old": ("abandoned", now - 40 * DAY, None),
            "abandoned-new": ("abandoned", now - 10 * DAY, None),
            "pending-old": ("pending", now - 40 * DAY, None),
        }
        for event_id, (state, created, sent) in rows.items():
            session.add(
                WebhookPost(
                    workspace_id=workspace.workspace_id,
                    webhook_id=hook.id,
                    event_id=event_id,
                    body="{}",
                    state=state,
                    next_attempt_at=now + 10 * DAY,
                    created_at=created,
                    sent_at=sent,
                )
            )
    worker.schedule_periodic()
    runtime.clock.advance(3601)
    assert worker.run_once() >= 1
    with runtime.db.read_session() as session:
        kept = sorted(p.event_id for p in session.query(WebhookPost))
    assert kept == ["abandoned-new", "pending-old", "sent-new"]


def test_a_job_due_now_wakes_the_worker_when_its_transaction_commits(runtime: Runtime) -> None:
    now = runtime.clock.now()
    wake.WORK.clear()
    with runtime.db.session() as session:
        queue.enqueue(session, "purge_pipelines_messages", run_at=now + 60, now=now)
    assert not wake.WORK.is_set(), "a job for later waits for its time"
    with runtime.db.session() as session:
        queue.enqueue(session, "purge_webhook_posts", run_at=now, now=now)
        assert not wake.WORK.is_set(), "nothing to see before the commit"
    assert wake.WORK.is_set()


def test_jobs_that_queue_their_next_step_run_back_to_back(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []

    def step(session: Session, payload: dict[str, Any], now: float, _settings: Settings) -> None:
        ran.append(payload["n"])
        if payload["n"] < 5:
            queue.enqueue(session, "test.chain", run_at=now, now=now, payload={"n": payload["n"] + 1})

    monkeypatch.setitem(HANDLERS, "test.chain", step)
    now = runtime.clock.now()
    with runtime.db.session() as session:
        queue.enqueue(session, "test.chain", run_at=now, now=now, payload={"n": 1})
    # One round of the worker's stages runs the whole chain, not one step per round.
    assert Worker(runtime).run_once() >= 5
    assert ran == [1, 2, 3, 4, 5]


def test_periodic_jobs_are_checked_once_a_minute(runtime: Runtime) -> None:
    worker = Worker(runtime)
    worker.schedule_periodic()

    def periodic() -> int:
        with runtime.db.read_session() as session:
            return session.query(Job).filter(Job.unique_key.like("periodic:%")).count()

    assert periodic() == len(PERIODIC)
    with runtime.db.session() as session:
        session.query(Job).delete()
    worker.schedule_periodic()
    assert periodic() == 0, "checked again within the minute"
    runtime.clock.advance(PERIODIC_CHECK_SECONDS + 1)
    worker.schedule_periodic()
    assert periodic() == len(PERIODIC)

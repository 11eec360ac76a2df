"""The worker: claims due jobs and runs each in its own transaction; the scheduler keeps periodic
jobs queued. ``tidings serve`` runs one in a thread; ``tidings worker`` runs it alone."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from tidings.campaigns import timers
from tidings.campaigns import triggers as _triggers  # noqa: F401  (registers campaign triggers)
from tidings.deliveries.sender import Sender
from tidings.journeys.engine import Engine
from tidings.runtime import Runtime
from tidings.segments import jobs as segment_jobs
from tidings.webhooks import sender as webhook_sender
from tidings.worker import queue, wake
from tidings.worker.tasks import HANDLERS, PERIODIC

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
# Jobs that queue their own next step (a segment build walks the people in steps) run back to back for
# up to this long before the other stages get their turn: a round of them costs a few milliseconds,
# which added up to a quarter of a large build.
JOB_BURST_SECONDS = 0.25
PERIODIC_CHECK_SECONDS = 60.0


class Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.stopping = threading.Event()
        self._periodic_at = float("-inf")
        self.sender = Sender(runtime, self.worker_id)
        self.engine = Engine(runtime, self.worker_id)

    def schedule_periodic(self) -> None:
        now = self.runtime.clock.now()
        # The keyed inserts are idempotent, so once a minute is plenty (periods are an hour or more);
        # every wake-up would cost a transaction when the worker is woken for each commit.
        if now - self._periodic_at < PERIODIC_CHECK_SECONDS:
            return
        self._periodic_at = now
        with self.runtime.db.session() as session:
            for periodic in PERIODIC:
                queue.enqueue(
                    session,
                    periodic.kind,
                    run_at=now + periodic.every_seconds,
                    now=now,
                    unique_key=f"periodic:{periodic.kind}",
                )

    def run_once(self) -> int:
        """Run each kind of due work once: jobs, segment timers, campaign dates and schedules, journey
        steps, deliveries and reporting-webhook posts; return how many items ran. A kind that fails is
        logged and left for the next round without holding up the others."""
        return sum(self._guarded(stage) for stage in self._stages)

    @property
    def _stages(self) -> tuple[Callable[[], int], ...]:
        db, clock, settings = self.runtime.db, self.runtime.clock, self.runtime.settings
        return (
            self._run_jobs,
            self._run_segment_timers,
            lambda: timers.run_due_dates(db, clock.now_int()),
            lambda: timers.run_due_schedules(db, clock.now_int()),
            self.engine.run_due,
            self.sender.run_due,
            lambda: webhook_sender.run_due(db, settings, clock, self.worker_id),
        )

    @staticmethod
    def _guarded(stage: Callable[[], int]) -> int:
        try:
            return stage()
        except Exception:
            log.exception("worker stage %s failed", getattr(stage, "__name__", stage))
            return 0

    def _run_jobs(self) -> int:
        settings = self.runtime.settings
        ran = 0
        until = time.monotonic() + JOB_BURST_SECONDS
        while not self.stopping.is_set():
            with self.runtime.db.session() as session:
                jobs = queue.claim(
                    session,
                    worker_id=self.worker_id,
                    now=self.runtime.clock.now(),
                    lease_seconds=settings.worker_lease_seconds,
                )
            for job in jobs:
                self._run(job)
            ran += len(jobs)
            if not jobs or time.monotonic() >= until:
                break
        return ran

    def _run_segment_timers(self) -> int:
        with self.runtime.db.session() as session:
            return segment_jobs.run_due_timers(session, self.runtime.clock.now_int())

    def _run(self, job: queue.ClaimedJob) -> None:
        handler = HANDLERS.get(job.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {job.kind!r}")
            with self.runtime.db.session() as session:
                handler(session, job.payload, self.runtime.clock.now(), self.runtime.settings)
                queue.finish(session, job.id, worker_id=self.worker_id)
        except Exception as exc:
            log.exception("job %s (%s) failed", job.id, job.kind)
            retry_at = self.runtime.clock.now() + 2**job.attempts if job.attempts < MAX_ATTEMPTS else None
            with self.runtime.db.session() as session:
                queue.fail(session, job.id, worker_id=self.worker_id, error=repr(exc), retry_at=retry_at)

    def run_forever(self) -> None:
        poll = self.runtime.settings.worker_poll_seconds
        while not self.stopping.is_set():
            try:
                self.schedule_periodic()
                while self.run_once() and not self.stopping.is_set():
                    pass
            except Exception:
                log.exception("worker loop error")
            # Until the poll interval passes or this process commits new due work (wake.soon).
            wake.WORK.wait(poll)
            wake.WORK.clear()
        # Pooled SMTP and HTTP connections are closed by the thread that used them, after its last send.
        self.sender.close()
        self.engine.close()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="tidings-worker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stopping.set()
        wake.WORK.set()

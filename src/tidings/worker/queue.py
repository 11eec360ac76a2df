"""Durable jobs: enqueue in the caller's transaction; claim with a lease so a crashed worker's jobs
are picked up again once the lease runs out. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so any
number of workers share the table; SQLite serialises writers, so a plain UPDATE is enough there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tidings.models import Job
from tidings.worker import wake


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    workspace_id: int | None
    payload: dict[str, Any]
    attempts: int


def enqueue(
    session: Session,
    kind: str,
    *,
    run_at: float,
    now: float,
    payload: dict[str, Any] | None = None,
    workspace_id: int | None = None,
    unique_key: str | None = None,
) -> None:
    """Add a job. With ``unique_key``, a job already waiting under that key is left as it is."""
    values = {
        "kind": kind,
        "workspace_id": workspace_id,
        "unique_key": unique_key,
        "payload": payload or {},
        "status": "pending",
        "run_at": run_at,
        "attempts": 0,
        "created_at": now,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(Job).values(**values).on_conflict_do_nothing(index_elements=["unique_key"]))
    if run_at <= now:
        # Due now (a segment build, an import): this process's worker starts on it at the commit, not
        # at its next poll.
        wake.soon(session)


def claim(
    session: Session, *, worker_id: str, now: float, lease_seconds: float, limit: int = 10
) -> list[ClaimedJob]:
    due = or_(
        (Job.status == "pending") & (Job.run_at <= now),
        (Job.status == "running") & (Job.leased_until < now),
    )
    query = select(Job).where(due).order_by(Job.run_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    jobs = session.scalars(query).all()
    claimed = []
    for job in jobs:
        job.status, job.leased_by, job.leased_until = "running", worker_id, now + lease_seconds
        job.attempts += 1
        claimed.append(ClaimedJob(job.id, job.kind, job.workspace_id, dict(job.payload or {}), job.attempts))
    session.flush()
    return claimed


def finish(session: Session, job_id: int, *, worker_id: str) -> None:
    job = session.get(Job, job_id)
    if job is not None and job.leased_by == worker_id:
        session.delete(job)
        session.flush()


def fail(session: Session, job_id: int, *, worker_id: str, error: str, retry_at: float | None) -> None:
    values: dict[str, Any] = {"last_error": error[:2000], "leased_by": None, "leased_until": None}
    values.update({"status": "pending", "run_at": retry_at} if retry_at is not None else {"status": "failed"})
    session.execute(update(Job).where(Job.id == job_id, Job.leased_by == worker_id).values(**values))

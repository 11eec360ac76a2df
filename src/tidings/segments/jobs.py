"""The worker's share of segments: bulk builds of new or edited segments, and due time-window timers.

A build walks the workspace's people in key ranges, one job per range: each step is its own transaction
that evaluates the range with the same SQL real-time evaluation uses, records its progress on the segment
and queues the next step, so a build survives restarts and never holds a long transaction. Real-time
updates go on during a build: people in ranges already built are kept current by them, people in ranges
not yet reached are evaluated by the build from their current data. A step for an outdated generation (the
conditions changed again) stops; the newer generation's build has its own job.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.models import Person, Segment, SegmentTimer
from tidings.segments import realtime
from tidings.segments.conditions import dependencies, parse
from tidings.worker import queue

BUILD_JOB = "segments.build"
# People keys per build step unless settings.segment_build_step says otherwise: big enough that the
# per-step overhead vanishes, small enough that a step is a short transaction. On SQLite a step holds the
# database's one write lock, so ingestion waits for it; on PostgreSQL only real-time updates of the same
# segment wait, and longer steps pay the per-step work less often (B3, 1M people: 1.0 → 0.75 s).
STEP_KEYS = {"sqlite": 50_000, "postgresql": 250_000}
TIMERS_PER_PASS = 5_000


def build_step(session: Session, payload: dict[str, Any], now: float, settings: Settings) -> None:
    segment = session.get(Segment, int(payload["segment_id"]))
    if segment is None or segment.type != "dynamic" or segment.generation != payload["generation"]:
        return
    workspace_id = segment.workspace_id
    realtime.lock_for_build(session, workspace_id, segment.id)
    after = int(payload.get("after", 0))
    if "last" not in payload:
        # The build covers the people that exist now; anyone created later is evaluated in real time
        # (their creating transaction already knows this segment).
        # Two scalar subqueries: each is one probe of (workspace_id, id); min and max in one SELECT
        # would walk the workspace's whole index range on SQLite.
        in_workspace = Person.workspace_id == workspace_id
        first_id, last_id = session.execute(
            select(
                select(func.min(Person.id)).where(in_workspace).scalar_subquery(),
                select(func.max(Person.id)).where(in_workspace).scalar_subquery(),
            )
        ).one()
        payload = {**payload, "first": first_id or 1, "last": last_id or 0}
        after = max(after, (first_id or 1) - 1)
    last, first = int(payload["last"]), int(payload["first"])
    step = settings.segment_build_step or STEP_KEYS[session.get_bind().dialect.name]
    low, high = after + 1, after + max(1, step)
    if low > last:
        segment.state, segment.progress = "finished", None
        return
    condition = parse(segment.conditions)
    definition = realtime.Definition(segment.id, segment.generation, condition, dependencies(condition))
    if "drive" not in payload:
        # Decided once, at the build's first step, and kept by the steps after it.
        drive = realtime.drives(
            session, workspace_id, definition, low, high, now=int(now), part_keys=settings.segment_build_part
        )
        payload = {**payload, "drive": drive}
    moved = realtime.evaluate_range(
        session,
        workspace_id,
        definition,
        low,
        high,
        now=int(now),
        emit=bool(payload.get("emit")),
        part_keys=settings.segment_build_part,
        drive=bool(payload["drive"]),
    )
    if moved:
        # Segments using this one follow, as they would after a real-time change.
        index = realtime.definitions(session, workspace_id)
        realtime.run(
            session,
            workspace_id,
            index,
            {user: set(moved) for user in index.users.get(segment.id, ())},
            now=int(now),
        )
    segment.state = "build"
    segment.progress = max(0, min(99, (high - first + 1) * 100 // max(1, last - first + 1)))
    queue.enqueue(
        session,
        BUILD_JOB,
        run_at=now,
        now=now,
        workspace_id=workspace_id,
        payload={**payload, "after": high},
    )


def run_due_timers(session: Session, now: int, *, limit: int = TIMERS_PER_PASS) -> int:
    """Re-evaluate the (segment, person) pairs whose window edge has passed; return how many."""
    query = (
        select(SegmentTimer.workspace_id, SegmentTimer.segment_id, SegmentTimer.person_id)
        .where(SegmentTimer.due_at <= now)
        .order_by(SegmentTimer.due_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    if not rows:
        return 0
    work: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for workspace_id, segment_id, person_id in rows:
        work[workspace_id][segment_id].add(person_id)
    for workspace_id, segments in work.items():
        index = realtime.definitions(session, workspace_id)
        known = {definition.id for definition in index.ordered}
        for segment_id in [s for s in segments if s not in known]:
            # The segment stopped being data-driven or was deleted after the timer was set.
            session.execute(delete(SegmentTimer).where(SegmentTimer.segment_id == segment_id))
            segments.pop(segment_id)
        realtime.run(session, workspace_id, index, dict(segments), now=now)
        for segment_id, person_ids in segments.items():
            # Evaluation sets each pair's next timer strictly after now; should one not be, dropping it
            # here keeps a faulty condition from re-running forever.
            session.execute(
                delete(SegmentTimer).where(
                    SegmentTimer.segment_id == segment_id,
                    SegmentTimer.person_id.in_(sorted(person_ids)),
                    SegmentTimer.due_at <= now,
                )
            )
    return len(rows)

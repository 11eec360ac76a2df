"""Deleting people while segments are written, on PostgreSQL, in process: memberships and timers have no
foreign key to people, so these interleavings are what keeps a deleted person out of every segment
(``tidings.segments.realtime.lock_for_build`` and ``lock_for_deletion``). Each test holds one transaction
open at the instant that matters and runs the other side in a thread.

SQLite needs none of this (one writer at a time); the API tests delete, suppress and merge people on
both stores and check that nothing names them afterwards (``orphan_rows``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.db import Database
from tidings.events.service import EventInput, track_person_event
from tidings.models import Person, SegmentMembership, SegmentTimer
from tidings.people import service as people
from tidings.people.identifiers import Identifier
from tidings.segments import jobs
from tidings.segments import service as segments
from tidings.workspaces.limits import Limits, WorkspaceSettings
from tidings.workspaces.schemas import WorkspaceContext
from tidings.workspaces.service import create_workspace

T = TypeVar("T")
NOW = 1_700_000_000
# Long enough for the other side to reach the lock it must wait at.
SETTLE_SECONDS = 0.5
PRO = {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}
# Time-dependent, so a build also writes a timer for each member.
PRO_BUYERS = {"and": [PRO, {"event": {"name": "purchase", "within": {"days": 7}}}]}


@pytest.fixture
def db(postgres_db: Database) -> Database:
    return postgres_db


@pytest.fixture
def ws(db: Database) -> WorkspaceContext:
    """A workspace with people p0 … p5 on plan pro, each with a recent purchase."""
    with db.session() as session:
        created = create_workspace(session, "deletions", now=NOW)
        context = WorkspaceContext(
            workspace_id=created.workspace_id,
            site_id=created.site_id,
            name="deletions",
            settings=WorkspaceSettings(),
            credential_id=0,
        )
    with db.session() as session:
        for index in range(6):
            people.identify(session, context, ident(f"p{index}"), {"plan": "pro"}, now=NOW)
            purchase = EventInput(name="purchase", timestamp=NOW - 3600)
            track_person_event(session, context, ident(f"p{index}"), purchase, now=NOW)
    return context


def ident(customer_id: str) -> Identifier:
    return Identifier("id", customer_id)


def dynamic_segment(db: Database, ws: WorkspaceContext, conditions: dict[str, Any]) -> int:
    """A data-driven segment whose build has not run yet (its first step is up to the test)."""
    with db.session() as session:
        body = {"segment": {"name": f"s{time.monotonic_ns()}", "conditions": conditions}}
        segment_id: int = segments.create_segment(session, ws.workspace_id, body, now=NOW)["id"]
    return segment_id


def build_step(session: Session, segment_id: int) -> None:
    """The build's first step, over every person of the workspace."""
    settings = Settings(segment_build_step=1_000, segment_build_part=2)
    jobs.build_step(session, {"segment_id": segment_id, "generation": 1}, NOW, settings)


def person_id(db: Database, customer_id: str) -> int:
    with db.session() as session:
        found = session.scalar(select(Person.id).where(Person.customer_id == customer_id))
    assert found is not None
    return found


def rows_of(db: Database, segment_id: int) -> tuple[set[int], set[int]]:
    """The segment's members and the people it holds timers for."""
    with db.session() as session:
        members = set(
            session.scalars(
                select(SegmentMembership.person_id).where(SegmentMembership.segment_id == segment_id)
            )
        )
        timers = set(
            session.scalars(select(SegmentTimer.person_id).where(SegmentTimer.segment_id == segment_id))
        )
    return members, timers


def orphans(db: Database) -> int:
    """Memberships and timers naming nobody."""
    with db.session() as session:
        total = 0
        for table in (SegmentMembership, SegmentTimer):
            total += (
                session.scalar(
                    select(func.count()).select_from(table).where(table.person_id.not_in(select(Person.id)))
                )
                or 0
            )
    return total


def delete_in(db: Database, ws: WorkspaceContext, customer_id: str) -> Callable[[], bool]:
    def work() -> bool:
        with db.session() as session:
            return people.delete_person(session, ws, ident(customer_id))

    return work


def start(pool: ThreadPoolExecutor, work: Callable[[], T]) -> Future[T]:
    future = pool.submit(work)
    time.sleep(SETTLE_SECONDS)
    return future


def test_a_deletion_waits_for_the_build_step_that_matched_the_person(
    db: Database, ws: WorkspaceContext
) -> None:
    segment_id = dynamic_segment(db, ws, PRO_BUYERS)
    doomed = person_id(db, "p3")
    with ThreadPoolExecutor(1) as pool, db.session() as step:
        build_step(step, segment_id)
        step.flush()
        deletion = start(pool, delete_in(db, ws, "p3"))
        # The step has matched p3 and written their membership and timer, uncommitted: the deletion
        # waits for it to commit, so that its deletes see them.
        assert not deletion.done()
    assert deletion.result(timeout=10) is True
    members, timers = rows_of(db, segment_id)
    assert len(members) == 5
    assert doomed not in members
    assert timers == members
    assert orphans(db) == 0


def test_a_build_step_waits_for_a_deletion_in_flight(db: Database, ws: WorkspaceContext) -> None:
    segment_id = dynamic_segment(db, ws, PRO_BUYERS)
    doomed = person_id(db, "p2")

    def step() -> None:
        with db.session() as session:
            build_step(session, segment_id)

    with ThreadPoolExecutor(1) as pool, db.session() as deletion:
        assert people.delete_person(deletion, ws, ident("p2"))
        deletion.flush()
        # The deletion is not committed, so the step would still see p2: it waits (trying again) instead.
        stepping = start(pool, step)
        assert not stepping.done()
    stepping.result(timeout=10)
    members, timers = rows_of(db, segment_id)
    assert len(members) == 5
    assert doomed not in members
    assert timers == members
    assert orphans(db) == 0


def test_a_deletion_that_then_evaluates_the_segment_being_built_does_not_deadlock(
    db: Database, ws: WorkspaceContext
) -> None:
    """The deletion's transaction goes on to change another person, which evaluates the segment whose
    build step holds the segment's lock and waits for the deletion: the step lets go and tries again."""
    segment_id = dynamic_segment(db, ws, PRO_BUYERS)
    changed = person_id(db, "p4")

    def step() -> None:
        with db.session() as session:
            build_step(session, segment_id)

    with ThreadPoolExecutor(1) as pool:
        with db.session() as deletion:
            assert people.delete_person(deletion, ws, ident("p1"))
            deletion.flush()
            stepping = start(pool, step)
            # Evaluated at the commit, for the segment the step is trying to lock.
            people.identify(deletion, ws, ident("p4"), {"plan": "free"}, now=NOW)
            started = time.monotonic()
        assert time.monotonic() - started < 5
        stepping.result(timeout=10)
    members, timers = rows_of(db, segment_id)
    assert person_id(db, "p0") in members
    assert changed not in members
    assert len(members) == 4
    assert timers == members
    assert orphans(db) == 0


def test_adding_a_person_being_deleted_to_a_manual_segment_adds_nobody(
    db: Database, ws: WorkspaceContext
) -> None:
    with db.session() as session:
        manual = segments.create_segment(session, ws.workspace_id, {"segment": {"name": "vip"}}, now=NOW)[
            "id"
        ]

    def add() -> int:
        with db.session() as session:
            body = {"ids": ["p5", "p0"]}
            return segments.change_membership(
                session, ws.workspace_id, manual, body, id_type="id", add=True, now=NOW, limits=Limits()
            )

    with ThreadPoolExecutor(1) as pool, db.session() as deletion:
        assert people.delete_person(deletion, ws, ident("p5"))
        deletion.flush()
        adding = start(pool, add)
        assert not adding.done()
    assert adding.result(timeout=10) == 1
    members, _ = rows_of(db, manual)
    assert members == {person_id(db, "p0")}
    assert orphans(db) == 0

"""Real-time membership: every change re-evaluates, in its own transaction, only the segments it can affect
and only for the people it touches.

Ingestion services say what they touched (:func:`touched`: people and dependency keys such as
``attr:plan``, ``event:event:purchase``, ``device``, ``object:1``, ``segment:7``, or ``*`` for everything).
Nothing is evaluated then: the keys collect on the session, and just before the transaction commits
(SQLAlchemy's ``before_commit``) one pass evaluates each affected segment for all the people a group
commit touched — the same SQL a bulk build runs, restricted to those people. The pass follows segment
dependencies level by level (see :func:`dependency_levels`), so a change of membership in one segment
re-evaluates the segments that use it ("in segment" conditions) in the same transaction. The segments
of the first level are judged together, in one query for up to ``BATCH`` of them; deeper ones one by one,
or a level at a time for people just created (see :func:`run`).

Entries and exits are written as ``entered_segment`` / ``exited_segment`` activities and noted as
signals, which campaigns act on before the transaction commits. For segments with time-dependent conditions
each evaluated person gets a :class:`SegmentTimer` at the next instant their result can flip; the worker
re-evaluates exactly those (see :func:`tidings.segments.jobs.run_due_timers`).

Segment definitions are cached per process and workspace, keyed by ``workspaces.segments_version``, which
every segment change bumps. On PostgreSQL the version is read ``FOR SHARE``: a segment change (which
updates that row) waits for in-flight writes and later writes wait for it, so every write either committed
before the segment existed (its build will see the data) or knows the segment.
"""

from __future__ import annotations

import functools
import threading
import time
from bisect import bisect_left, bisect_right
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Insert,
    Integer,
    Select,
    SQLColumnExpression,
    Table,
    and_,
    any_,
    bindparam,
    column,
    delete,
    event,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tidings import signals
from tidings.db.bulk import insert_rows
from tidings.db.database import read_engine_of
from tidings.db.prepared import Prepared, prepare
from tidings.models import Base, Person, Segment, SegmentMembership, SegmentTimer
from tidings.people import activity
from tidings.segments import compiler
from tidings.segments.conditions import (
    PERSON_FIELDS,
    And,
    AttributeCondition,
    Condition,
    Dependencies,
    EventCondition,
    InSegment,
    Not,
    Or,
    dependencies,
    parse,
)
from tidings.workspaces import versions

T = TypeVar("T")
EVERYTHING = "*"
# A person was just created: the segments a person with no data can be in, plus whatever other keys the
# creating call names (the attributes it set, the event it recorded).
CREATED = "created"
# What a new person always has: its identifiers, creation time and subscription flag.
CREATED_KEYS = (CREATED, "attr:id", "attr:email", "attr:cio_id", "attr:created_at", "attr:unsubscribed")
_PENDING = "tidings.segments.pending"
# People evaluated per statement: bounded so IN lists stay small and plans stay index lookups.
CHUNK = 500
# PostgreSQL advisory-lock namespace for segment evaluation (the second key is the segment id).
SEGMENT_LOCK = 7301
# PostgreSQL advisory-lock namespace keeping people's deletions and bulk-build steps apart (the second key
# is the workspace id): see :func:`lock_for_build` and :func:`lock_for_deletion`.
DELETION_LOCK = 7302
# How long a build step waits for the deletions in flight before it lets go of its segment's lock and
# tries again, and how many times it tries.
DELETION_WAIT = "50ms"
BUILD_LOCK_ATTEMPTS = 40
# PostgreSQL's SQLSTATE for a lock wait that ran past lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"


# -- what ingestion calls ------------------------------------------------------------------------------


@dataclass
class _Pending:
    now: int
    people: dict[int, dict[int, set[str]]] = field(default_factory=lambda: defaultdict(dict))


def touched(
    session: Session, workspace_id: int, person_ids: Iterable[int], keys: Iterable[str], *, now: int
) -> None:
    """Note that a change touched these people in ways named by ``keys``; they are re-evaluated before
    the transaction commits."""
    pending: _Pending | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = _Pending(now)
    pending.now = max(pending.now, now)
    workspace = pending.people[workspace_id]
    key_set = set(keys)
    for person_id in person_ids:
        workspace.setdefault(person_id, set()).update(key_set)


def leaving(session: Session, workspace_id: int, person_id: int) -> None:
    """A person is about to be deleted (delete, suppress, merge): drop what is pending for them. Their
    memberships, timers and activity log go with them; no exits are recorded or signalled."""
    pending: _Pending | None = session.info.get(_PENDING)
    if pending is not None:
        pending.people.get(workspace_id, {}).pop(person_id, None)


def record_manual(
    session: Session,
    workspace_id: int,
    segment_id: int,
    person_ids: Iterable[int],
    *,
    entered: bool,
    now: int,
) -> None:
    """People added to or removed from a manual segment: their moves, and the segments using it."""
    ids = list(person_ids)
    _write_moves(session, workspace_id, [(segment_id, p, entered) for p in ids], now=now)
    touched(session, workspace_id, ids, [f"segment:{segment_id}"], now=now)


# -- definitions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    id: int
    generation: int
    condition: Condition
    deps: Dependencies


@dataclass(frozen=True)
class Definitions:
    """The dynamic segments of a workspace, in dependency order, and which keys reach which segments."""

    version: int
    ordered: tuple[Definition, ...]
    by_key: dict[str, tuple[int, ...]]
    users: dict[int, tuple[int, ...]]
    # Segments a person with no attributes, events, devices or relationships may be in.
    on_create: frozenset[int] = frozenset()
    # ``ordered`` cut into dependency levels: a segment's level is one more than the highest level of the
    # segments it uses, so no segment uses another of its own level and a level is evaluated at once.
    levels: tuple[tuple[Definition, ...], ...] = ()

    def affected(self, keys: set[str]) -> set[int]:
        if EVERYTHING in keys:
            return {definition.id for definition in self.ordered}
        found: set[int] = set(self.on_create) if CREATED in keys else set()
        for key in keys:
            found.update(self.by_key.get(key, ()))
            if key.startswith("event:"):
                kind = key.split(":", 2)[1]
                found.update(self.by_key.get(f"event:{kind}:*", ()))
        return found


_cache: dict[tuple[str, int], Definitions] = {}
_cache_lock = threading.Lock()


def definitions(session: Session, workspace_id: int) -> Definitions:
    version, _ = versions.read(session, workspace_id, lock=True)
    key = (str(session.get_bind().engine.url), workspace_id)
    cached = _cache.get(key)
    if cached is not None and cached.version == version:
        return cached
    loaded = load_definitions(session, workspace_id, version)
    with _cache_lock:
        _cache[key] = loaded
    return loaded


def load_definitions(session: Session, workspace_id: int, version: int) -> Definitions:
    rows = session.execute(
        select(Segment.id, Segment.generation, Segment.conditions).where(
            Segment.workspace_id == workspace_id, Segment.type == "dynamic"
        )
    ).all()
    found = {}
    for segment_id, generation, document in rows:
        condition = parse(document)
        found[segment_id] = Definition(segment_id, generation, condition, dependencies(condition))
    ordered = tuple(found[segment_id] for segment_id in dependency_order(found))
    by_key: dict[str, list[int]] = defaultdict(list)
    users: dict[int, list[int]] = defaultdict(list)
    for definition in ordered:
        for dep_key in definition.deps.keys:
            by_key[dep_key].append(definition.id)
        for used in definition.deps.segments:
            users[used].append(definition.id)
    empty: dict[int, bool | None] = {}
    for definition in ordered:
        empty[definition.id] = _empty_result(definition.condition, empty)
    return Definitions(
        version,
        ordered,
        {k: tuple(v) for k, v in by_key.items()},
        {k: tuple(v) for k, v in users.items()},
        frozenset(segment_id for segment_id, result in empty.items() if result is not False),
        dependency_levels(ordered),
    )


def _empty_result(condition: Condition, segments: dict[int, bool | None]) -> bool | None:
    """The condition's result for a person with no custom attributes, events, devices, relationships or
    messages; None when it depends on what every person has (identifiers, creation time, subscription).
    ``segments`` holds the same for the segments already seen (dependency order); manual ones are empty."""
    if isinstance(condition, And | Or):
        results = [_empty_result(item, segments) for item in condition.items]
        if isinstance(condition, And):
            return False if False in results else (None if None in results else True)
        return True if True in results else (None if None in results else False)
    if isinstance(condition, Not):
        inner = _empty_result(condition.item, segments)
        return None if inner is None else not inner
    result: bool | None
    inverse = getattr(condition, "inverse", False)
    if isinstance(condition, InSegment):
        result = segments.get(condition.segment_id, False)
    elif isinstance(condition, AttributeCondition):
        if condition.test.field in PERSON_FIELDS:
            return None
        result, inverse = False, condition.test.inverse
    elif isinstance(condition, EventCondition):
        if condition.timing is not None:
            result = False
        elif condition.count_operator == "at_least":
            result = condition.count <= 0
        elif condition.count_operator == "at_most":
            result = True
        else:
            result = condition.count == 0
    else:  # device, object, message
        result = False
    return None if result is None else result != inverse


def dependency_levels(ordered: tuple[Definition, ...]) -> tuple[tuple[Definition, ...], ...]:
    """``ordered`` (dependency order) grouped by level. A segment of a cycle that slipped in sees the
    segments not yet levelled as level 0, as ``dependency_order`` evaluates them in id order."""
    level: dict[int, int] = {}
    for definition in ordered:
        level[definition.id] = 1 + max((level.get(u, -1) for u in definition.deps.segments), default=-1)
    grouped: dict[int, list[Definition]] = defaultdict(list)
    for definition in ordered:
        grouped[level[definition.id]].append(definition)
    return tuple(tuple(grouped[n]) for n in sorted(grouped))


def dependency_order(found: dict[int, Definition]) -> list[int]:
    """Segments after the segments they use. Cycles are refused when segments are saved; any that slipped
    in (a concurrent save) are evaluated in id order rather than looping."""
    order: list[int] = []
    state: dict[int, int] = {}

    def visit(segment_id: int) -> None:
        if state.get(segment_id) is not None:
            return
        state[segment_id] = 1
        for used in sorted(found[segment_id].deps.segments):
            if used in found:
                visit(used)
        state[segment_id] = 2
        order.append(segment_id)

    for segment_id in sorted(found):
        visit(segment_id)
    return order


# -- evaluation ----------------------------------------------------------------------------------------


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    flush_pending(session)


def flush_pending(session: Session) -> None:
    """Evaluate what the transaction touched so far (also run before campaign triggers react)."""
    pending: _Pending | None = session.info.pop(_PENDING, None)
    if pending is None:
        return
    session.flush()
    for workspace_id, people in pending.people.items():
        if people:
            evaluate_touched(session, workspace_id, people, now=pending.now)


def evaluate_touched(session: Session, workspace_id: int, people: dict[int, set[str]], *, now: int) -> None:
    index = definitions(session, workspace_id)
    if not index.ordered:
        return
    work: dict[int, set[int]] = defaultdict(set)
    for person_id, keys in people.items():
        for segment_id in index.affected(keys):
            work[segment_id].add(person_id)
    created = {p for p, keys in people.items() if CREATED in keys}
    everything = {p for p, keys in people.items() if EVERYTHING in keys}
    run(session, workspace_id, index, work, now=now, fresh=created | everything, created=created)


def run(
    session: Session,
    workspace_id: int,
    index: Definitions,
    work: dict[int, set[int]],
    *,
    now: int,
    fresh: set[int] | None = None,
    created: set[int] | None = None,
) -> None:
    """Evaluate ``work`` (segment → people) in dependency order, adding the users of every segment whose
    membership moved. ``created`` people were inserted by this transaction.

    ``fresh`` people were just created: the segments left out for them were judged on what a person with
    no data would be (see ``Definitions.on_create``), which assumes every segment they use holds that
    person exactly when an empty person would be in it. A fresh person's real data can break that for a
    segment that was evaluated even though its stored membership did not move (nothing was stored yet),
    so for them every evaluated segment hands on to its users."""
    if not work:
        return
    work = defaultdict(set, work)
    postgres = session.get_bind().dialect.name == "postgresql"
    locked: set[int] = set()
    moves: Moves = []
    if postgres:
        # People this transaction created are locked by it already: no other one can see them yet.
        everyone = set().union(*work.values())
        if unlocked_people := everyone - (created or set()):
            _lock_people(session, sorted(unlocked_people))
        # People just created hand every segment evaluated for them on to its users (below): all the
        # segments they will reach are known now, and locked in one round trip.
        handed_on = fresh is not None and everyone <= fresh
        locked = _lock_segments(session, _reachable(index, work) if handed_on else sorted(work))
    for depth, level in enumerate(index.levels):
        batch = [(d, work.pop(d.id)) for d in level if work.get(d.id)]
        if not batch:
            continue
        if postgres and (unlocked := sorted(d.id for d, _ in batch if d.id not in locked)):
            locked |= _lock_segments(session, unlocked)
        # The first level's batch follows from the keys a change touches, so few distinct batches occur
        # and each statement is soon cached. Deeper levels hold the users of segments whose membership
        # moved, which varies from change to change: judged one by one, their statements (one per
        # segment) are always cached, where each new batch would cost its compilation (~1.3 ms a segment).
        # Except for people just created: every segment evaluated for them hands on to all its users, so
        # their deeper batches follow from the keys too, and one statement a level saves round trips.
        whole = depth == 0 or (fresh is not None and all(ids <= fresh for _, ids in batch))
        changed: dict[int, set[int]] = {}
        for part in [batch] if whole else [[item] for item in batch]:
            changed |= evaluate(session, workspace_id, part, now=now, sink=moves)
        for definition, person_ids in batch:
            moved = changed[definition.id] | (person_ids & fresh if fresh else set())
            for user in index.users.get(definition.id, ()):
                work[user].update(moved)
    _write_moves(session, workspace_id, moves, now=now)


def _lock_people(session: Session, person_ids: list[int]) -> None:
    """PostgreSQL: evaluations of one person run one at a time, each after the previous one committed, so
    the last evaluation always sees every committed change (READ COMMITTED reads afresh per statement).
    Sorted, so concurrent transactions lock in the same order. SQLite needs nothing: writers are serial."""
    for chunk in _chunks(person_ids, CHUNK):
        _lock_people_statement().fetch_all(session.connection(), {"ids": chunk})


# Compiled at first use, not at import (a process on SQLite never needs them).
@functools.cache
def _lock_people_statement() -> Prepared:
    return prepare(
        select(Person.id)
        .where(Person.id == func.any(bindparam("ids", type_=ARRAY(BigInteger()))))
        .order_by(Person.id)
        .with_for_update(key_share=True)
    )


# Also, for the rest of the transaction, generic plans for prepared statements. The statement judging a
# batch of segments for a person holds a subquery or two per segment; PostgreSQL kept planning it afresh
# at every execution (its time parameters make each custom plan look cheaper than the generic one), about
# 1 ms of a new person's 100 segments, while the generic plan (index lookups by person) is as good.
@functools.cache
def _lock_segments_statement() -> Prepared:
    return prepare(
        select(
            func.pg_advisory_xact_lock_shared(
                bindparam("namespace", type_=Integer()), column("x", Integer())
            ),
            func.set_config("plan_cache_mode", "force_generic_plan", True),
        ).select_from(func.unnest(bindparam("ids", type_=ARRAY(Integer()))).alias("x"))
    )


def _lock_segments(session: Session, segment_ids: list[int]) -> set[int]:
    """PostgreSQL: shared locks on the segments about to be evaluated, in one round trip; a build step
    takes the same lock exclusively (see :func:`lock_for_build`). Switches the transaction to generic
    plans (above)."""
    values = {"namespace": SEGMENT_LOCK, "ids": segment_ids}
    _lock_segments_statement().fetch_all(session.connection(), values)
    return set(segment_ids)


def _reachable(index: Definitions, segment_ids: Iterable[int]) -> list[int]:
    """The segments and, transitively, every segment using them."""
    found: set[int] = set()
    pending = list(segment_ids)
    while pending:
        segment_id = pending.pop()
        if segment_id not in found:
            found.add(segment_id)
            pending.extend(index.users.get(segment_id, ()))
    return sorted(found)


def lock_for_build(session: Session, workspace_id: int, segment_id: int) -> None:
    """PostgreSQL: a bulk-build step excludes real-time evaluations of the same segment, so neither writes
    a membership computed from data the other has changed since; and the deletion of any person of the
    workspace (:func:`lock_for_deletion`).

    Memberships and timers have no foreign key to people: its check locked every person row a build
    wrote (about a sixth of a large build's time). Instead, a step that matched a person holds off that
    person's deletion until it commits, and then the deletion sees and removes what it wrote; a deletion
    already under way commits before the step matches anyone. Real-time writes need no such lock: they
    lock the people they evaluate (:func:`_lock_people`), as a deletion does the person it deletes.

    The step takes its segment's lock first, as real-time evaluations do, then the deletions' lock. A
    deletion in flight may in turn wait for this segment's lock (when its transaction evaluates the
    segment after deleting someone), so the step waits for deletions only briefly; past that it lets go
    of both locks (they were taken in a savepoint) and tries again."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for attempt in range(BUILD_LOCK_ATTEMPTS):
        try:
            with session.begin_nested():
                session.execute(select(func.pg_advisory_xact_lock(SEGMENT_LOCK, segment_id)))
                session.execute(text(f"SET LOCAL lock_timeout = '{DELETION_WAIT}'"))
                session.execute(select(func.pg_advisory_xact_lock(DELETION_LOCK, workspace_id)))
                session.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
            return
        except OperationalError as exc:
            if _sqlstate(exc) != LOCK_NOT_AVAILABLE or attempt == BUILD_LOCK_ATTEMPTS - 1:
                raise
        time.sleep(min(0.2, 0.01 * (attempt + 1)))


def lock_for_deletion(session: Session, workspace_id: int, person_id: int) -> None:
    """PostgreSQL, before deleting a person's memberships and timers: wait for the build step in flight,
    if any (see :func:`lock_for_build`; deletions do not wait for each other), then lock the person, so
    that a real-time evaluation of them in flight commits first and the deletes see what it wrote."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock_shared(DELETION_LOCK, workspace_id)))
        session.execute(select(Person.id).where(Person.id == person_id).with_for_update())


def _sqlstate(exc: OperationalError) -> str | None:
    return cast(str | None, getattr(exc.orig, "sqlstate", None))


# Real-time statements, built once per batch of segment conditions and workspace and kept: building a
# condition's SQL costs far more than running it for a handful of people (measured ~1 ms a segment). They
# are live (see compiler.Context): the time is bound when they execute.
@dataclass(frozen=True)
class _PeopleStatement:
    statement: Select[Any]
    times: Callable[[int], dict[str, Any]]
    # Per segment of the batch, where its columns are in a row: match, was a member, stored timer and
    # next flip (the last two for time-dependent segments only).
    positions: tuple[tuple[int, int, int | None, int | None], ...]
    # PostgreSQL: the statement compiled once and run without SQLAlchemy (see tidings.db.prepared).
    prepared: Prepared | None

    def rows(self, session: Session, ids: list[int], *, now: int) -> Sequence[Sequence[Any]]:
        values = {"ids": ids, **self.times(now)}
        if self.prepared is not None:
            return self.prepared.fetch_all(session.connection(), values)
        return session.execute(self.statement, values).all()


_StatementKey = tuple[tuple[tuple[Condition, int], ...], int, bool]
_STATEMENTS: OrderedDict[_StatementKey, _PeopleStatement] = OrderedDict()
_STATEMENTS_MAX = 1024
_statements_lock = threading.Lock()
# Segments judged per statement: each adds two or three columns (PostgreSQL allows 1,664).
BATCH = 100


_Columns = tuple[
    ColumnElement[Any],
    ColumnElement[Any],
    ColumnElement[Any] | None,
    ColumnElement[Any] | None,
    Callable[[int], dict[str, Any]],
]
_COLUMNS: OrderedDict[tuple[Condition, int, int], _Columns] = OrderedDict()


def _segment_columns(workspace_id: int, definition: Definition) -> _Columns:
    """One segment's expressions for ``_people_statement`` (match, was a member, stored timer, next flip)
    and their time parameters, kept per segment: a statement for a set of segments not seen before then
    costs its compilation only (about 1.3 ms a segment), not also rebuilding each condition's SQL and
    walking it for time parameters (as much again)."""
    key = (definition.condition, definition.id, workspace_id)
    with _statements_lock:
        cached = _COLUMNS.get(key)
        if cached is not None:
            _COLUMNS.move_to_end(key)
            return cached
    ctx = compiler.Context(workspace_id=workspace_id, now=0, live=True)
    was = (
        select(literal(1))
        .where(SegmentMembership.segment_id == definition.id, SegmentMembership.person_id == Person.id)
        .exists()
    )
    timer: ColumnElement[Any] | None = None
    due: ColumnElement[Any] | None = None
    if definition.deps.timed:
        timer = (
            select(SegmentTimer.due_at)
            .where(SegmentTimer.segment_id == definition.id, SegmentTimer.person_id == Person.id)
            .scalar_subquery()
        )
        due = compiler.next_change(definition.condition, ctx)
    match = compiler.predicate(definition.condition, ctx)
    times = [compiler.time_parameters(e) for e in (match, due) if e is not None]
    built = (match, was, timer, due, lambda now: {k: v for f in times for k, v in f(now).items()})
    with _statements_lock:
        _COLUMNS[key] = built
        while len(_COLUMNS) > _STATEMENTS_MAX:
            _COLUMNS.popitem(last=False)
    return built


def _people_statement(workspace_id: int, batch: tuple[Definition, ...], postgres: bool) -> _PeopleStatement:
    """Per person of ``:ids`` and segment ``i`` of ``batch``: does its condition hold, were they a member,
    and, for time-dependent segments, their stored timer and when the result can next flip, so only
    timers that move are written. One statement for many segments: on PostgreSQL each statement is a
    round trip, and a change often affects dozens of segments."""
    # The conditions themselves are part of the key (they are hashable): one process may serve several
    # databases (tests, tools) where the same segment id means different conditions.
    key = (tuple((d.condition, d.id) for d in batch), workspace_id, postgres)
    with _statements_lock:
        cached = _STATEMENTS.get(key)
        if cached is not None:
            _STATEMENTS.move_to_end(key)
            return cached
    columns: list[Any] = [Person.id]
    times: list[Callable[[int], dict[str, Any]]] = []
    positions: list[tuple[int, int, int | None, int | None]] = []
    for definition in batch:
        match, was, timer, due, time_values = _segment_columns(workspace_id, definition)
        times.append(time_values)
        at = len(columns)
        columns += [match, was]
        timer_at = due_at = None
        if timer is not None:
            timer_at = len(columns)
            columns.append(timer)
        if due is not None:
            due_at = len(columns)
            columns.append(due)
        positions.append((at, at + 1, timer_at, due_at))
    # PostgreSQL takes the people as one array parameter: an expanding IN would make SQLAlchemy render
    # the statement's text again at every execution (tens of kilobytes for a batch of segments).
    people = (
        Person.id == func.any(bindparam("ids", type_=ARRAY(BigInteger())))
        if postgres
        else Person.id.in_(bindparam("ids", expanding=True))
    )
    statement = select(*columns).where(_workspace(workspace_id), people)
    built = _PeopleStatement(
        statement,
        lambda now: {k: v for f in times for k, v in f(now).items()},
        tuple(positions),
        prepare(statement) if postgres else None,
    )
    with _statements_lock:
        _STATEMENTS[key] = built
        while len(_STATEMENTS) > _STATEMENTS_MAX:
            _STATEMENTS.popitem(last=False)
    return built


def _workspace(workspace_id: int) -> ColumnElement[bool]:
    # "+ 0": not an index key, so SQLite (which has no statistics) finds the people by key, not by
    # walking the whole workspace through the (workspace_id, …) indexes.
    return Person.workspace_id + 0 == workspace_id


def evaluate(
    session: Session,
    workspace_id: int,
    work: list[tuple[Definition, set[int]]],
    *,
    now: int,
    sink: Moves,
) -> dict[int, set[int]]:
    """Bring each segment's membership up to date for its people; return, per segment, those who entered
    or left. The segments must not use one another (one dependency level). One statement per batch of
    segments and chunk of people reads everything needed (match, membership, next flip); the moves'
    activities and signals are left in ``sink`` for the caller to write in one go."""
    postgres = session.get_bind().dialect.name == "postgresql"
    changed: dict[int, set[int]] = {definition.id: set() for definition, _ in work}
    for start in range(0, len(work), BATCH):
        batch = work[start : start + BATCH]
        definitions = tuple(definition for definition, _ in batch)
        statement = _people_statement(workspace_id, definitions, postgres)
        people = sorted(set().union(*(person_ids for _, person_ids in batch)))
        for chunk in _chunks(people, CHUNK):
            rows = statement.rows(session, chunk, now=now)
            entered: list[tuple[int, int]] = []
            exited: list[tuple[int, int]] = []
            timers: list[tuple[int, int]] = []  # (segment, person) whose stored timer is outdated
            due: list[tuple[int, int, int]] = []
            for (definition, person_ids), (m, w, t, d) in zip(batch, statement.positions, strict=True):
                came: list[int] = []
                left: list[int] = []
                for row in rows:
                    person_id = row[0]
                    if person_id not in person_ids:
                        continue
                    if row[m] and not row[w]:
                        came.append(person_id)
                    elif row[w] and not row[m]:
                        left.append(person_id)
                    if t is not None:
                        stored, at = row[t], None if d is None else row[d]
                        at = None if at is None else int(at)
                        if stored != at:
                            if stored is not None:
                                timers.append((definition.id, person_id))
                            if at is not None:
                                due.append((definition.id, person_id, at))
                came.sort()
                left.sort()
                entered += [(definition.id, p) for p in came]
                exited += [(definition.id, p) for p in left]
                sink.extend(
                    [(definition.id, p, True) for p in came] + [(definition.id, p, False) for p in left]
                )
                changed[definition.id].update(came, left)
            _move(session, workspace_id, entered, exited, now=now)
            for outdated in _chunks(timers, CHUNK):
                session.execute(
                    delete(SegmentTimer).where(
                        _pairs(SegmentTimer.segment_id, SegmentTimer.person_id, outdated)
                    )
                )
            _insert(
                session,
                SegmentTimer,
                [
                    {"segment_id": s, "person_id": p, "workspace_id": workspace_id, "due_at": at}
                    for s, p, at in due
                ],
            )
    return changed


def _insert(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    insert_rows(session, cast(Table, model.__table__), rows)


def _move(
    session: Session,
    workspace_id: int,
    entered: list[tuple[int, int]],
    exited: list[tuple[int, int]],
    *,
    now: int,
) -> None:
    """Write (segment, person) entries and exits to the memberships."""
    _insert(
        session,
        SegmentMembership,
        [
            {"segment_id": s, "person_id": p, "workspace_id": workspace_id, "added_at": now}
            for s, p in entered
        ],
    )
    for chunk in _chunks(exited, CHUNK):
        session.execute(
            delete(SegmentMembership).where(
                _pairs(SegmentMembership.segment_id, SegmentMembership.person_id, chunk)
            )
        )


def _pairs(
    segment: SQLColumnExpression[int], person: SQLColumnExpression[int], pairs: list[tuple[int, int]]
) -> ColumnElement[bool]:
    """(segment, person) is one of ``pairs``, as one ``segment = s AND person IN (…)`` per segment: SQLite
    answers a row-value ``(segment, person) IN (…)`` by scanning the whole table (35 ms at B4's size, on
    every request where someone left a segment), each of these terms with one index search."""
    by_segment: dict[int, list[int]] = defaultdict(list)
    for segment_id, person_id in pairs:
        by_segment[segment_id].append(person_id)
    return or_(*(and_(segment == s, person.in_(people)) for s, people in sorted(by_segment.items())))


@dataclass(frozen=True)
class _RangePlan:
    """A build's statements for one segment, over any key range ``range_low``..``range_high`` and any
    instant (live time parameters): built once per build, not once per step."""

    # (id, next change or NULL) of the matching people in the range.
    match: Select[Any]
    # When the condition needs at least n events of one name (compiler.driving_count): the same match
    # fetching by key only the range's people with n such events, judging the rest of the condition for
    # them alone; and the statement counting those people. PostgreSQL only.
    driven: Select[Any] | None
    drivers: Select[Any] | None
    # Without ``with_match``: the timers of everyone in the range, computed and written by the database.
    timers: Insert | None
    # Only members can be turned by time: their next change comes with the match itself and nobody
    # else's is computed (it would cost as much as the match, for no timer).
    with_match: bool
    times: Callable[[int], dict[str, Any]]


# The bind parameters holding a build step's range of people keys.
_RANGE = ("range_low", "range_high")


@functools.lru_cache(maxsize=64)
def _range_plan(condition: Condition, workspace_id: int, segment_id: int, timed: bool) -> _RangePlan:
    ctx = compiler.Context(workspace_id=workspace_id, now=0, live=True, people_range=_RANGE)
    range_low, range_high = (bindparam(name, type_=BigInteger()) for name in _RANGE)
    in_range = Person.id.between(range_low, range_high)
    due = compiler.next_change(condition, ctx) if timed else None
    with_match = due is not None and compiler.members_only(condition)
    next_due: ColumnElement[Any] = due if due is not None and with_match else null()
    match = select(Person.id, next_due).where(
        _workspace(workspace_id), in_range, compiler.predicate(condition, ctx)
    )
    driven = drivers = None
    counted = compiler.driving_count(condition, ctx)
    if counted is not None:
        # The rest of the condition probes person by person (a plain context), for these people only.
        probing = replace(ctx, people_range=None)
        keys = Person.id == any_(func.array(counted.scalar_subquery()))
        driven = select(Person.id, next_due).where(
            _workspace(workspace_id), in_range, keys, compiler.predicate(condition, probing)
        )
        drivers = select(func.count()).select_from(counted.subquery())
    timers = None
    if due is not None and not with_match:
        per_person = (
            select(Person.id.label("person_id"), due.label("due_at"))
            .where(_workspace(workspace_id), in_range)
            .subquery()
        )
        # The table, not the entity: an ORM INSERT given parameters at execution would take them for rows.
        timers = insert(cast(Table, SegmentTimer.__table__)).from_select(
            ["segment_id", "person_id", "workspace_id", "due_at"],
            select(
                literal(segment_id), per_person.c.person_id, literal(workspace_id), per_person.c.due_at
            ).where(per_person.c.due_at.is_not(None)),
        )
    parts = [
        compiler.time_parameters(statement)
        for statement in (match, driven, drivers, timers)
        if statement is not None
    ]

    def times(now: int) -> dict[str, Any]:
        return {name: value for part in parts for name, value in part(now).items()}

    return _RangePlan(match, driven, drivers, timers, with_match, times)


# A build step's range is matched in parts (settings.segment_build_part keys at most). This transaction
# matches parts and writes each part's memberships as soon as it has its match, while another connection
# matches further parts (a statement runs on one core): both cores work through the whole step, the writes
# included. The helper's thread starts at the first build step.
_HELPER = ThreadPoolExecutor(1, thread_name_prefix="tidings-build")
# A part's bounds and the (person, next change) rows it matched.
_Matched = tuple[int, int, list[Any]]


def _one_process(connection: Connection) -> None:
    """PostgreSQL: no parallel workers for the rest of the transaction. The parts already keep the cores
    busy, and a parallel plan of a large range ran its per-person count in every worker (each repeating
    the whole range's scan): three times the work for the same answer."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))


def _split(low: int, high: int, part_keys: int) -> list[tuple[int, int]]:
    count = max(2, -(-(high - low + 1) // max(1, part_keys))) if high > low else 1
    size = -(-(high - low + 1) // count)
    return [(start, min(high, start + size - 1)) for start in range(low, high + 1, size)]


def _matched_parts(
    session: Session, match: Select[Any], times: dict[str, Any], low: int, high: int, part_keys: int
) -> Generator[list[_Matched], None, None]:
    """The parts of [low, high] with their matches, as soon as they are known: in batches of the parts
    matched by the time the previous batch is written, so the writes take fewer, larger statements. This
    transaction
    matches parts from the start of the range, the helper from its end, outside it. They read what this
    transaction would. On PostgreSQL the step holds the segment's lock already, so every real-time
    evaluation of it either committed before (each part, starting after, sees it) or waits for this
    step's commit, as for a statement of this transaction (READ COMMITTED). On SQLite this transaction
    holds the write lock, and what it writes between parts (this segment's memberships and timers) is
    nothing the match reads: a reader sees the last commit, as the transaction does."""

    def matched(connection: Connection | Session, bound: tuple[int, int]) -> _Matched:
        values = {**times, "range_low": bound[0], "range_high": bound[1]}
        return (*bound, list(connection.execute(match, values).all()))

    _one_process(session.connection())
    parts = _split(low, high, part_keys)
    if len(parts) == 1 or session.new or session.dirty or session.deleted:
        # Pending ORM changes would be flushed into this transaction, unseen by another connection.
        for bound in parts:
            yield [matched(session, bound)]
        return
    engine = read_engine_of(session)

    def elsewhere(bound: tuple[int, int]) -> _Matched:
        with engine.connect() as connection:
            _one_process(connection)
            return matched(connection, bound)

    # The helper takes them from the end of the range; the first is this transaction's.
    queued = {bound: _HELPER.submit(elsewhere, bound) for bound in reversed(parts[1:])}
    try:
        batch = [matched(session, parts[0])]
        while batch or queued:
            ready = [bound for bound, future in queued.items() if future.done()]
            batch.extend(queued.pop(bound).result() for bound in ready)
            if batch:
                yield batch
                batch = []
                continue
            # None ready: take over the part nearest the start that no helper has begun, or else wait.
            stolen = next((bound for bound in sorted(queued) if queued[bound].cancel()), None)
            if stolen is not None:
                del queued[stolen]
                batch = [matched(session, stolen)]
            else:
                wait(queued.values(), return_when=FIRST_COMPLETED)
    finally:
        for future in queued.values():
            future.cancel()
        wait(queued.values())


def evaluate_range(
    session: Session,
    workspace_id: int,
    definition: Definition,
    low: int,
    high: int,
    *,
    now: int,
    emit: bool,
    part_keys: int,
    drive: bool = False,
) -> set[int]:
    """Bulk build: bring the membership of the people whose key lies in [low, high] up to date; with
    ``drive`` (see :func:`drives`), fetching only the people with the condition's counted events."""
    plan = _range_plan(definition.condition, workspace_id, definition.id, definition.deps.timed)
    times = plan.times(now)
    match = plan.driven if drive and plan.driven is not None else plan.match
    # The step holds the segment's lock (the database's write lock on SQLite): nobody else changes this
    # segment's memberships or timers in the range until it commits, so they are read, and the timers
    # dropped, once for the whole range; each batch of parts then writes its own.
    before = sorted(
        session.execute(
            select(SegmentMembership.person_id).where(
                SegmentMembership.segment_id == definition.id,
                SegmentMembership.person_id.between(low, high),
            )
        ).scalars()
    )
    if definition.deps.timed:
        session.execute(
            delete(SegmentTimer).where(
                SegmentTimer.segment_id == definition.id, SegmentTimer.person_id.between(low, high)
            )
        )
    changed: set[int] = set()
    with closing(_matched_parts(session, match, times, low, high, part_keys)) as batches:
        for batch in batches:
            changed |= _apply_range(
                session, workspace_id, definition, plan, times, batch, before, now=now, emit=emit
            )
    return changed


# A build fetches its people by key from the counted events (plan.driven) when at most this share of the
# first part's keys has them. Fetching a person by key costs about five times reading them along the range
# (B3's data on PostgreSQL, a 25,000-key part: 3 % of keys with three purchases, 17 → 12 ms a part; 86 %
# with one, 46 → 60 ms), and the events are counted once either way.
DRIVE_SHARE = 0.1


def drives(
    session: Session,
    workspace_id: int,
    definition: Definition,
    low: int,
    high: int,
    *,
    now: int,
    part_keys: int,
) -> bool:
    """Whether a build of the range [low, high] should fetch only the people with the condition's counted
    events: PostgreSQL, a condition with such a count, and few enough of them in the range's first part.
    Only the speed depends on the answer, never the membership."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    plan = _range_plan(definition.condition, workspace_id, definition.id, definition.deps.timed)
    if plan.drivers is None:
        return False
    first_low, first_high = _split(low, high, part_keys)[0]
    values = {**plan.times(now), "range_low": first_low, "range_high": first_high}
    found = session.execute(plan.drivers, values).scalar_one()
    return bool(found <= DRIVE_SHARE * (first_high - first_low + 1))


def _apply_range(
    session: Session,
    workspace_id: int,
    definition: Definition,
    plan: _RangePlan,
    times: dict[str, Any],
    batch: list[_Matched],
    before: list[int],
    *,
    now: int,
    emit: bool,
) -> set[int]:
    """Write what the matches of a batch of parts found: memberships, their moves and the timers.
    ``before``: the members of the whole step's range when it began, in key order (its timers are
    already dropped)."""
    matching = {person_id for _, _, found in batch for person_id, _ in found}
    was = {
        person_id
        for low, high, _ in batch
        for person_id in before[bisect_left(before, low) : bisect_right(before, high)]
    }
    changed = _apply(session, workspace_id, definition, matching, was, now=now, emit=emit)
    if definition.deps.timed:
        if plan.with_match:
            _insert(
                session,
                SegmentTimer,
                [
                    {"segment_id": definition.id, "person_id": p, "workspace_id": workspace_id, "due_at": at}
                    for _, _, found in batch
                    for p, at in found
                    if at is not None
                ],
            )
        elif plan.timers is not None:
            for low, high, _ in batch:
                session.execute(plan.timers, {**times, "range_low": low, "range_high": high})
    return changed


def _apply(
    session: Session,
    workspace_id: int,
    definition: Definition,
    matching: set[int],
    before: set[int],
    *,
    now: int,
    emit: bool,
) -> set[int]:
    came, left = sorted(matching - before), sorted(before - matching)
    _move(
        session, workspace_id, [(definition.id, p) for p in came], [(definition.id, p) for p in left], now=now
    )
    if emit:
        moves = [(definition.id, p, True) for p in came] + [(definition.id, p, False) for p in left]
        _write_moves(session, workspace_id, moves, now=now)
    return set(came) | set(left)


# (segment, person, entered) awaiting their activities and signals.
Moves = list[tuple[int, int, bool]]


def _write_moves(session: Session, workspace_id: int, moves: Moves, *, now: int) -> None:
    """The moves' signals, and their activities in one statement."""
    if not moves:
        return
    for segment_id, person_id, entered in moves:
        signals.note(session, signals.SegmentMoved(workspace_id, segment_id, person_id, entered), now=now)
    activity.record_many(
        session,
        workspace_id,
        [(p, "entered_segment" if e else "exited_segment", now, {"segment_id": s}) for s, p, e in moves],
    )


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


signals.before_reactions(flush_pending)

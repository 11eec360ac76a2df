"""The boundary that owns transactions.

Request handlers, jobs and the CLI never commit themselves: they hand a unit of work (a function of a
``Session``) to :meth:`Database.write` or :meth:`Database.read`. Services inside only flush.

Writes go through group commit: concurrent requests' units share one transaction. A batch first runs
without savepoints; if any unit fails, it is re-run with one SAVEPOINT per unit so the failure rolls back
only that unit. The awaiting request is answered only after the shared COMMIT returns, so a 200 still means
"durable" while the fsync cost is paid once per batch instead of once per request. Work that must happen
in the same transaction as every change (real-time segment evaluation) hooks SQLAlchemy's
``before_commit``, which also fires as each savepoint is released.

A unit may also say that it can be applied together with others of its kind (:class:`Groupable`): in a
batch's first run, units with the same ``group_key`` are applied by one call, in fewer statements than
one at a time. Units of a batch are concurrent requests, so no order between them is promised, and
gathering them changes nothing a client can rely on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tidings import signals
from tidings.db.engine import create_store_engine
from tidings.errors import TidingsError

T = TypeVar("T")
log = logging.getLogger(__name__)

# Errors worth re-running a unit alone for: a race with another process (unique key) or a lock timeout.
_RETRYABLE = (IntegrityError, OperationalError)


class Groupable(Protocol):
    """A unit of work that knows how to be applied with others of its kind."""

    @property
    def group_key(self) -> Hashable:
        """Units with equal keys can be applied together by :meth:`apply_group`."""
        ...

    @staticmethod
    def apply_group(session: Session, units: Sequence[Any]) -> Sequence[object]:
        """Apply ``units`` (all of this key) as one; return each one's result, in order."""
        ...

    def __call__(self, session: Session) -> object: ...


def apply_units(session: Session, fns: Sequence[Callable[[Session], Any]]) -> list[Any]:
    """Apply units in order, except that the units of each group key are applied together, at the place
    of the group's first unit."""
    groups: dict[Hashable, list[int]] = {}
    # Which units are Groupable, by their class (an isinstance check against a runtime-checkable
    # Protocol inspects every member each time: several µs a unit, on every ingestion request).
    groupable = [fn if hasattr(type(fn), "apply_group") else None for fn in fns]
    for place, unit in enumerate(groupable):
        if unit is not None:
            groups.setdefault(cast(Groupable, unit).group_key, []).append(place)
    results: list[Any] = [None] * len(fns)
    applied: set[int] = set()
    for place, fn in enumerate(fns):
        if place in applied:
            continue
        unit = cast(Groupable | None, groupable[place])
        if unit is not None:
            # A group of one too: the set paths cost fewer statements than a unit's general path.
            members = groups[unit.group_key]
            together = unit.apply_group(session, [fns[member] for member in members])
            for member, result in zip(members, together, strict=True):
                results[member] = result
            applied.update(members)
        else:
            results[place] = fn(session)
        session.flush()
    return results


@dataclass
class _Unit:
    fn: Callable[[Session], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None
    done: bool = field(default=False)


# Set for a request that asked for a dry run: its writes are rehearsed and rolled back.
DRY_RUN: ContextVar[bool] = ContextVar("tidings_dry_run", default=False)


_READ_ENGINE = "tidings.read_engine"


def read_engine_of(session: Session) -> Engine:
    """An engine whose connections read what ``session``'s transaction reads, but without its own
    writes: on SQLite the reading one (the writing engine's single connection is the session's), on
    PostgreSQL the session's own."""
    engine: Engine | None = session.info.get(_READ_ENGINE)
    return engine if engine is not None else session.get_bind().engine


class Database:
    def __init__(self, url: str, *, writers: int | None = None, batch_size: int = 256) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.write_engine: Engine = create_store_engine(url, writer=True)
        self.read_engine: Engine = (
            create_store_engine(url, writer=False) if self.is_sqlite else self.write_engine
        )
        self._write_sessions = sessionmaker(
            self.write_engine, expire_on_commit=False, info={_READ_ENGINE: self.read_engine}
        )
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        # One writer thread by default on both stores: the writer is CPU-bound Python, so more threads
        # only contend for the GIL (measured: PostgreSQL B1 fell from ~500 to ~320 req/s with four).
        # Scale out with more processes instead.
        self._writer_count = writers or 1
        self._batch_size = batch_size
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    # -- synchronous use (CLI, worker, migrations) -------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write session committed on success, rolled back on error."""
        with self._write_sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        with self._read_sessions() as session, session.begin():
            yield session

    def run(self, fn: Callable[[Session], T]) -> T:
        with self.session() as session:
            return fn(session)

    # -- asynchronous use (HTTP) ---------------------------------------------------------------------

    async def read(self, fn: Callable[[Session], T]) -> T:
        def work() -> T:
            with self.read_session() as session:
                return fn(session)

        return await anyio.to_thread.run_sync(work)

    async def write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a transaction shared with other concurrent writes; return once committed.

        In a dry run (:data:`DRY_RUN` set for the request) ``fn`` runs in a transaction of its own that is
        rolled back: the caller sees exactly what the write would return, and nothing changes."""
        if DRY_RUN.get():
            return await anyio.to_thread.run_sync(self._rehearse, fn)
        if not self._threads:
            self.start()
        loop = asyncio.get_running_loop()
        unit = _Unit(fn=fn, loop=loop, future=loop.create_future())
        self._queue.put(unit)
        result: T = await unit.future
        return result

    def _rehearse(self, fn: Callable[[Session], T]) -> T:
        with self._write_sessions() as session:
            session.begin()
            try:
                result = fn(session)
                session.flush()
                return result
            finally:
                # Nothing is committed, so no commit hook runs either (no wake-ups, no signals).
                session.rollback()

    def start(self) -> None:
        for index in range(self._writer_count):
            thread = threading.Thread(target=self._writer_loop, name=f"tidings-writer-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

    # -- the writer ----------------------------------------------------------------------------------

    def _writer_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._batch_size:
                try:
                    unit = self._queue.get_nowait()
                except queue.Empty:
                    break
                if unit is None:
                    self._queue.put(None)
                    break
                batch.append(unit)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Unit]) -> None:
        try:
            if not self._run_optimistic(batch):
                if len(batch) == 1:
                    self._run_alone(batch[0])
                else:
                    self._run_isolated(batch)
        except Exception as exc:
            # Never let the writer thread die: every waiting request would hang.
            log.exception("write batch failed")
            for unit in batch:
                if not unit.done and unit.error is None:
                    unit.error = exc
        self._resolve(batch)

    def _run_optimistic(self, batch: list[_Unit]) -> bool:
        """Run the whole batch in one transaction without savepoints: nearly every batch succeeds, and
        a SAVEPOINT per unit costs about as much as the unit's own statements. On any failure nothing
        of it is kept and the caller re-runs the batch with per-unit isolation."""
        try:
            with self._write_sessions() as session, session.begin():
                results = apply_units(session, [unit.fn for unit in batch])
        except Exception:
            return False
        for unit, result in zip(batch, results, strict=True):
            unit.result, unit.error, unit.done = result, None, True
        return True

    def _run_isolated(self, batch: list[_Unit]) -> None:
        retry: list[_Unit] = []
        try:
            with self._write_sessions() as session, session.begin():
                for unit in batch:
                    # A unit rolled back to its savepoint must not leave its trigger notes behind.
                    noted = signals.mark(session)
                    try:
                        with session.begin_nested():
                            unit.result = unit.fn(session)
                        unit.done = True
                        continue
                    except TidingsError as exc:
                        unit.error = exc
                    except _RETRYABLE:
                        retry.append(unit)
                    except Exception as exc:
                        log.exception("write unit failed")
                        unit.error = exc
                    signals.rewind(session, noted)
        except Exception:
            # The COMMIT itself failed (deadlock, serialization, disk, or work run just before it): nothing
            # of the batch is durable.
            log.warning("group commit failed; re-running %d units one by one", len(batch), exc_info=True)
            retry = list(batch)
            for unit in batch:
                unit.done, unit.error = False, None
        for unit in retry:
            self._run_alone(unit)

    def _run_alone(self, unit: _Unit, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                with self._write_sessions() as session, session.begin():
                    unit.result = unit.fn(session)
                unit.done, unit.error = True, None
                return
            except TidingsError as exc:
                unit.error = exc
                return
            except _RETRYABLE as exc:
                unit.error = exc
                log.info("write unit retry %d after %s", attempt + 1, type(exc).__name__)
            except Exception as exc:
                log.exception("write unit failed")
                unit.error = exc
                return

    @staticmethod
    def _resolve(batch: list[_Unit]) -> None:
        """Answer every waiting request; one wake-up per event loop rather than one per unit."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Unit]] = {}
        for unit in batch:
            by_loop.setdefault(unit.loop, []).append(unit)

        def settle(units: list[_Unit]) -> None:
            for unit in units:
                if unit.future.done():
                    continue
                if unit.error is not None:
                    unit.future.set_exception(unit.error)
                else:
                    unit.future.set_result(unit.result)

        for loop, units in by_loop.items():
            loop.call_soon_threadsafe(settle, units)

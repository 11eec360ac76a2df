"""The journey engine: claims due journeys and moves each on, block by block, until it waits or ends.

One transaction per batch: the claim (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers
share the table; SQLite has one writer at a time), every block's effects (deliveries, person updates,
events, journey attributes), the journey's new position and its log. A worker killed at any instant
therefore loses nothing and repeats nothing: either the whole step committed or none of it did, and an
uncommitted claim holds no lock once the connection is gone. Each journey runs in a savepoint, so one that
breaks is marked failed without holding up the batch.

Blocks that call the outside world (the webhook action) are the exception: the step that asks for the
call commits the journey as ``calling`` under a lease; the call is made outside the transaction; a second
transaction stores the answer and goes on, if the lease is still this worker's. A worker that dies between
the two leaves the lease to run out, and the next worker makes the call again (at least once, with the
same idempotency key).
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from sqlalchemy import URL, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from tidings.campaigns.definition import Definition, parse
from tidings.db.bulk import insert_rows
from tidings.deliveries import lifecycle
from tidings.journeys import calls
from tidings.journeys.blocks import RUNNERS, ActionInfo, CampaignInfo, Outcome, Step
from tidings.messaging.liquid import RenderFailed
from tidings.models import (
    Campaign,
    CampaignAction,
    CampaignEntry,
    CampaignVersion,
    Delivery,
    Journey,
    JourneyStep,
    Person,
    SegmentMembership,
    Workspace,
)
from tidings.runtime import Runtime
from tidings.segments.search import holds
from tidings.workspaces.limits import WorkspaceSettings
from tidings.workspaces.schemas import WorkspaceContext

log = logging.getLogger(__name__)
_STEPS = cast(Table, JourneyStep.__table__)
# Blocks one journey may run in one claim; a workflow looping through instant blocks yields after this.
MAX_BLOCKS_PER_RUN = 100

_definitions: dict[tuple[URL, int, int], Definition] = {}
_definitions_lock = threading.Lock()


def definition_of(session: Session, campaign_id: int, version: int) -> Definition:
    """A campaign version's compiled definition; versions never change, so they are cached for good."""
    key = (session.get_bind().engine.url, campaign_id, version)
    found = _definitions.get(key)
    if found is None:
        row = session.get(CampaignVersion, (campaign_id, version))
        if row is None:
            raise LookupError(f"campaign {campaign_id} has no version {version}")
        found = parse(row.definition)
        with _definitions_lock:
            if len(_definitions) > 2048:
                _definitions.clear()
            _definitions[key] = found
    return found


@dataclass
class PendingCall:
    journey_id: int
    call: calls.Call


@dataclass
class _Batch:
    """What the journeys of one batch share: campaigns, their actions, people, workspaces."""

    session: Session
    campaigns: dict[int, Campaign] = field(default_factory=dict)
    infos: dict[int, CampaignInfo] = field(default_factory=dict)
    people: dict[int, Person] = field(default_factory=dict)
    workspaces: dict[int, WorkspaceContext] = field(default_factory=dict)
    # Held so that finishing a journey finds its entry row in the identity map (which holds clean
    # objects weakly) instead of reading it once per journey.
    entries: list[CampaignEntry] = field(default_factory=list)
    # The journey log of the batch, written in one statement.
    logs: list[dict[str, Any]] = field(default_factory=list)

    def write_log(self) -> None:
        # Straight to the driver: through the ORM's bulk insert, writing the log was a third of the
        # engine's time in a broadcast (B6).
        insert_rows(self.session, _STEPS, self.logs)
        self.logs.clear()

    def load(self, journeys: list[Journey]) -> None:
        session = self.session
        campaign_ids = {j.campaign_id for j in journeys}
        person_ids = {j.person_id for j in journeys if j.person_id is not None}
        for campaign in session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids))):
            self.campaigns[campaign.id] = campaign
        actions: dict[int, dict[str, ActionInfo]] = {cid: {} for cid in campaign_ids}
        for action in session.scalars(
            select(CampaignAction).where(CampaignAction.campaign_id.in_(campaign_ids))
        ):
            actions[action.campaign_id][action.block] = ActionInfo(
                action.id, action.template_id, dict(action.state or {})
            )
        for cid, campaign in self.campaigns.items():
            self.infos[cid] = CampaignInfo(campaign.id, campaign.kind, campaign.name, actions[cid])
        for person in session.scalars(select(Person).where(Person.id.in_(person_ids))):
            self.people[person.id] = person
        self.entries = list(
            session.scalars(
                select(CampaignEntry).where(
                    CampaignEntry.campaign_id.in_(campaign_ids), CampaignEntry.person_id.in_(person_ids)
                )
            )
        )
        for workspace in session.scalars(
            select(Workspace).where(Workspace.id.in_({j.workspace_id for j in journeys}))
        ):
            self.workspaces[workspace.id] = WorkspaceContext(
                workspace.id,
                workspace.site_id,
                workspace.name,
                WorkspaceSettings.from_stored(workspace.settings),
                0,
                account_id=workspace.account_id,
            )


class Engine:
    def __init__(self, runtime: Runtime, worker_id: str) -> None:
        self.runtime = runtime
        self.worker_id = worker_id
        settings = runtime.settings
        calls.ALLOW_PRIVATE["value"] = settings.outbound_allow_private
        self.batch_size = settings.journey_batch_size
        self.lease_seconds = settings.worker_lease_seconds
        self._pool = ThreadPoolExecutor(settings.send_concurrency, thread_name_prefix="tidings-call")
        # Answers of async calls are stored by one thread, off the event loop (storing is database work),
        # many to a transaction: a thousand answers arriving together cost a few commits, not a thousand.
        self._answers: queue.SimpleQueue[tuple[int, dict[str, Any]] | None] = queue.SimpleQueue()
        self._storer = threading.Thread(target=self._store_answers, name="tidings-answers", daemon=True)
        self._storer.start()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._answers.put(None)
        self._storer.join(timeout=30)

    def _dispatch(self, pending: list[PendingCall]) -> None:
        for item in pending:
            call = item.call
            if inspect.iscoroutinefunction(call):
                future = calls.submit(call)
                future.add_done_callback(partial(self._answered, item.journey_id))
            else:
                self._pool.submit(self._call, item)

    def _answered(self, journey_id: int, future: Future[dict[str, Any]]) -> None:
        try:
            result = future.result()
        except Exception as exc:  # a bug in a call must not leave the journey calling for ever
            log.exception("journey %s call failed", journey_id)
            result = {"error": f"internal error: {exc!r}"}
        self._answers.put((journey_id, result))

    def _store_answers(self) -> None:
        while True:
            first = self._answers.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_size:
                try:
                    item = self._answers.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._answers.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                self.resume_many(batch)
            except Exception:
                log.exception("could not store %d call answers; their leases will run out", len(batch))

    # -- claiming ----------------------------------------------------------------------------------------

    def claim(self, session: Session, now: int) -> list[Journey]:
        query = (
            select(Journey)
            .join(Campaign, Campaign.id == Journey.campaign_id)
            .where(Journey.due_at <= now, Campaign.state == "active")
            .order_by(Journey.due_at)
            .limit(self.batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Journey)
        return list(session.scalars(query))

    def run_due(self) -> int:
        """One batch: claim due journeys, move each on, commit; then make the outside calls asked for."""
        db, clock = self.runtime.db, self.runtime.clock
        now = clock.now_int()
        pending: list[PendingCall] = []
        # No autoflush: journeys change in memory and are written together at commit (one executemany
        # per shape of change), and the step log goes in one statement, instead of a flush per query.
        with db.session() as session, session.no_autoflush:
            journeys = self.claim(session, now)
            if not journeys:
                return 0
            batch = _Batch(session)
            batch.load(journeys)
            try:
                # The whole batch under one savepoint: a SAVEPOINT per journey costs as much as its step.
                with session.begin_nested():
                    for journey in journeys:
                        pending.extend(self.advance(session, batch, journey, now))
                    batch.write_log()
            except Exception:
                # A journey broke: run the batch again one journey at a time, so only that one fails.
                log.warning("a journey of the batch failed; running it journey by journey", exc_info=True)
                pending = self._one_by_one(session, batch, journeys, now)
        self._dispatch(pending)
        return len(journeys)

    def _one_by_one(
        self, session: Session, batch: _Batch, journeys: list[Journey], now: int
    ) -> list[PendingCall]:
        pending: list[PendingCall] = []
        batch.logs.clear()
        for journey in journeys:
            try:
                with session.begin_nested():
                    calls_ = self.advance(session, batch, journey, now)
                    batch.write_log()
                pending.extend(calls_)
            except Exception as exc:
                log.exception("journey %s failed", journey.id)
                batch.logs.clear()
                with session.begin_nested():
                    self._finish(session, journey, "failed", f"internal error: {exc!r}", now)
        return pending

    # -- moving a journey on -----------------------------------------------------------------------------

    def advance(
        self, session: Session, batch: _Batch, journey: Journey, now: int, first: Outcome | None = None
    ) -> list[PendingCall]:
        campaign = batch.campaigns[journey.campaign_id]
        definition = definition_of(session, campaign.id, journey.version)
        person = batch.people.get(journey.person_id) if journey.person_id is not None else None
        if person is None:
            self._finish(session, journey, "exited", "the person no longer exists", now)
            return []
        ws = batch.workspaces[journey.workspace_id]
        if journey.state == "pending":
            reason = self._admit(session, journey, campaign, definition, person, now)
            if reason is not None:
                journey.state, journey.due_at, journey.finished_at = "rejected", None, now
                journey.exit_reason = reason
                return []
            journey.state, journey.entered_at = "active", now
            journey.block = definition.workflow.start
            self._log(batch, journey, "trigger", None, "trigger", "entered", now)
        elif first is None:
            reason = self._exit_reason(session, journey, campaign, definition, person, now)
            if reason is not None:
                self._log(batch, journey, journey.block or "", None, "exit", reason, now)
                self._finish(session, journey, "exited", reason, now)
                return []
        info = batch.infos[campaign.id]
        outcome = first
        for _ in range(MAX_BLOCKS_PER_RUN):
            if journey.block is None:
                self._finish(session, journey, "completed", None, now)
                return []
            block = definition.workflow.blocks.get(journey.block)
            if block is None:
                self._finish(
                    session,
                    journey,
                    "failed",
                    f"block {journey.block!r} is not in version {journey.version}",
                    now,
                )
                return []
            step = Step(session, ws, info, definition.workflow, journey, block, person, now)
            runner = RUNNERS[block.type]
            if outcome is None:
                try:
                    outcome = runner.run(step)
                except RenderFailed as exc:
                    outcome = Outcome(f"failed: {exc}", goto=block.next, failed=True)
            journey.steps += 1
            action = info.actions.get(block.id)
            if not (outcome.waiting and step.waiting):  # a re-check that keeps waiting is not news
                self._log(
                    batch,
                    journey,
                    block.id,
                    action.id if action else None,
                    block.type,
                    outcome.text,
                    now,
                    outcome,
                )
            if outcome.call is not None:
                journey.state, journey.wait = "calling", outcome.wait
                journey.leased_by, journey.leased_until = self.worker_id, now + self.lease_seconds
                journey.due_at = int(now + self.lease_seconds)
                return [PendingCall(journey.id, outcome.call)]
            if outcome.exit is not None:
                self._finish(session, journey, "exited", outcome.exit, now)
                return []
            if outcome.waiting:
                journey.state, journey.wait, journey.wake_on = "waiting", outcome.wait, outcome.wake_on
                journey.resume_at = journey.due_at = outcome.wait_until
                journey.woken_by = None
                return []
            journey.state, journey.block = "active", outcome.goto
            journey.wait = journey.wake_on = journey.woken_by = None
            journey.resume_at = None
            outcome = None
        journey.due_at = now  # a long run of instant blocks: go on in the next batch
        return []

    def _admit(
        self,
        session: Session,
        journey: Journey,
        campaign: Campaign,
        definition: Definition,
        person: Person,
        now: int,
    ) -> str | None:
        """The entry rules, under a lock on the person's entry row: re-entry, concurrency, filters. A
        broadcast has none (every trigger reaches its audience), so its journeys keep no entry rows."""
        if campaign.kind == "broadcast":
            if campaign.first_started is None:
                campaign.first_started = now
            return None
        key = (campaign.id, person.id)
        if session.get_bind().dialect.name == "postgresql":
            session.execute(
                pg_insert(CampaignEntry)
                .values(
                    campaign_id=campaign.id,
                    person_id=person.id,
                    workspace_id=journey.workspace_id,
                    entries=0,
                    running=0,
                )
                .on_conflict_do_nothing()
            )
            entry = session.scalars(
                select(CampaignEntry)
                .where(CampaignEntry.campaign_id == campaign.id, CampaignEntry.person_id == person.id)
                .with_for_update()
            ).one()
        else:
            found = session.get(CampaignEntry, key)
            if found is None:
                found = CampaignEntry(
                    campaign_id=campaign.id,
                    person_id=person.id,
                    workspace_id=journey.workspace_id,
                    entries=0,
                    running=0,
                )
                session.add(found)
                session.flush()  # a second journey of the person in this batch must find it
            entry = found
        refused = reentry_refusal(
            definition.reentry, entry.entries, entry.running, entry.last_entered_at, now
        )
        if refused is not None:
            return refused
        if definition.filters is not None and not holds(
            session, journey.workspace_id, definition.filters, [person.id], now=now
        ):
            return "did not match the campaign's filters"
        entry.entries += 1
        entry.running += 1
        entry.last_entered_at = now
        if campaign.first_started is None:
            campaign.first_started = now
        return None

    def _exit_reason(
        self,
        session: Session,
        journey: Journey,
        campaign: Campaign,
        definition: Definition,
        person: Person,
        now: int,
    ) -> str | None:
        current = (
            definition
            if journey.version == campaign.version
            else definition_of(session, campaign.id, campaign.version)
        )
        goal, exits = current.goal, current.exit
        sent_at = journey.last_sent_at
        if (
            goal is not None
            and "condition" in goal
            and journey.converted_at is None
            and sent_at is not None
            and now <= sent_at + goal["within"]
            and holds(session, journey.workspace_id, goal["condition"], [person.id], now=now)
        ):
            convert(session, journey, now)
        if exits["on_goal"] and journey.converted_at is not None:
            return "goal met"
        if exits["on_leave_segment"]:
            segment_id = current.trigger["segment_id"]
            member = session.get(SegmentMembership, (segment_id, person.id))
            if member is None:
                return f"left segment {segment_id}"
        return None

    def _finish(self, session: Session, journey: Journey, state: str, reason: str | None, now: int) -> None:
        was_running = journey.state in ("active", "waiting", "calling")
        journey.state, journey.finished_at, journey.exit_reason = state, now, reason
        journey.due_at = journey.resume_at = None
        journey.wait = journey.wake_on = journey.woken_by = None
        journey.leased_by = journey.leased_until = None
        # (The campaign is in the identity map: loaded with the batch.)
        campaign = session.get(Campaign, journey.campaign_id)
        if (
            was_running
            and journey.person_id is not None
            and campaign is not None
            and campaign.kind != "broadcast"
        ):
            entry = session.get(CampaignEntry, (journey.campaign_id, journey.person_id))
            if entry is not None and entry.running > 0:
                entry.running -= 1

    def _log(
        self,
        batch: _Batch,
        journey: Journey,
        block: str,
        action_id: int | None,
        kind: str,
        text: str,
        now: int,
        outcome: Outcome | None = None,
    ) -> None:
        batch.logs.append(
            {
                "workspace_id": journey.workspace_id,
                "campaign_id": journey.campaign_id,
                "journey_id": journey.id,
                "person_id": journey.person_id,
                "seq": journey.steps,
                "block": block,
                "action_id": action_id,
                "type": kind,
                "at": now,
                "outcome": text[:1000],
                "detail": outcome.detail if outcome else None,
                "delivery_id": outcome.delivery_id if outcome else None,
            }
        )

    # -- outside calls -----------------------------------------------------------------------------------

    def _call(self, item: PendingCall) -> None:
        try:
            result = item.call()
            assert isinstance(result, dict)
        except Exception as exc:  # a bug in a call must not leave the journey calling for ever
            log.exception("journey %s call failed", item.journey_id)
            result = {"error": f"internal error: {exc!r}"}
        self._answers.put((item.journey_id, result))

    def resume(self, journey_id: int, result: dict[str, Any]) -> None:
        """Store one call's answer and go on (see :meth:`resume_many`)."""
        self.resume_many([(journey_id, result)])

    def resume_many(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        """Store calls' answers and move their journeys on, in one transaction, for the journeys still
        this worker's (a lease that ran out means another worker took the call over)."""
        db, clock = self.runtime.db, self.runtime.clock
        results = dict(answers)
        pending: list[PendingCall] = []
        with db.session() as session, session.no_autoflush:
            query = select(Journey).where(Journey.id.in_(results)).order_by(Journey.id)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update()
            journeys = [
                j for j in session.scalars(query) if j.state == "calling" and j.leased_by == self.worker_id
            ]
            if not journeys:
                return
            now = clock.now_int()
            batch = _Batch(session)
            batch.load(journeys)
            try:
                with session.begin_nested():
                    for journey in journeys:
                        pending.extend(self._resume_one(session, batch, journey, results[journey.id], now))
                    batch.write_log()
            except Exception:
                log.warning("an answer of the batch failed; storing them one by one", exc_info=True)
                pending = []
                batch.logs.clear()
                for journey in journeys:
                    try:
                        with session.begin_nested():
                            found = self._resume_one(session, batch, journey, results[journey.id], now)
                            batch.write_log()
                        pending.extend(found)
                    except Exception as exc:
                        log.exception("journey %s failed storing its answer", journey.id)
                        batch.logs.clear()
                        with session.begin_nested():
                            self._finish(session, journey, "failed", f"internal error: {exc!r}", now)
        self._dispatch(pending)

    def _resume_one(
        self, session: Session, batch: _Batch, journey: Journey, result: dict[str, Any], now: int
    ) -> list[PendingCall]:
        campaign = batch.campaigns[journey.campaign_id]
        definition = definition_of(session, campaign.id, journey.version)
        block = definition.workflow.blocks.get(journey.block or "")
        person = batch.people.get(journey.person_id or 0)
        journey.leased_by = journey.leased_until = None
        if block is None or person is None:
            self._finish(session, journey, "failed", "the journey's block or person is gone", now)
            return []
        resume = RUNNERS[block.type].resume
        assert resume is not None
        step = Step(
            session,
            batch.workspaces[journey.workspace_id],
            batch.infos[campaign.id],
            definition.workflow,
            journey,
            block,
            person,
            now,
        )
        outcome = resume(step, result)
        journey.state = "active"
        return self.advance(session, batch, journey, now, first=outcome)


def reentry_refusal(
    rules: dict[str, Any], entries: int, running: int, last_entered_at: int | None, now: int
) -> str | None:
    """Why the re-entry rules keep a person out (given how often they entered, how many of their journeys
    run and when they last entered), or None."""
    if entries and rules["mode"] == "once":
        return "already entered (re-entry: once)"
    last = last_entered_at
    if entries and rules["mode"] == "every" and last is not None and now < last + rules["every"]:
        return f"entered less than {rules['every']} s ago"
    if running >= rules["max_concurrent"]:
        return f"already in {running} journeys (at most {rules['max_concurrent']} at once)"
    return None


def convert(session: Session, journey: Journey, now: int) -> None:
    """The journey met its goal: it and the message it last sent count a conversion."""
    if journey.converted_at is not None:
        return
    journey.converted_at = now
    if journey.last_delivery_id is not None:
        delivery = session.get(Delivery, journey.last_delivery_id)
        if delivery is not None and delivery.converted_at is None:
            lifecycle.record(session, delivery, "converted", now=now, source="tidings")

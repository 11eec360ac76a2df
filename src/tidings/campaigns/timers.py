"""Campaigns started by the clock: date-attribute triggers (a birthday, a renewal; once or every year,
with an offset) and scheduled campaigns (once at a time, or every day or week at a local time).

A date trigger keeps one ``CampaignTimer`` row per person: when their next firing is. Activating the
campaign (or saving a new version) queues a job that computes the timers of everyone, a chunk per run; a
change of the attribute moves that person's timer in the same transaction (see triggers). Workers claim
due timers (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and start a journey for each, moving a yearly timer
to next year in the same transaction.

A scheduled campaign keeps its next run in ``campaigns.next_run_at``; a due run is queued like a
broadcast's trigger (its audience resolved a chunk at a time into journeys) and the next run computed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.db import Database
from tidings.journeys.blocks import DAYS, as_time
from tidings.journeys.engine import definition_of
from tidings.models import Campaign, CampaignTimer, Journey, Person
from tidings.worker import queue, wake

SCAN_JOB = "campaign_date_scan"
SCAN_CHUNK = 5000
CLAIM = 500


# -- date triggers -------------------------------------------------------------------------------------


def _anniversary(moment: datetime, year: int) -> datetime:
    try:
        return moment.replace(year=year)
    except ValueError:  # 29 February in a common year: the 28th
        return moment.replace(year=year, day=28)


def next_date(trigger: dict[str, Any], value: Any, now: int) -> int | None:
    """When a date trigger next fires for an attribute value, or None (no date, or passed for good)."""
    if value is None:
        return None
    try:
        base = as_time(value)
    except ValueError:
        return None
    offset = int(trigger.get("offset", 0))
    if trigger.get("recurring") != "yearly":
        due = base + offset
        return due if due > now else None
    moment = datetime.fromtimestamp(base, UTC)
    year = datetime.fromtimestamp(now - offset, UTC).year
    for candidate in (year, year + 1):
        due = int(_anniversary(moment, candidate).timestamp()) + offset
        if due > now:
            return due
    return None


def set_timer(
    session: Session,
    workspace_id: int,
    campaign_id: int,
    trigger: dict[str, Any],
    person_id: int,
    value: Any,
    now: int,
) -> None:
    """Move (or remove) one person's timer for a date-triggered campaign."""
    due = next_date(trigger, value, now)
    session.execute(
        delete(CampaignTimer).where(
            CampaignTimer.campaign_id == campaign_id, CampaignTimer.person_id == person_id
        )
    )
    if due is not None:
        session.execute(
            insert(CampaignTimer).values(
                campaign_id=campaign_id, person_id=person_id, workspace_id=workspace_id, due_at=due
            )
        )


def queue_scan(session: Session, campaign: Campaign, now: int) -> None:
    queue.enqueue(
        session,
        SCAN_JOB,
        run_at=now,
        now=now,
        workspace_id=campaign.workspace_id,
        payload={"campaign_id": campaign.id, "version": campaign.version, "cursor": 0},
    )
    wake.soon(session)


def scan(session: Session, payload: dict[str, Any], now: float, _settings: Settings) -> None:
    """One chunk of everyone's timers for a date-triggered campaign; queues the next chunk."""
    campaign = session.get(Campaign, int(payload["campaign_id"]))
    if (
        campaign is None
        or campaign.version != payload["version"]
        or campaign.state not in ("active", "paused")
    ):
        return  # a newer version's scan (or the archive) took over
    trigger = definition_of(session, campaign.id, campaign.version).trigger
    cursor = int(payload["cursor"])
    rows = session.execute(
        select(Person.id, Person.attributes)
        .where(Person.workspace_id == campaign.workspace_id, Person.id > cursor)
        .order_by(Person.id)
        .limit(SCAN_CHUNK)
    ).all()
    if not rows:
        return
    ids = [person_id for person_id, _ in rows]
    session.execute(
        delete(CampaignTimer).where(
            CampaignTimer.campaign_id == campaign.id, CampaignTimer.person_id.in_(ids)
        )
    )
    timers = []
    for person_id, attributes in rows:
        due = next_date(trigger, (attributes or {}).get(trigger["attribute"]), int(now))
        if due is not None:
            timers.append(
                {
                    "campaign_id": campaign.id,
                    "person_id": person_id,
                    "workspace_id": campaign.workspace_id,
                    "due_at": due,
                }
            )
    if timers:
        session.execute(insert(CampaignTimer), timers)
    queue.enqueue(
        session,
        SCAN_JOB,
        run_at=now,
        now=now,
        workspace_id=campaign.workspace_id,
        payload={**payload, "cursor": ids[-1]},
    )


def run_due_dates(db: Database, now: int) -> int:
    """Start the journeys of the date timers due now; returns how many timers fired."""
    with db.session() as session:
        query = (
            select(CampaignTimer)
            .join(Campaign, Campaign.id == CampaignTimer.campaign_id)
            .where(CampaignTimer.due_at <= now, Campaign.state == "active")
            .order_by(CampaignTimer.due_at)
            .limit(CLAIM)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=CampaignTimer)
        due = list(session.scalars(query))
        if not due:
            return 0
        campaigns = {
            c.id: c
            for c in session.scalars(select(Campaign).where(Campaign.id.in_({t.campaign_id for t in due})))
        }
        people: dict[int, dict[str, Any] | None] = {}
        for row in session.execute(
            select(Person.id, Person.attributes).where(Person.id.in_({t.person_id for t in due}))
        ):
            people[row.id] = row.attributes
        journeys = []
        for timer in due:
            campaign = campaigns[timer.campaign_id]
            trigger = definition_of(session, campaign.id, campaign.version).trigger
            value = (people.get(timer.person_id) or {}).get(trigger["attribute"])
            journeys.append(
                {
                    "workspace_id": timer.workspace_id,
                    "campaign_id": campaign.id,
                    "version": campaign.version,
                    "person_id": timer.person_id,
                    "state": "pending",
                    "due_at": now,
                    "trigger": {
                        "data": {"attribute": trigger["attribute"], "value": value, "date": timer.due_at}
                    },
                    "attributes": {},
                    "steps": 0,
                    "created_at": now,
                }
            )
            upcoming = next_date(trigger, value, max(now, timer.due_at))
            if upcoming is None:
                session.delete(timer)
            else:
                timer.due_at = upcoming
        session.execute(insert(Journey), journeys)
        wake.soon(session)
        return len(due)


# -- scheduled campaigns -------------------------------------------------------------------------------


def next_run(trigger: dict[str, Any], after: int) -> int | None:
    """A scheduled trigger's first run later than ``after`` (a one-time run already past runs at once)."""
    if "at" in trigger:
        return int(trigger["at"])
    zone = ZoneInfo(str(trigger.get("timezone") or "UTC"))
    hour, minute = (int(part) for part in str(trigger["time"]).split(":"))
    local = datetime.fromtimestamp(after, zone)
    for offset in range(0, 9):
        day = local + timedelta(days=offset)
        at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if trigger["every"] == "week" and at.weekday() != DAYS.index(trigger.get("day", "mon")):
            continue
        if at.timestamp() > after:
            return int(at.timestamp())
    return None


def schedule(session: Session, campaign: Campaign, trigger: dict[str, Any], now: int) -> None:
    """Set a scheduled campaign's next run (on activation and on every new version)."""
    campaign.next_run_at = next_run(trigger, now) if trigger["type"] == "scheduled" else None


def run_due_schedules(db: Database, now: int) -> int:
    """Queue the runs of scheduled campaigns that are due; returns how many."""
    # Imported here: broadcasts build on campaigns, whose triggers use this module.
    from tidings.broadcasts.service import queue_audience  # noqa: PLC0415

    with db.session() as session:
        query = (
            select(Campaign)
            .where(Campaign.next_run_at <= now, Campaign.state == "active")
            .order_by(Campaign.next_run_at)
            .limit(20)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        due = list(session.scalars(query))
        for campaign in due:
            trigger = definition_of(session, campaign.id, campaign.version).trigger
            queue_audience(
                session, campaign, {"style": "default", "data": {"scheduled_at": campaign.next_run_at}}, now
            )
            campaign.next_run_at = (
                None if "at" in trigger else next_run(trigger, max(now, campaign.next_run_at or now))
            )
        return len(due)

"""What the worker knows how to do, and the periodic maintenance the scheduler keeps queued."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from tidings.broadcasts import service as broadcasts
from tidings.campaigns import timers as campaign_timers
from tidings.config import Settings
from tidings.models import Event, PipelinesMessage, WebhookPost
from tidings.newsletters import service as newsletters
from tidings.segments import jobs as segment_jobs

DAY = 86400
Handler = Callable[[Session, dict[str, Any], float, Settings], None]


def purge_pipelines_messages(
    session: Session, _payload: dict[str, Any], now: float, settings: Settings
) -> None:
    """Forget Pipelines messageIds older than the dedup window."""
    cutoff = int(now) - settings.pipelines_dedup_days * DAY
    session.execute(delete(PipelinesMessage).where(PipelinesMessage.received_at < cutoff))


def purge_unlinked_anonymous_events(
    session: Session, _payload: dict[str, Any], now: float, settings: Settings
) -> None:
    """Anonymous events nobody was identified with inside the retention window can no longer merge."""
    cutoff = int(now) - settings.anonymous_event_retention_days * DAY
    session.execute(
        delete(Event).where(
            Event.person_id.is_(None), Event.anonymous_id.is_not(None), Event.timestamp < cutoff
        )
    )


def purge_webhook_posts(session: Session, _payload: dict[str, Any], now: float, settings: Settings) -> None:
    """Posts already delivered are kept a day (visible while debugging an endpoint), abandoned ones a
    month; the outbox would otherwise grow with every event."""
    session.execute(
        delete(WebhookPost).where(WebhookPost.state == "sent", WebhookPost.sent_at < int(now) - DAY)
    )
    session.execute(
        delete(WebhookPost).where(
            WebhookPost.state == "abandoned", WebhookPost.created_at < int(now) - 30 * DAY
        )
    )


HANDLERS: dict[str, Handler] = {
    "purge_pipelines_messages": purge_pipelines_messages,
    "purge_unlinked_anonymous_events": purge_unlinked_anonymous_events,
    "purge_webhook_posts": purge_webhook_posts,
    segment_jobs.BUILD_JOB: segment_jobs.build_step,
    broadcasts.EXPAND_JOB: broadcasts.expand,
    newsletters.EXPAND_JOB: newsletters.expand,
    campaign_timers.SCAN_JOB: campaign_timers.scan,
}


@dataclass(frozen=True)
class Periodic:
    kind: str
    every_seconds: float


PERIODIC = (
    Periodic("purge_pipelines_messages", 3600),
    Periodic("purge_unlinked_anonymous_events", 3600),
    Periodic("purge_webhook_posts", 3600),
)

"""Posting the reporting-webhook outbox (``webhook_posts``), from the worker.

Order: per webhook, posts go out in the order they were written, one at a time. Only a webhook's oldest
pending post is ever claimed, so while it waits for a retry every later post waits behind it
(Customer.io's backlog); once it is sent (or abandoned after the 7-day retry window) the next one is the
oldest. Posts of a disabled webhook are never claimed: they wait until it is enabled again.

Claims: a claim is a lease (``leased_by``/``leased_until``) committed before the request is made, so the
HTTP request runs outside any transaction and a worker that dies mid-post only delays the post until the
lease runs out. PostgreSQL reads the candidates ``FOR UPDATE SKIP LOCKED`` so workers in several processes
pass over each other's rows instead of queueing on them; on both stores the lease is then taken by a
conditional UPDATE (only if the row is still pending and unleased), which is what makes a claim exclusive
on SQLite, where one writer at a time runs anyway. Because a leased head still counts as the oldest
pending post, no other worker can claim the post behind it while it is in flight.

Retries (reference §6): statuses Customer.io names (400, 401, 402, 403, 404, 405, 410, 429, 500, 502,
521) and connection failures (refused, reset, TLS, an address Tidings may not call) wait an hour; other
failures (other statuses, timeouts) back off exponentially from 30 s up to an hour.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from tidings.clock import Clock
from tidings.config import Settings
from tidings.db import Database
from tidings.messaging import outbound
from tidings.models import ReportingWebhook, WebhookPost
from tidings.workspaces.service import webhook_signing_key

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 4.0
# Long enough to cover one post (a few 4 s phases) with a wide margin; a dead worker's post waits this long.
LEASE_SECONDS = 60.0
RETRY_WINDOW_SECONDS = 7 * 86400
FIRST_RETRY_SECONDS = 30.0
LONG_WAIT_SECONDS = 3600.0
LONG_WAIT_STATUSES = frozenset({400, 401, 402, 403, 404, 405, 410, 429, 500, 502, 521})
# Bounds on one run, so jobs and segment timers in the same worker loop are not held up for long: how many
# endpoints are started, how many posts one endpoint gets in a row, and the time after which no new post
# is started (one already under way still finishes, within its timeout).
MAX_ENDPOINTS_PER_RUN = 32
MAX_POSTS_PER_ENDPOINT = 100
RUN_BUDGET_SECONDS = 5.0
# Endpoints are posted to in parallel (each endpoint's posts stay sequential), so one slow endpoint does
# not hold up the others for its whole timeout.
PARALLEL_ENDPOINTS = 8
# How much of an answer is read: enough to keep a connection reusable after a small 2xx body, and a
# snippet of an error body for last_error.
MAX_ANSWER_BYTES = 64 * 1024
ERROR_SNIPPET_CHARS = 300


@dataclass(frozen=True)
class Claimed:
    post_id: int
    webhook_id: int
    endpoint: str
    body: str
    attempts: int
    created_at: int
    signing_key: str | None


@dataclass(frozen=True)
class Outcome:
    status: int | None
    # None when the endpoint took the post (2xx).
    error: str | None
    long_wait: bool = False


def _lease_free(now: float) -> ColumnElement[bool]:
    return or_(WebhookPost.leased_until.is_(None), WebhookPost.leased_until < now)


def claim(
    session: Session, *, worker_id: str, now: float, limit: int, webhook_id: int | None = None
) -> list[Claimed]:
    """Lease the oldest pending post of up to ``limit`` enabled webhooks (or of ``webhook_id`` alone), where
    that post is due and not leased by a live worker."""
    older = aliased(WebhookPost)
    head = (
        select(func.min(older.id))
        .where(older.webhook_id == ReportingWebhook.id, older.state == "pending")
        .correlate(ReportingWebhook)
        .scalar_subquery()
    )
    # Driven from the webhooks (few) rather than the posts (many, mostly sent): one index probe per
    # enabled webhook finds its head, then the head is read by primary key.
    heads = select(
        ReportingWebhook.id.label("webhook_id"),
        ReportingWebhook.workspace_id.label("workspace_id"),
        ReportingWebhook.endpoint.label("endpoint"),
        head.label("post_id"),
    ).where(ReportingWebhook.disabled.is_(False))
    if webhook_id is not None:
        heads = heads.where(ReportingWebhook.id == webhook_id)
    due = heads.subquery("heads")
    query = (
        select(
            WebhookPost.id,
            due.c.webhook_id,
            due.c.workspace_id,
            due.c.endpoint,
            WebhookPost.body,
            WebhookPost.attempts,
            WebhookPost.created_at,
        )
        .join(due, WebhookPost.id == due.c.post_id)
        .where(WebhookPost.next_attempt_at <= now, _lease_free(now))
        .order_by(WebhookPost.next_attempt_at, WebhookPost.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=WebhookPost)
    claimed: list[Claimed] = []
    keys: dict[int, str | None] = {}
    for post_id, hook_id, workspace_id, endpoint, body, attempts, created_at in session.execute(query).all():
        leased = session.execute(
            update(WebhookPost)
            .where(WebhookPost.id == post_id, WebhookPost.state == "pending", _lease_free(now))
            .values(leased_by=worker_id, leased_until=now + LEASE_SECONDS)
            .execution_options(synchronize_session=False)
        )
        if not getattr(leased, "rowcount", 0):
            continue
        if workspace_id not in keys:
            keys[workspace_id] = webhook_signing_key(session, workspace_id)
        claimed.append(Claimed(post_id, hook_id, endpoint, body, attempts, created_at, keys[workspace_id]))
    return claimed


def sign(key: str, timestamp: str, body: bytes) -> str:
    """Customer.io's signature: hex HMAC-SHA256 of ``v0:<timestamp>:<body>`` under the signing key."""
    return hmac.new(key.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def _read_some(response: httpx.Response) -> bytes:
    """At most MAX_ANSWER_BYTES of the answer: an endpoint cannot make Tidings read without end."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ANSWER_BYTES:
            break
    return b"".join(chunks)[:MAX_ANSWER_BYTES]


def post_once(client: httpx.Client, post: Claimed, *, timestamp: int, allow_private: bool) -> Outcome:
    """One attempt; never raises (any failure is the attempt's outcome)."""
    if post.signing_key is None:
        return Outcome(None, "the workspace has no webhook signing key", long_wait=True)
    try:
        outbound.check_url(post.endpoint, allow_private=allow_private)
    except outbound.OutboundRefused as exc:
        return Outcome(None, f"refused: {exc}", long_wait=True)
    body = post.body.encode()
    stamp = str(timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-CIO-Timestamp": stamp,
        "X-CIO-Signature": sign(post.signing_key, stamp, body),
    }
    try:
        with client.stream("POST", post.endpoint, content=body, headers=headers) as response:
            answer = _read_some(response)
            status = response.status_code
    except httpx.TimeoutException:
        return Outcome(None, f"timed out after {TIMEOUT_SECONDS:g} s")
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        # Refused, reset, TLS verification, DNS, or the guarded transport refusing the address.
        return Outcome(None, f"{type(exc).__name__}: {exc}", long_wait=True)
    except Exception as exc:
        # Whatever else goes wrong is this attempt's failure, so the post is retried, not stuck.
        log.exception("reporting webhook post %s failed unexpectedly", post.post_id)
        return Outcome(None, f"{type(exc).__name__}: {exc}")
    if 200 <= status < 300:
        return Outcome(status, None)
    snippet = answer.decode(errors="replace").strip()[:ERROR_SNIPPET_CHARS]
    return Outcome(
        status, f"HTTP {status}" + (f": {snippet}" if snippet else ""), status in LONG_WAIT_STATUSES
    )


def retry_delay(attempts: int, *, long_wait: bool) -> float:
    """How long after its ``attempts``-th failed attempt a post is tried again."""
    if long_wait:
        return LONG_WAIT_SECONDS
    return min(FIRST_RETRY_SECONDS * (1 << min(attempts - 1, 20)), LONG_WAIT_SECONDS)


def record(session: Session, post: Claimed, outcome: Outcome, *, now: float, worker_id: str) -> bool:
    """Write an attempt's outcome to the post and its webhook's health; False when the lease was lost
    meanwhile (expired and taken by another worker), and nothing was written."""
    attempts = post.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "leased_by": None, "leased_until": None}
    hook: dict[str, Any] = {"last_status": outcome.status}
    if outcome.error is None:
        values.update(state="sent", sent_at=int(now), last_error=None)
        hook.update(last_success_at=int(now), failing_since=None)
    else:
        expired = now - post.created_at >= RETRY_WINDOW_SECONDS
        values.update(
            state="abandoned" if expired else "pending",
            last_error=outcome.error,
            next_attempt_at=now + retry_delay(attempts, long_wait=outcome.long_wait),
        )
        hook.update(
            last_error=outcome.error if not expired else f"{outcome.error} (abandoned after 7 days)",
            failing_since=func.coalesce(ReportingWebhook.failing_since, int(now)),
        )
    result = session.execute(
        update(WebhookPost)
        .where(
            WebhookPost.id == post.post_id,
            WebhookPost.leased_by == worker_id,
            WebhookPost.state == "pending",
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    session.execute(
        update(ReportingWebhook)
        .where(ReportingWebhook.id == post.webhook_id)
        .values(**hook)
        .execution_options(synchronize_session=False)
    )
    return True


class _Run:
    """One pass over the due posts: the shared client and the time budget."""

    def __init__(
        self, db: Database, settings: Settings, clock: Clock, worker_id: str, client: httpx.Client
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.worker_id = worker_id
        self.client = client
        self.deadline = time.monotonic() + RUN_BUDGET_SECONDS

    def drain(self, first: Claimed) -> int:
        """Post ``first``, then the same endpoint's next posts while they get through; return the attempts."""
        post = first
        attempts = 0
        try:
            while True:
                outcome = post_once(
                    self.client,
                    post,
                    timestamp=self.clock.now_int(),
                    allow_private=self.settings.outbound_allow_private,
                )
                attempts += 1
                with self.db.session() as session:
                    kept = record(session, post, outcome, now=self.clock.now(), worker_id=self.worker_id)
                    if (
                        not kept
                        or outcome.error is not None
                        or attempts >= MAX_POSTS_PER_ENDPOINT
                        or time.monotonic() >= self.deadline
                    ):
                        return attempts
                    following = claim(
                        session,
                        worker_id=self.worker_id,
                        now=self.clock.now(),
                        limit=1,
                        webhook_id=post.webhook_id,
                    )
                if not following:
                    return attempts
                post = following[0]
        except Exception:
            # A store error: the claimed post's lease runs out and it is tried again; other endpoints go on.
            log.exception("posting to reporting webhook %s failed", post.webhook_id)
            return attempts


def run_due(db: Database, settings: Settings, clock: Clock, worker_id: str) -> int:
    """Post what is due now; return how many attempts were made."""
    with db.session() as session:
        claimed = claim(session, worker_id=worker_id, now=clock.now(), limit=MAX_ENDPOINTS_PER_RUN)
    if not claimed:
        return 0
    with outbound.http_client(
        allow_private=settings.outbound_allow_private, timeout=TIMEOUT_SECONDS
    ) as client:
        run = _Run(db, settings, clock, worker_id, client)
        if len(claimed) == 1:
            return run.drain(claimed[0])
        with ThreadPoolExecutor(
            max_workers=min(PARALLEL_ENDPOINTS, len(claimed)), thread_name_prefix="tidings-webhooks"
        ) as pool:
            return sum(pool.map(run.drain, claimed))

"""The sending worker: claims due deliveries with a lease, renders them, hands them to their channel and
records the outcome.

Three short transactions per batch, none held open while talking to a provider:

1. claim: due deliveries (queued and due, or sending with an expired lease: a worker died mid-send) move
   to ``sending`` under this worker's lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL);
2. prepare: the checks that can stop a send (person gone, unsubscribed, topic, suppressed address,
   frequency cap) and rendering; the rendered content is stored, so a retry after a crash sends exactly the
   same message under the same delivery id (the channels' idempotency key);
3. finish: sent, retried later with backoff (transient failures), or failed.

A send that succeeded but whose finish was lost (crash between 2 and 3) is sent again when the lease
expires; every channel passes the delivery id to the provider so a retry can be recognised downstream.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from tidings.deliveries import lifecycle
from tidings.messaging.channels.base import Buildable, Channel, Outgoing, SendError, Sent
from tidings.messaging.channels.email import EmailChannel, parse_recipients
from tidings.messaging.render import PrepareFailed, prepare
from tidings.messaging.settings import MessagingSettings
from tidings.messaging.templates import snippets_of
from tidings.models import Delivery, Layout, MessageTemplate, Person, SubscriptionTopic, Workspace
from tidings.people import activity
from tidings.runtime import Runtime
from tidings.tracking.links import delivery_links
from tidings.workspaces.limits import WorkspaceSettings

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8
MAX_BACKOFF_SECONDS = 3600
# One call of :meth:`Sender.run_due` sends batches back to back for about this long, then lets the worker's
# other stages (journey steps, jobs, webhooks) have their turn.
SEND_BURST_SECONDS = 0.25


def backoff(attempts: int) -> int:
    """Seconds before the next try after ``attempts`` tries: 30 s, 1 min, 2 min, … capped at an hour."""
    return int(min(30 * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


@dataclass
class Ready:
    delivery_id: str
    # Email addresses it goes to, checked against the suppression list for the whole batch at once.
    addresses: list[str]
    outgoing: Outgoing


_LAZY_CHANNELS = {
    "sms": ("tidings.messaging.channels.sms", "SmsChannel"),
    "push": ("tidings.messaging.channels.push", "PushChannel"),
    "webhook": ("tidings.messaging.channels.webhook", "WebhookChannel"),
}


class _Batch:
    """What the deliveries of one batch share, read once: workspace settings and snippets."""

    def __init__(self) -> None:
        self._settings: dict[int, WorkspaceSettings] = {}
        self._snippets: dict[int, dict[str, str]] = {}

    def settings(self, session: Session, workspace_id: int) -> WorkspaceSettings:
        found = self._settings.get(workspace_id)
        if found is None:
            workspace = session.get(Workspace, workspace_id)
            found = WorkspaceSettings.from_stored(workspace.settings if workspace else None)
            self._settings[workspace_id] = found
        return found

    def snippets(self, session: Session, workspace_id: int) -> dict[str, str]:
        found = self._snippets.get(workspace_id)
        if found is None:
            found = self._snippets[workspace_id] = snippets_of(session, workspace_id)
        return found


def _channel_settings(settings: MessagingSettings, channel: str) -> Any:
    return getattr(settings, channel, None)


class Sender:
    def __init__(self, runtime: Runtime, worker_id: str) -> None:
        self.runtime = runtime
        self.worker_id = worker_id
        settings = runtime.settings
        self.channels: dict[str, Channel] = {"email": EmailChannel(settings.smtp_url)}
        self._pool = ThreadPoolExecutor(settings.send_concurrency, thread_name_prefix="tidings-send")
        self._channels_lock = threading.Lock()
        # The batch whose sends are under way, if any (see run_due).
        self._in_flight: _Sending | None = None

    def _channel(self, name: str) -> Channel | None:
        """The channel called ``name``, made on first use: the SMS and push channels load their providers'
        SDKs (Twilio, Google auth, HTTP/2), some 40 MB that a workspace sending only email never needs."""
        channel = self.channels.get(name)
        if channel is not None or name not in _LAZY_CHANNELS:
            return channel
        with self._channels_lock:  # sends run on several threads: make each channel once
            channel = self.channels.get(name)
            if channel is not None:
                return channel
            module, class_name = _LAZY_CHANNELS[name]
            factory = getattr(importlib.import_module(module), class_name)
            settings = self.runtime.settings
            made: Channel = (
                factory(allow_private=settings.outbound_allow_private) if name == "webhook" else factory()
            )
            self.channels[name] = made
            return made

    def close(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        try:
            if in_flight is not None:
                self._finish_batch(in_flight)
        finally:
            self._pool.shutdown(wait=True)
            for channel in self.channels.values():
                close = getattr(channel, "close", None)
                if close is not None:
                    close()

    # -- 1. claim ------------------------------------------------------------------------------------

    def claim(self, session: Session, now: float) -> list[str]:
        settings = self.runtime.settings
        due = or_(
            (Delivery.state == "queued") & (Delivery.due_at <= int(now)),
            (Delivery.state == "sending") & (Delivery.leased_until < now),
        )
        query = select(Delivery.id).where(due).order_by(Delivery.due_at).limit(settings.send_batch_size)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if ids:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids))
                .values(
                    state="sending",
                    leased_by=self.worker_id,
                    leased_until=now + settings.send_lease_seconds,
                    attempts=Delivery.attempts + 1,
                )
            )
        return ids

    # -- 2. prepare ----------------------------------------------------------------------------------

    def _blocked(
        self,
        session: Session,
        delivery: Delivery,
        template: MessageTemplate | None,
        person: Person,
        messaging: MessagingSettings,
        now: int,
    ) -> str | None:
        """Why the delivery must not go out, or None."""
        request = delivery.request or {}
        transactional = bool(request.get("transactional"))
        to_unsubscribed = request.get("send_to_unsubscribed")
        if to_unsubscribed is None:
            to_unsubscribed = template.send_to_unsubscribed if template is not None else transactional
        if person.unsubscribed and not to_unsubscribed:
            return "the person is unsubscribed"
        if template is not None and template.topic_id is not None:
            topic = session.get(SubscriptionTopic, template.topic_id)
            choices = (person.subscription_preferences or {}).get("topics") or {}
            chosen = choices.get(f"topic_{template.topic_id}")
            subscribed = (
                chosen if isinstance(chosen, bool) else bool(topic is None or topic.default_subscribed)
            )
            if not subscribed:
                return f"the person is unsubscribed from topic {template.topic_id}"
        for cap in messaging.frequency_caps:
            if cap.channel != delivery.channel or (transactional and not cap.include_transactional):
                continue
            recent = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(
                    Delivery.workspace_id == delivery.workspace_id,
                    Delivery.person_id == person.id,
                    Delivery.channel == delivery.channel,
                    Delivery.sent_at >= now - cap.per_seconds,
                )
            )
            if (recent or 0) >= cap.max_messages:
                return f"frequency cap: {cap.max_messages} {cap.channel} messages per {cap.per_seconds} s"
        return None

    def _prepare_one(self, session: Session, delivery: Delivery, batch: _Batch, now: int) -> Ready | None:
        if delivery.attempts > MAX_ATTEMPTS:
            lifecycle.record(
                session,
                delivery,
                "failed",
                now=now,
                source="tidings",
                reason=f"gave up after {MAX_ATTEMPTS} attempts",
            )
            return None
        messaging = batch.settings(session, delivery.workspace_id).messaging
        person = session.get(Person, delivery.person_id) if delivery.person_id is not None else None
        if person is None:
            lifecycle.record(
                session, delivery, "dropped", now=now, source="tidings", reason="the person no longer exists"
            )
            return None
        template = session.get(MessageTemplate, delivery.template_id) if delivery.template_id else None
        blocked = self._blocked(session, delivery, template, person, messaging, now)
        if blocked is not None:
            lifecycle.record(session, delivery, "dropped", now=now, source="tidings", reason=blocked)
            return None
        if delivery.rendered is None:
            topic = (
                session.get(SubscriptionTopic, template.topic_id) if template and template.topic_id else None
            )
            links = delivery_links(
                session,
                delivery.workspace_id,
                delivery.id,
                public_url=self.runtime.settings.base_url,
                topic=topic.name if topic is not None else "",
            )
            try:
                prepared = prepare(
                    session,
                    delivery,
                    template,
                    person,
                    links,
                    default_from=messaging.email.default_from,
                    snippets=batch.snippets(session, delivery.workspace_id),
                )
            except (PrepareFailed, ValueError) as exc:
                lifecycle.record(session, delivery, "failed", now=now, source="tidings", reason=str(exc))
                return None
            delivery.rendered = prepared.content
            delivery.recipient = prepared.recipient
            delivery.subject = prepared.subject
        content = delivery.rendered or {}
        addresses: list[str] = []
        if delivery.channel == "email":
            for key in ("to", "cc", "bcc"):
                if content.get(key):
                    try:
                        addresses.extend(parse_recipients(content[key]))
                    except Exception as exc:
                        lifecycle.record(
                            session, delivery, "failed", now=now, source="tidings", reason=f"{key}: {exc}"
                        )
                        return None
        return Ready(
            delivery.id,
            addresses,
            Outgoing(
                delivery_id=delivery.id,
                workspace_id=delivery.workspace_id,
                channel=delivery.channel,
                content=content,
                settings=_channel_settings(messaging, delivery.channel),
                public_url=self.runtime.settings.base_url,
                meta={"attempt": delivery.attempts},
            ),
        )

    def prepare(self, session: Session, ids: list[str], now: int) -> list[Ready]:
        batch = _Batch()
        deliveries = session.scalars(select(Delivery).where(Delivery.id.in_(ids))).all()
        # One query each for the batch's people and templates; session.get then finds them loaded.
        # (The identity map holds objects weakly: ``_loaded`` keeps them alive until the batch is done.)
        person_ids = {d.person_id for d in deliveries if d.person_id is not None}
        template_ids = {d.template_id for d in deliveries if d.template_id is not None}
        _loaded: list[object] = []
        if person_ids:
            _loaded += session.scalars(select(Person).where(Person.id.in_(person_ids))).all()
        if template_ids:
            templates = session.scalars(
                select(MessageTemplate).where(MessageTemplate.id.in_(template_ids))
            ).all()
            _loaded += templates
            layout_ids = {t.layout_id for t in templates if t.layout_id is not None}
            topic_ids = {t.topic_id for t in templates if t.topic_id is not None}
            if layout_ids:
                _loaded += session.scalars(select(Layout).where(Layout.id.in_(layout_ids))).all()
            if topic_ids:
                _loaded += session.scalars(
                    select(SubscriptionTopic).where(SubscriptionTopic.id.in_(topic_ids))
                ).all()
        # Another worker may have taken some over after our lease ran out.
        ours = [d for d in deliveries if d.leased_by == self.worker_id and d.state == "sending"]
        ready: list[Ready] = []
        by_id = {}
        # The whole batch in one savepoint, written in one flush (an UPDATE per delivery, sent as one
        # executemany) rather than a flush per delivery: that flush was a fifth of a worker's CPU.
        try:
            with session.no_autoflush, session.begin_nested():
                for delivery in ours:
                    item = self._prepare_one(session, delivery, batch, now)
                    if item is not None:
                        ready.append(item)
                        by_id[item.delivery_id] = delivery
        except Exception:
            # One delivery that cannot be prepared must not hold up the rest: again, one savepoint each.
            log.warning("preparing a batch failed; preparing its deliveries one by one", exc_info=True)
            ready, by_id = [], {}
            for delivery in ours:
                try:
                    with session.begin_nested():
                        item = self._prepare_one(session, delivery, batch, now)
                except Exception as exc:
                    log.exception("preparing delivery %s failed", delivery.id)
                    self._retry_later(session, delivery, now, f"internal error: {exc!r}")
                    continue
                if item is not None:
                    ready.append(item)
                    by_id[item.delivery_id] = delivery
        return self._unsuppressed(session, ready, by_id, now)

    def _unsuppressed(
        self, session: Session, ready: list[Ready], deliveries: dict[str, Delivery], now: int
    ) -> list[Ready]:
        """Drop the deliveries to a suppressed address (one query per workspace for the whole batch)."""
        wanted: dict[int, set[str]] = {}
        for item in ready:
            wanted.setdefault(item.outgoing.workspace_id, set()).update(item.addresses)
        suppressed = {
            (workspace_id, address)
            for workspace_id, addresses in wanted.items()
            if addresses
            for address in lifecycle.suppressed_addresses(session, workspace_id, sorted(addresses))
        }
        if not suppressed:
            return ready
        kept = []
        for item in ready:
            hit = [a for a in item.addresses if (item.outgoing.workspace_id, a.strip().lower()) in suppressed]
            if not hit:
                kept.append(item)
                continue
            lifecycle.record(
                session,
                deliveries[item.delivery_id],
                "dropped",
                now=now,
                source="tidings",
                reason=f"suppressed address: {', '.join(hit)}",
            )
        return kept

    # -- 3. send and finish --------------------------------------------------------------------------

    def build(self, item: Ready) -> Callable[[], Sent | SendError]:
        """What sends ``item``: for a channel that builds apart from sending (:class:`Buildable`, email),
        the message is built here, on the calling thread, and the call returned only talks to the
        provider. A message that cannot be built gives a call that answers its error."""
        channel = self._channel(item.outgoing.channel)
        if channel is None:
            return _answer(SendError(f"no {item.outgoing.channel} channel", transient=False))
        try:
            if hasattr(channel, "build"):
                send = cast(Buildable, channel).build(item.outgoing)
            else:
                send = partial(channel.send, item.outgoing)
        except SendError as exc:
            return _answer(exc)
        except Exception as exc:  # a channel bug must not lose the delivery: retry it, and say why
            log.exception("channel %s failed on delivery %s", item.outgoing.channel, item.delivery_id)
            return _answer(SendError(f"internal error: {exc!r}", transient=True))
        return partial(self._sent, item, send)

    @staticmethod
    def _sent(item: Ready, send: Callable[[], Sent]) -> Sent | SendError:
        try:
            return send()
        except SendError as exc:
            return exc
        except Exception as exc:  # a channel bug must not lose the delivery: retry it, and say why
            log.exception("channel %s failed on delivery %s", item.outgoing.channel, item.delivery_id)
            return SendError(f"internal error: {exc!r}", transient=True)

    def _retry_later(self, session: Session, delivery: Delivery, now: int, reason: str) -> None:
        delivery.state = "queued"
        delivery.leased_by, delivery.leased_until = None, None
        delivery.due_at = now + backoff(delivery.attempts)
        lifecycle.record(session, delivery, "attempted", now=now, source="tidings", reason=reason)

    def finish(self, session: Session, outcomes: list[Outcome], now: int) -> None:
        """Record each outcome; ``None`` (not sent: the batch ran out of lease) puts the delivery back."""
        # One query loads the batch; session.get below finds each delivery in the identity map.
        # (Held in ``_loaded``: the identity map only refers to objects weakly.)
        _loaded = session.scalars(select(Delivery).where(Delivery.id.in_([d for d, _ in outcomes]))).all()
        with activity.batched(session):
            self._finish_each(session, outcomes, now)

    def _finish_each(self, session: Session, outcomes: list[Outcome], now: int) -> None:
        for delivery_id, outcome in outcomes:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None or delivery.leased_by != self.worker_id or delivery.state != "sending":
                continue
            delivery.leased_by, delivery.leased_until = None, None
            if outcome is None:
                delivery.state, delivery.due_at = "queued", now
                delivery.attempts = max(delivery.attempts - 1, 0)
                continue
            if isinstance(outcome, Sent):
                delivery.provider_message_id = outcome.provider_message_id
                lifecycle.record(
                    session,
                    delivery,
                    "sent",
                    now=now,
                    source="tidings",
                    recipient=outcome.recipient or delivery.recipient,
                )
                continue
            if outcome.transient and delivery.attempts < MAX_ATTEMPTS:
                delivery.state = "queued"
                delivery.due_at = now + backoff(delivery.attempts)
                lifecycle.record(
                    session, delivery, "attempted", now=now, source="tidings", reason=outcome.message
                )
                continue
            metric = "undeliverable" if outcome.undeliverable else "failed"
            lifecycle.record(session, delivery, metric, now=now, source="tidings", reason=outcome.message)

    def run_due(self) -> int:
        """Batches back to back for up to :data:`SEND_BURST_SECONDS`; return how many deliveries it handled.

        Each batch is claimed, prepared, sent and finished in three short transactions, none held open
        while talking to a provider. This thread does the CPU work (rendering, building messages) and a
        few sending threads do the talking, so a batch is still being sent while this thread claims and
        builds the next one, or, once the burst is over, while the worker's other stages run (the journey
        steps that queue a broadcast's deliveries). A batch left sending is finished by the next call,
        or by :meth:`close`; a call that returns 0 leaves none."""
        handled = 0
        until = time.monotonic() + SEND_BURST_SECONDS
        while True:
            previous, self._in_flight = self._in_flight, None
            started = None
            try:
                started = self._start_batch()
            finally:
                self._in_flight = started
                if previous is not None:
                    self._finish_batch(previous)
            if started is None:
                return handled
            handled += started.claimed
            if time.monotonic() >= until:
                return handled

    def _start_batch(self) -> _Sending | None:
        """Claim, prepare and build a batch and hand its sends to the sending threads; None when nothing
        is due."""
        db, clock = self.runtime.db, self.runtime.clock
        claimed_at = clock.now()
        with db.session() as session:
            ids = self.claim(session, claimed_at)
        if not ids:
            return None
        with db.session() as session:
            ready = self.prepare(session, ids, clock.now_int())
        # The whole batch shares one lease. Stop sending at half of it (a slow provider) and put the rest
        # back, so no delivery is still being sent here once another worker may take it over.
        send_until = claimed_at + self.runtime.settings.send_lease_seconds / 2

        def attempt(delivery_id: str, send: Callable[[], Sent | SendError]) -> Outcome:
            return delivery_id, send() if clock.now() < send_until else None

        sends = [self._pool.submit(attempt, item.delivery_id, self.build(item)) for item in ready]
        return _Sending(len(ids), sends)

    def _finish_batch(self, sending: _Sending) -> None:
        outcomes = [future.result() for future in sending.sends]
        if outcomes:
            with self.runtime.db.session() as session:
                self.finish(session, outcomes, self.runtime.clock.now_int())


Outcome = tuple[str, Sent | SendError | None]


def _answer(error: SendError) -> Callable[[], Sent | SendError]:
    return lambda: error


@dataclass
class _Sending:
    """A batch whose sends are under way."""

    claimed: int
    sends: list[Future[Outcome]]

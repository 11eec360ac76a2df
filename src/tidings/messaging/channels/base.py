"""The one interface every channel speaks.

The sending worker hands a channel an ``Outgoing``: a delivery already rendered (Liquid done, links
tracked) plus the workspace's settings for that channel. The channel sends it and answers with ``Sent``, or
raises ``SendError`` saying whether trying again later may help. Channels do no database work: the worker
owns the delivery's lifecycle, so a channel is testable against a provider stand-in alone.

Idempotency: ``delivery_id`` is the key. Channels pass it to providers that deduplicate (APNs ``apns-id``,
the Twilio-compatible ``Idempotency-Key`` header, SMTP ``Message-ID``, the webhook channel's
``X-CIO-Delivery-Id``) so a retry after a crash mid-send is recognisable downstream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Outgoing:
    delivery_id: str
    workspace_id: int
    channel: str
    # Rendered fields; the keys each channel reads are documented in its module.
    content: dict[str, Any]
    # The workspace's settings for this channel (a pydantic model from tidings.messaging.settings).
    settings: Any = None
    # Where links and List-Unsubscribe point (TIDINGS_PUBLIC_URL).
    public_url: str = "http://127.0.0.1:8080"
    # Extra facts a channel may use (attempt number, ...).
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sent:
    # The provider's id for the message (SMTP queue id, Twilio SID, FCM name, APNs id), when it gives one.
    provider_message_id: str | None = None
    # Who it went to, as the provider accepted it (an address, a number, device tokens).
    recipient: str | None = None


class SendError(Exception):
    """A send that did not happen. ``transient`` failures are retried with backoff; the others fail the
    delivery at once (``undeliverable`` when the recipient itself is the problem, else ``failed``)."""

    def __init__(
        self, message: str, *, transient: bool, undeliverable: bool = False, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.undeliverable = undeliverable
        self.status = status


class Channel(Protocol):
    name: str

    def send(self, outgoing: Outgoing) -> Sent: ...


class Buildable(Protocol):
    """A channel that can build a message apart from sending it: ``build`` does the CPU work (raising
    ``SendError`` for a message that cannot be made) and returns the call that only talks to the
    provider. ``send`` is the two in one."""

    def build(self, outgoing: Outgoing) -> Callable[[], Sent]: ...

"""A workspace's messaging settings: how each channel reaches its provider, and frequency caps.

Stored in ``workspaces.settings`` under ``messaging`` and edited like every workspace setting
(``tidings workspace configure WS --set messaging.sms.account_sid=AC...``). Provider secrets live here;
the database is the operator's, as in any self-hosted system.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EmailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # smtp://host:port (STARTTLS when offered, or ?starttls=require), smtps://user:pass@host:465 (implicit
    # TLS). Empty: the server-wide TIDINGS_SMTP_URL.
    smtp_url: str | None = None
    # Used when neither the template nor the request gives one.
    default_from: str | None = None
    timeout_seconds: float = 30.0
    # Verify the server's certificate (turn off only for a test server with a self-signed one).
    tls_verify: bool = True


class SmsSettings(BaseModel):
    """A Twilio-compatible Messages API."""

    model_config = ConfigDict(extra="forbid")

    api_url: str = "https://api.twilio.com"
    account_sid: str | None = None
    auth_token: str | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    timeout_seconds: float = 15.0


class FcmSettings(BaseModel):
    """Firebase Cloud Messaging HTTP v1: a service account's JSON key (its ``token_uri`` is where the OAuth
    token is fetched)."""

    model_config = ConfigDict(extra="forbid")

    api_url: str = "https://fcm.googleapis.com"
    project_id: str | None = None
    service_account: dict[str, Any] | None = None
    timeout_seconds: float = 15.0


class ApnsSettings(BaseModel):
    """Apple Push Notification service over HTTP/2 with a token (.p8) key."""

    model_config = ConfigDict(extra="forbid")

    api_url: str = "https://api.push.apple.com"
    team_id: str | None = None
    key_id: str | None = None
    private_key: str | None = None
    topic: str | None = None
    timeout_seconds: float = 15.0


class PushSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fcm: FcmSettings = FcmSettings()
    apns: ApnsSettings = ApnsSettings()


class WebhookChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_seconds: float = 10.0


class FrequencyCap(BaseModel):
    """At most ``max_messages`` messages of ``channel`` to one person per ``per_seconds``. Customer.io caps
    campaign and broadcast messages; transactional ones only with ``include_transactional``."""

    model_config = ConfigDict(extra="forbid")

    channel: str
    max_messages: int = Field(ge=1)
    per_seconds: int = Field(ge=1)
    include_transactional: bool = False


class MessagingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailSettings = EmailSettings()
    sms: SmsSettings = SmsSettings()
    push: PushSettings = PushSettings()
    webhook: WebhookChannelSettings = WebhookChannelSettings()
    frequency_caps: list[FrequencyCap] = []

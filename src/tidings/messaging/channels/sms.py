"""SMS through a Twilio-compatible Messages API, driven by Twilio's official Python SDK.

Content keys (rendered):

- ``to``: the recipient, E.164 (``+14155550100``); Twilio channel addresses (``whatsapp:+1...``) pass as is.
- ``from``: optional sender override; else ``settings.from_number``; else ``settings.messaging_service_sid``
  lets Twilio pick from the service's sender pool (both may be given: Twilio then uses that sender within
  the service).
- ``body``: the text.
- ``media_url``: optional list of media URLs (MMS).

The SDK is used through its documented extension point, a custom ``twilio.http.HttpClient`` handed to
``twilio.rest.Client(http_client=...)``. Ours sends with httpx (one pooled client per channel) and rewrites
the SDK's ``https://api.twilio.com`` origin to ``settings.api_url``, so a Twilio-compatible provider or a
local stand-in can be targeted. The origin is replaced whatever host the SDK chose (it prefixes edges and
regions from ``TWILIO_EDGE``/``TWILIO_REGION`` in the environment), so the setting always wins.

Idempotency: each request carries the delivery id as ``I-Twilio-Idempotency-Token`` and ``Idempotency-Key``.
Twilio itself documents message creation as not idempotent (and uses ``I-Twilio-Idempotency-Token`` on the
webhooks it sends), so against Twilio these headers are inert; Twilio-compatible providers that deduplicate
read one or the other, and a retried delivery is recognisable downstream either way.

Outcomes: the message SID is the provider id, the ``to`` Twilio accepted the recipient. 429, 5xx and
network errors are transient; Twilio's "this recipient cannot get SMS" codes (invalid or landline number,
opted out, unreachable) are undeliverable; authentication and other client errors fail the delivery.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client as TwilioClient

from tidings.messaging.channels.base import Outgoing, SendError, Sent
from tidings.messaging.settings import SmsSettings

log = logging.getLogger(__name__)

# Twilio error codes that mean the recipient cannot be messaged (retrying or fixing our settings will not
# help): https://www.twilio.com/docs/api/errors
UNDELIVERABLE_CODES = frozenset(
    {
        21211,  # Invalid 'To' phone number
        21214,  # 'To' phone number cannot be reached
        21217,  # Phone number does not appear to be valid
        21407,  # This phone number type does not support SMS or MMS
        21610,  # Attempt to send to unsubscribed recipient (replied STOP)
        21612,  # 'To' number is not currently reachable via SMS from this sender
        21614,  # 'To' number is not a valid mobile number
    }
)


class _HttpxTwilioClient(HttpClient):  # type: ignore[misc]
    """Twilio's HttpClient contract on httpx: the SDK builds method, URL, form data, headers and Basic auth;
    this sends them to ``api_url`` with the idempotency headers added."""

    def __init__(self, http: httpx.Client, *, api_url: str, idempotency_key: str, timeout: float) -> None:
        super().__init__(log, False, timeout)
        self._http = http
        self._api_url = api_url.rstrip("/")
        self._idempotency_key = idempotency_key

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        parts = urlsplit(url)
        target = self._api_url + parts.path + (f"?{parts.query}" if parts.query else "")
        sent_headers = dict(headers or {})
        sent_headers["I-Twilio-Idempotency-Token"] = self._idempotency_key
        sent_headers["Idempotency-Key"] = self._idempotency_key
        response = self._http.request(
            method,
            target,
            params=params,  # type: ignore[arg-type]
            # A dict body is form-encoded by httpx; list values (MediaUrl) become repeated fields, as Twilio
            # wants them.
            data=data,
            headers=sent_headers,
            auth=auth,
            timeout=timeout or self.timeout,
            follow_redirects=allow_redirects,
        )
        return TwilioResponse(response.status_code, response.text, response.headers)


class SmsChannel:
    name = "sms"

    def __init__(self) -> None:
        # One pooled client for every send, whatever the workspace: connections to the provider are reused.
        self._http = httpx.Client(follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def send(self, outgoing: Outgoing) -> Sent:
        settings = _settings(outgoing.settings)
        content = outgoing.content
        to = str(content.get("to") or "").strip()
        if not to:
            raise SendError("the person has no phone number to send to", transient=False, undeliverable=True)
        body = content.get("body")
        media = _media_urls(content.get("media_url"))
        if not body and not media:
            raise SendError("the SMS has neither a body nor media", transient=False)
        if not settings.account_sid or not settings.auth_token:
            raise SendError(
                "SMS is not configured: messaging.sms.account_sid and auth_token", transient=False
            )
        sender = content.get("from") or settings.from_number
        if not sender and not settings.messaging_service_sid:
            raise SendError(
                "SMS has no sender: set messaging.sms.from_number or messaging_service_sid", transient=False
            )

        http_client = _HttpxTwilioClient(
            self._http,
            api_url=settings.api_url,
            idempotency_key=outgoing.delivery_id,
            timeout=settings.timeout_seconds,
        )
        # A Client per send is cheap (the SDK builds its resources lazily) and keeps each workspace's
        # credentials and idempotency key confined to its own request.
        client = TwilioClient(
            settings.account_sid,
            settings.auth_token,
            account_sid=settings.account_sid,
            http_client=http_client,
        )
        kwargs: dict[str, Any] = {"to": to}
        if sender:
            kwargs["from_"] = sender
        if settings.messaging_service_sid:
            kwargs["messaging_service_sid"] = settings.messaging_service_sid
        if body:
            kwargs["body"] = str(body)
        if media:
            kwargs["media_url"] = media
        try:
            message = client.messages.create(**kwargs)
        except TwilioRestException as exc:
            raise _provider_error(int(exc.status), exc.code, exc.msg) from exc
        except TwilioServiceException as exc:
            # The SDK's type for RFC 9457 problem-details errors, which newer Twilio APIs answer with.
            raise _provider_error(int(exc.status), exc.code, exc.detail or exc.title) from exc
        except httpx.TransportError as exc:
            raise SendError(f"could not reach the SMS provider: {exc!r}", transient=True) from exc
        except ValueError as exc:
            # A 2xx whose body is not the Message resource: the provider may well have queued the message,
            # so retrying could send it twice.
            raise SendError(f"the SMS provider's answer was unreadable: {exc}", transient=False) from exc
        return Sent(provider_message_id=message.sid, recipient=message.to or to)


def _settings(value: Any) -> SmsSettings:
    if isinstance(value, SmsSettings):
        return value
    try:
        # Settings straight from the workspace's JSON are accepted too.
        return SmsSettings.model_validate(value or {})
    except ValidationError as exc:
        raise SendError(f"messaging.sms settings are invalid: {exc}", transient=False) from exc


def _media_urls(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if v]


def _provider_error(status: int, code: int | None, detail: str | None) -> SendError:
    message = f"SMS provider refused the message: HTTP {status}" + (f", error {code}" if code else "")
    if detail:
        message += f": {detail}"
    if status == 429 or status >= 500:
        return SendError(message, transient=True, status=status)
    if code in UNDELIVERABLE_CODES:
        return SendError(message, transient=False, undeliverable=True, status=status)
    # 401/403 (bad credentials, suspended account), 404 (unknown account) and other 4xx: retrying the same
    # request cannot succeed until someone fixes the settings or the message.
    return SendError(message, transient=False, status=status)

"""The webhook channel: an HTTP request to a URL the workspace chose (Customer.io's "webhook" action).

Content keys (rendered):

- ``method``: GET, POST, PUT, PATCH or DELETE (default POST).
- ``url``: http(s) only.
- ``headers``: ``{name: value}``.
- ``body``: the request body as text. Without a Content-Type header it is sent as ``application/json``
  when it parses as JSON (what Customer.io's webhook editor produces), else as ``text/plain``.

Every request carries ``X-CIO-Delivery-Id: <delivery id>`` so the receiver can drop a retried delivery.

The URL is user-given, so the request goes through ``tidings.messaging.outbound``: ``check_url`` first (a
refused URL — private address, bad scheme — fails the delivery for good; left to the guarded transport it
would surface as a connect error and be retried for nothing), then a guarded client that re-checks at
connect time and never follows redirects.

Outcomes: 2xx → ``Sent`` (no provider id, recipient = the URL). 408, 429, 5xx and network errors →
transient. Other statuses (4xx, and 3xx since redirects are not followed) → failed.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import ValidationError

from tidings.messaging import outbound
from tidings.messaging.channels.base import Outgoing, SendError, Sent
from tidings.messaging.settings import WebhookChannelSettings

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
DELIVERY_ID_HEADER = "X-CIO-Delivery-Id"
# How much of an error response to quote in the failure message.
_SNIPPET_BYTES = 300


class WebhookChannel:
    name = "webhook"

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        # One guarded client for every send; each request sets its workspace's timeout.
        self._http = outbound.http_client(
            allow_private=allow_private, timeout=WebhookChannelSettings().timeout_seconds
        )

    def close(self) -> None:
        self._http.close()

    def send(self, outgoing: Outgoing) -> Sent:
        settings = _settings(outgoing.settings)
        content = outgoing.content
        method = str(content.get("method") or "POST").upper()
        if method not in METHODS:
            raise SendError(f"webhook method {method!r} is not one of {sorted(METHODS)}", transient=False)
        url = str(content.get("url") or "").strip()
        if not url:
            raise SendError("the webhook has no URL", transient=False)
        try:
            outbound.check_url(url, allow_private=self.allow_private)
        except outbound.OutboundRefused as exc:
            raise SendError(f"webhook URL refused: {exc}", transient=False) from exc

        headers = _headers(content.get("headers"))
        body = content.get("body")
        payload = None if body is None or body == "" else str(body).encode()
        if payload is not None and not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json" if _is_json(payload) else "text/plain; charset=utf-8"
        # Set last so a header in the content cannot change the key receivers deduplicate on.
        headers = {k: v for k, v in headers.items() if k.lower() != DELIVERY_ID_HEADER.lower()}
        headers[DELIVERY_ID_HEADER] = outgoing.delivery_id

        try:
            request = self._http.build_request(
                method, url, headers=headers, content=payload, timeout=settings.timeout_seconds
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError) as exc:
            # A header name or value HTTP cannot carry, or a URL httpx cannot parse.
            raise SendError(f"the webhook request is malformed: {exc}", transient=False) from exc
        try:
            # Streamed so a large response body is never read: only an error's first bytes are quoted.
            response = self._http.send(request, stream=True)
        except httpx.ConnectError as exc:
            if isinstance(exc.__cause__, outbound.OutboundRefused):
                # The host resolved to a public address at check time and a private one at connect time.
                raise SendError(f"webhook URL refused: {exc.__cause__}", transient=False) from exc
            raise SendError(f"could not connect to the webhook URL: {exc!r}", transient=True) from exc
        except httpx.LocalProtocolError as exc:
            raise SendError(f"the webhook request is malformed: {exc}", transient=False) from exc
        except httpx.TransportError as exc:
            raise SendError(f"the webhook request failed: {exc!r}", transient=True) from exc
        try:
            status = response.status_code
            if 200 <= status < 300:
                return Sent(provider_message_id=None, recipient=url)
            snippet = _snippet(response)
        finally:
            response.close()
        message = f"webhook answered HTTP {status}" + (f": {snippet}" if snippet else "")
        transient = status in (408, 429) or status >= 500
        raise SendError(message, transient=transient, status=status)


def _settings(value: Any) -> WebhookChannelSettings:
    if isinstance(value, WebhookChannelSettings):
        return value
    try:
        # Settings straight from the workspace's JSON are accepted too.
        return WebhookChannelSettings.model_validate(value or {})
    except ValidationError as exc:
        raise SendError(f"messaging.webhook settings are invalid: {exc}", transient=False) from exc


def _headers(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise SendError(f"webhook headers are not a JSON object: {exc}", transient=False) from exc
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        # [{"name": ..., "value": ...}], the shape some editors store headers in.
        pairs = [h for h in value if isinstance(h, dict) and h.get("name")]
        return {str(h["name"]): str(h.get("value", "")) for h in pairs}
    raise SendError("webhook headers must be an object", transient=False)


def _is_json(payload: bytes) -> bool:
    try:
        json.loads(payload)
    except ValueError:
        return False
    return True


def _snippet(response: httpx.Response) -> str:
    collected = b""
    try:
        for chunk in response.iter_bytes():
            collected += chunk
            if len(collected) >= _SNIPPET_BYTES:
                break
    except httpx.HTTPError:
        pass
    return collected[:_SNIPPET_BYTES].decode("utf-8", "replace").strip()

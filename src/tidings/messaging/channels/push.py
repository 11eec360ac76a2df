"""Push notifications: Android through Firebase Cloud Messaging HTTP v1, iOS through APNs over HTTP/2.

Content keys (rendered):

- ``devices``: ``[{"token": "...", "platform": "ios"|"android"}, ...]`` (``id`` is read when ``token`` is
  absent, as Customer.io's device objects name it); every device is sent to, a token listed twice once.
- ``title``, ``message``, ``image_url``, ``link``, ``sound``: the notification.
- ``custom_data``: ``{str: str}`` for the app.
- ``custom_payload``: ``{"ios": {...}, "android": {...}}`` (or its JSON text); a platform's entry replaces
  the payload generated for that platform, as in Customer.io. The Android entry is an FCM v1 message,
  with or without the ``{"message": ...}`` wrapper; the iOS entry is the APNs JSON body.

Generated payloads follow what Customer.io's mobile SDKs read:

- Android: ``{"message": {"token", "notification": {"title", "body", "image"}, "data": {custom_data...,
  "link"}, "android": {"notification": {"sound"}}}}``.
- iOS: ``{"aps": {"alert": {"title", "body"}, "sound", "mutable-content": 1 (with an image, so a
  notification service extension can attach it)}, "CIO": {"push": {"link", "image"}}, custom_data...}``.

Both, custom payloads included, carry ``CIO-Delivery-ID`` (the delivery id) and ``CIO-Delivery-Token``
(the device token): the SDKs report opens and deliveries back with them (Track ``/push/events``).

Providers and libraries:

- FCM: the OAuth access token comes from google-auth's service-account credentials, which post the signed
  JWT-bearer assertion to the ``token_uri`` in the service account JSON (so a stand-in token endpoint
  works), over an httpx adapter of google-auth's documented ``transport.Request`` interface. The token is
  cached per service account until google-auth deems it expired. The send itself is the documented
  ``POST {api_url}/v1/projects/{project_id}/messages:send`` with httpx: firebase-admin hard-codes Google's
  host, so it cannot reach ``api_url``. ``credentials.refresh`` is called directly rather than
  ``before_request``, which would also start google-auth's background regional-access-boundary lookups
  to Google.
- APNs: Apple ships no Python SDK; this speaks its documented HTTP/2 API with httpx (HTTP/2 only, as
  APNs requires) and token-based authentication, an ES256 JWT (``iss`` team id, ``kid`` key id, ``iat``)
  made with pyjwt and reused for 50 minutes (Apple refuses tokens older than an hour and throttles ones
  renewed more often than every 20 minutes). ``apns-id`` is a UUID derived from the delivery id and the
  device token, so a retried delivery sends the same id.

Outcomes: any device accepted → ``Sent`` (recipient: the accepted tokens, provider id: their message ids,
comma-joined; the other devices' failures are logged). Otherwise, any transient failure (network, 429,
5xx) → transient ``SendError``; every device refused for good (APNs 410 / BadDeviceToken /
DeviceTokenNotForTopic, FCM UNREGISTERED / invalid token / SENDER_ID_MISMATCH) → undeliverable; else
(missing settings, rejected credentials, a payload the provider refuses) → failed.

One httpx client per provider per channel instance, reused across sends (HTTP/2 multiplexes APNs sends
over one connection); ``close()`` releases them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import textwrap
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import google.auth.exceptions
import google.auth.transport
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.oauth2 import service_account
from pydantic import ValidationError

from tidings.messaging.channels.base import Outgoing, SendError, Sent
from tidings.messaging.settings import ApnsSettings, FcmSettings, PushSettings

log = logging.getLogger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# Renew the APNs provider token after this long: Apple accepts a token for an hour and answers
# TooManyProviderTokenUpdates when it changes more often than every 20 minutes.
APNS_TOKEN_TTL_SECONDS = 50 * 60
# Fixed namespace for apns-id: the same delivery and device always give the same UUID.
_APNS_ID_NAMESPACE = uuid.UUID("6f1c2f0e-6a39-4b8e-9d0a-3c6a2b1e7d54")

Outcome = Literal["sent", "undeliverable", "transient", "failed"]


def _clock() -> float:
    """Wall-clock seconds; a function of its own so tests can age the APNs token."""
    return time.time()


@dataclass(frozen=True)
class _Result:
    token: str
    platform: str
    outcome: Outcome
    detail: str = ""
    provider_id: str | None = None
    status: int | None = None
    # The failure is the provider's, not the device's (settings missing, no OAuth token): every other device
    # on that platform would fail the same way, so they are not tried.
    shared: bool = False


class _ConfigError(Exception):
    """Settings missing or unusable: the device fails without a request being made."""


# ---------------------------------------------------------------------------------------------------
# google-auth transport on httpx
# ---------------------------------------------------------------------------------------------------


class _GoogleResponse(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class _GoogleRequest(google.auth.transport.Request):
    """google-auth's documented transport interface, implemented on our pooled httpx client (so the token
    request needs neither ``requests`` nor a second connection pool)."""

    def __init__(self, http: httpx.Client, timeout: float) -> None:
        self._http = http
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _GoogleResponse:
        try:
            response = self._http.request(
                method, url, content=body, headers=headers, timeout=timeout or self._timeout
            )
        except httpx.HTTPError as exc:
            # google-auth's own exception types are untyped; this one tells it the request never completed.
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return _GoogleResponse(response)


# ---------------------------------------------------------------------------------------------------
# Caches
# ---------------------------------------------------------------------------------------------------


@dataclass
class _FcmCredentials:
    credentials: service_account.Credentials
    # Serialises refreshes of one service account's token without holding up the others.
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class _ApnsAuth:
    team_id: str
    key_id: str
    private_key: str


@dataclass
class _ApnsKey:
    private_key: ec.EllipticCurvePrivateKey
    token: str | None = None
    issued_at: float = 0.0


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class PushChannel:
    name = "push"

    def __init__(self) -> None:
        self._fcm_http = httpx.Client(follow_redirects=False)
        # APNs speaks HTTP/2 only: with HTTP/1.1 disabled, httpx offers just "h2" in ALPN over TLS and uses
        # HTTP/2 with prior knowledge over cleartext (local stand-ins).
        self._apns_http = httpx.Client(http1=False, http2=True, follow_redirects=False)
        self._lock = threading.Lock()
        self._fcm_credentials: dict[str, _FcmCredentials] = {}
        self._apns_keys: dict[str, _ApnsKey] = {}

    def close(self) -> None:
        self._fcm_http.close()
        self._apns_http.close()

    # -- sending --------------------------------------------------------------------------------------

    def send(self, outgoing: Outgoing) -> Sent:
        settings = _settings(outgoing.settings)
        content = outgoing.content
        devices = _devices(content.get("devices"))
        if not devices:
            raise SendError("the person has no devices to push to", transient=False, undeliverable=True)
        try:
            custom = _custom_payloads(content.get("custom_payload"))
        except ValueError as exc:
            raise SendError(f"custom_payload is not usable: {exc}", transient=False) from exc

        results: list[_Result] = []
        blocked: dict[str, _Result] = {}
        for token, platform in devices:
            if platform in blocked:
                results.append(replace(blocked[platform], token=token))
                continue
            if platform == "android":
                results.append(self._send_fcm(settings.fcm, outgoing, token, custom.get("android")))
            elif platform == "ios":
                results.append(self._send_apns(settings.apns, outgoing, token, custom.get("ios")))
            else:
                results.append(_Result(token, platform, "failed", f"unknown platform {platform!r}"))
            if results[-1].shared:
                blocked[platform] = results[-1]
        return _summarise(outgoing.delivery_id, results)

    # -- FCM ------------------------------------------------------------------------------------------

    def _send_fcm(
        self, settings: FcmSettings, outgoing: Outgoing, token: str, custom: dict[str, Any] | None
    ) -> _Result:
        try:
            if not settings.service_account:
                raise _ConfigError("FCM is not configured: messaging.push.fcm.service_account")
            project = settings.project_id or settings.service_account.get("project_id")
            if not project:
                raise _ConfigError("FCM is not configured: messaging.push.fcm.project_id")
            body = {"message": android_message(outgoing.content, custom, token, outgoing.delivery_id)}
        except _ConfigError as exc:
            return _Result(token, "android", "failed", str(exc), shared=True)
        url = f"{settings.api_url.rstrip('/')}/v1/projects/{project}/messages:send"
        response: httpx.Response | None = None
        # A 401 can mean our cached token was revoked or expired early: fetch a new one and try once more.
        for attempt in range(2):
            try:
                access_token = self._fcm_access_token(settings, force_refresh=attempt > 0)
            except _ConfigError as exc:
                return _Result(token, "android", "failed", str(exc), shared=True)
            except google.auth.exceptions.TransportError as exc:
                detail = f"FCM token endpoint unreachable: {exc}"
                return _Result(token, "android", "transient", detail, shared=True)
            except google.auth.exceptions.RefreshError as exc:
                outcome: Outcome = "transient" if exc.retryable else "failed"
                return _Result(token, "android", outcome, f"FCM token request refused: {exc}", shared=True)
            try:
                response = self._fcm_http.post(
                    url,
                    json=body,
                    headers={"authorization": f"Bearer {access_token}"},
                    timeout=settings.timeout_seconds,
                )
            except httpx.TransportError as exc:
                return _Result(token, "android", "transient", f"FCM unreachable: {exc!r}")
            if response.status_code != 401:
                break
        assert response is not None
        return _fcm_result(token, response)

    def _fcm_access_token(self, settings: FcmSettings, *, force_refresh: bool) -> str:
        info = settings.service_account or {}
        key = _fingerprint(info)
        with self._lock:
            entry = self._fcm_credentials.get(key)
            if entry is None:
                try:
                    # google-auth's constructors and refresh are untyped (its package is only partly
                    # annotated), hence the ignores here and below.
                    credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                        info, scopes=[FCM_SCOPE]
                    )
                except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
                    raise _ConfigError(f"the FCM service account is not usable: {exc}") from exc
                entry = self._fcm_credentials[key] = _FcmCredentials(credentials)
        with entry.lock:
            credentials = entry.credentials
            if force_refresh or not credentials.valid:
                credentials.refresh(  # type: ignore[no-untyped-call]
                    _GoogleRequest(self._fcm_http, settings.timeout_seconds)
                )
            return str(credentials.token)

    # -- APNs -----------------------------------------------------------------------------------------

    def _send_apns(
        self, settings: ApnsSettings, outgoing: Outgoing, token: str, custom: dict[str, Any] | None
    ) -> _Result:
        try:
            if not (settings.team_id and settings.key_id and settings.private_key):
                raise _ConfigError(
                    "APNs is not configured: messaging.push.apns.team_id, key_id and private_key"
                )
            if not settings.topic:
                raise _ConfigError("APNs is not configured: messaging.push.apns.topic (the app's bundle id)")
            auth = _ApnsAuth(settings.team_id, settings.key_id, settings.private_key)
            payload = apns_payload(outgoing.content, custom, token, outgoing.delivery_id)
            provider_token = self._apns_provider_token(auth, force_refresh=False)
        except _ConfigError as exc:
            return _Result(token, "ios", "failed", str(exc), shared=True)
        aps = payload.get("aps")
        background = isinstance(aps, dict) and _is_background(aps)
        headers = {
            "apns-topic": settings.topic,
            # A content-available push with nothing to show must be typed "background" and sent at
            # priority 5, or APNs refuses it (or throttles the app).
            "apns-push-type": "background" if background else "alert",
            "apns-id": apns_id(outgoing.delivery_id, token),
        }
        if background:
            headers["apns-priority"] = "5"
        url = f"{settings.api_url.rstrip('/')}/3/device/{token}"
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        response: httpx.Response | None = None
        for attempt in range(2):
            if attempt:
                # APNs found our cached provider token expired (clock skew, or it outlived a key change).
                provider_token = self._apns_provider_token(auth, force_refresh=True)
            try:
                response = self._apns_http.post(
                    url,
                    content=body,
                    headers={**headers, "authorization": f"bearer {provider_token}"},
                    timeout=settings.timeout_seconds,
                )
            except httpx.TransportError as exc:
                return _Result(token, "ios", "transient", f"APNs unreachable: {exc!r}")
            if not (response.status_code == 403 and _apns_reason(response) == "ExpiredProviderToken"):
                break
        assert response is not None
        return _apns_result(token, response, headers["apns-id"])

    def _apns_provider_token(self, auth: _ApnsAuth, *, force_refresh: bool) -> str:
        key = _fingerprint([auth.team_id, auth.key_id, auth.private_key])
        with self._lock:
            entry = self._apns_keys.get(key)
            if entry is None:
                entry = self._apns_keys[key] = _ApnsKey(_load_apns_key(auth.private_key))
            now = _clock()
            if force_refresh or entry.token is None or now - entry.issued_at >= APNS_TOKEN_TTL_SECONDS:
                entry.token = jwt.encode(
                    {"iss": auth.team_id, "iat": int(now)},
                    entry.private_key,
                    algorithm="ES256",
                    headers={"kid": auth.key_id},
                )
                entry.issued_at = now
            return entry.token


# ---------------------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------------------


def _settings(value: Any) -> PushSettings:
    if isinstance(value, PushSettings):
        return value
    try:
        # Settings straight from the workspace's JSON are accepted too.
        return PushSettings.model_validate(value or {})
    except ValidationError as exc:
        raise SendError(f"messaging.push settings are invalid: {exc}", transient=False) from exc


def apns_id(delivery_id: str, token: str) -> str:
    """The apns-id of one delivery to one device: stable across retries, distinct per device."""
    return str(uuid.uuid5(_APNS_ID_NAMESPACE, f"{delivery_id}:{token}"))


def android_message(
    content: Mapping[str, Any], custom: dict[str, Any] | None, token: str, delivery_id: str
) -> dict[str, Any]:
    """The FCM v1 ``message`` for one Android device."""
    if custom is not None:
        inner = custom.get("message", custom)
        if not isinstance(inner, dict):
            raise _ConfigError("custom_payload.android.message must be an object")
        message = copy.deepcopy(inner)
        # The device is the target; a topic or condition left in the custom payload would make FCM refuse it.
        message.pop("topic", None)
        message.pop("condition", None)
    else:
        message = {}
        notification = _present(
            {"title": content.get("title"), "body": content.get("message"), "image": content.get("image_url")}
        )
        if notification:
            message["notification"] = notification
        data = dict(_mapping(content.get("custom_data")))
        if content.get("link"):
            data["link"] = content["link"]
        message["data"] = data
        if content.get("sound"):
            message["android"] = {"notification": {"sound": str(content["sound"])}}
    message["token"] = token
    data = message.get("data", {})
    if not isinstance(data, dict):
        raise _ConfigError("custom_payload.android data must be an object")
    # FCM data values must be strings.
    message["data"] = {
        str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items() if v is not None
    }
    message["data"]["CIO-Delivery-ID"] = delivery_id
    message["data"]["CIO-Delivery-Token"] = token
    return message


def apns_payload(
    content: Mapping[str, Any], custom: dict[str, Any] | None, token: str, delivery_id: str
) -> dict[str, Any]:
    """The APNs JSON body for one iOS device."""
    if custom is not None:
        payload = copy.deepcopy(custom)
    else:
        # Custom data first, so a key named like ours cannot displace the notification itself.
        payload = dict(_mapping(content.get("custom_data")))
        aps: dict[str, Any] = {}
        alert = _present({"title": content.get("title"), "body": content.get("message")})
        if alert:
            aps["alert"] = alert
        if content.get("sound"):
            aps["sound"] = str(content["sound"])
        if content.get("image_url"):
            aps["mutable-content"] = 1
        payload["aps"] = aps
        cio_push = _present({"link": content.get("link"), "image": content.get("image_url")})
        if cio_push:
            payload["CIO"] = {"push": cio_push}
    payload["CIO-Delivery-ID"] = delivery_id
    payload["CIO-Delivery-Token"] = token
    return payload


def _is_background(aps: Mapping[str, Any]) -> bool:
    return bool(aps.get("content-available")) and not any(k in aps for k in ("alert", "badge", "sound"))


def _present(values: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v not in (None, "")}


def _mapping(value: Any) -> Mapping[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise _ConfigError(f"custom_data is not JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise _ConfigError("custom_data must be an object")
    return value


def _devices(value: Any) -> list[tuple[str, str]]:
    seen: set[str] = set()
    devices: list[tuple[str, str]] = []
    for device in value or []:
        if not isinstance(device, Mapping):
            continue
        token = str(device.get("token") or device.get("id") or "").strip()
        if not token or token in seen:
            continue
        seen.add(token)
        devices.append((token, str(device.get("platform") or "").strip().lower()))
    return devices


def _custom_payloads(value: Any) -> dict[str, dict[str, Any]]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError("it must be an object with 'ios' and/or 'android'")
    payloads: dict[str, dict[str, Any]] = {}
    for platform in ("ios", "android"):
        entry = value.get(platform)
        if entry is None or entry == "":
            continue
        if isinstance(entry, str):
            entry = json.loads(entry)
        if not isinstance(entry, dict):
            raise ValueError(f"custom_payload.{platform} must be an object")
        payloads[platform] = entry
    return payloads


def _load_apns_key(pem: str) -> ec.EllipticCurvePrivateKey:
    text = pem.strip()
    if "-----BEGIN" not in text:
        # The .p8 body pasted without its armour lines.
        body = "".join(text.split())
        text = (
            "-----BEGIN PRIVATE KEY-----\n"
            + "\n".join(textwrap.wrap(body, 64))
            + "\n-----END PRIVATE KEY-----"
        )
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise _ConfigError(f"messaging.push.apns.private_key is not a readable .p8 key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise _ConfigError("messaging.push.apns.private_key must be an EC P-256 key (.p8 from Apple)")
    return key


# ---------------------------------------------------------------------------------------------------
# Provider answers
# ---------------------------------------------------------------------------------------------------


def _fcm_result(token: str, response: httpx.Response) -> _Result:
    status = response.status_code
    if 200 <= status < 300:
        try:
            name = response.json().get("name")
        except ValueError:
            name = None
        return _Result(token, "android", "sent", provider_id=name, status=status)
    error_status, error_code, message, fields = _fcm_error(response)
    detail = f"FCM HTTP {status} {error_code or error_status}: {message}".rstrip(": ")
    if status == 429 or status >= 500:
        return _Result(token, "android", "transient", detail, status=status)
    token_problem = "message.token" in fields or "registration token" in message.lower()
    if error_code in ("UNREGISTERED", "SENDER_ID_MISMATCH") or (status == 400 and token_problem):
        return _Result(token, "android", "undeliverable", detail, status=status)
    # 401 after a fresh token, 403 PERMISSION_DENIED (wrong project or missing role), a payload FCM refuses.
    return _Result(token, "android", "failed", detail, status=status)


def _fcm_error(response: httpx.Response) -> tuple[str, str | None, str, set[str]]:
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return "", None, response.text[:200], set()
    if not isinstance(error, dict):
        return "", None, str(error)[:200], set()
    code: str | None = None
    fields: set[str] = set()
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("errorCode"):
            code = str(detail["errorCode"])
        for violation in detail.get("fieldViolations") or []:
            if isinstance(violation, dict) and violation.get("field"):
                fields.add(str(violation["field"]))
    return str(error.get("status") or ""), code, str(error.get("message") or ""), fields


def _apns_reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("reason") or "")
    except (ValueError, AttributeError):
        return ""


# APNs reasons that condemn the device token itself.
_APNS_BAD_TOKEN_REASONS = frozenset(
    {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}
)


def _apns_result(token: str, response: httpx.Response, sent_id: str) -> _Result:
    status = response.status_code
    if status == 200:
        return _Result(
            token, "ios", "sent", provider_id=response.headers.get("apns-id", sent_id), status=status
        )
    reason = _apns_reason(response)
    detail = f"APNs HTTP {status} {reason}".rstrip()
    if status == 429 or status >= 500:
        return _Result(token, "ios", "transient", detail, status=status)
    if status == 410 or reason in _APNS_BAD_TOKEN_REASONS:
        return _Result(token, "ios", "undeliverable", detail, status=status)
    return _Result(token, "ios", "failed", detail, status=status)


def _summarise(delivery_id: str, results: list[_Result]) -> Sent:
    sent = [r for r in results if r.outcome == "sent"]
    failed = [r for r in results if r.outcome != "sent"]
    for result in failed:
        log.warning(
            "push %s to %s device %s: %s (%s)",
            delivery_id,
            result.platform or "unknown",
            result.token,
            result.outcome,
            result.detail,
        )
    if sent:
        ids = [r.provider_id for r in sent if r.provider_id]
        return Sent(provider_message_id=",".join(ids) or None, recipient=",".join(r.token for r in sent))
    summary = "; ".join(f"{r.platform or 'unknown'} {r.token[:16]}: {r.detail}" for r in failed)
    status = failed[-1].status if failed else None
    if any(r.outcome == "transient" for r in failed):
        raise SendError(f"no device accepted the push, will retry: {summary}", transient=True, status=status)
    if all(r.outcome == "undeliverable" for r in failed):
        raise SendError(
            f"every device refused the push: {summary}", transient=False, undeliverable=True, status=status
        )
    raise SendError(f"the push could not be sent: {summary}", transient=False, status=status)

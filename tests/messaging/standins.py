"""Local stand-ins for the SMS, push and webhook providers, speaking each provider's documented wire format.

The real services cannot be reached from tests, so each stand-in is a small HTTP server on a free port of
127.0.0.1, run by hypercorn in a background thread (hypercorn because APNs is HTTP/2-only and one server
for all four keeps start/stop behaviour identical). Each one:

- is a context manager (``with TwilioStandin() as twilio:``) with ``start()``/``stop()`` and ``.url``;
- records every request it receives in ``.requests`` (a copy, taken under a lock: the server thread
  appends while the test thread reads);
- checks what the provider checks (credentials, required fields, token signatures) and answers with the
  provider's own success and error shapes, so a channel that gets the format wrong fails here as it would
  against the provider;
- can be told to fail the next N requests with a given status (``fail_next``), answering with the
  provider's error body for that status.

APNs is served as cleartext HTTP/2 ("h2c", prior knowledge): httpx speaks it when the client is built
with ``http1=False``, which is also right for the real service (TLS with ALPN "h2" only), so the channel
needs no test-only certificate setting.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import secrets
import socket
import threading
import time
import traceback
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypercorn.asyncio import serve
from hypercorn.config import Config

# The audience Google's token endpoint requires in a service account's JWT-bearer assertion, whatever the
# token_uri the assertion is posted to (google-auth always writes this one).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    # Lower-cased names; a repeated header's values joined with ", " as HTTP allows.
    headers: dict[str, str]
    body: bytes
    # "1.1" or "2", as the server negotiated it.
    http_version: str

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        return cls(status, json.dumps(payload).encode(), (("content-type", "application/json"), *headers))


@dataclass(frozen=True)
class _Failure:
    status: int
    # Provider-specific details of the error (a Twilio code, an FCM errorCode, an APNs reason).
    detail: dict[str, Any]


class _Standin(ABC):
    """A hypercorn server in a thread; subclasses answer requests in ``handle`` (run on the server's event
    loop, so it must not block)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: deque[_Failure] = deque()
        self._errors: list[str] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._port = 0

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> Self:
        # Bind here, not in hypercorn, to learn the free port before the thread starts; listening at once
        # means a client connecting before the loop runs waits in the backlog instead of being refused.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self._port = sock.getsockname()[1]
        config = Config()
        # hypercorn takes ownership of the descriptor (and closes it on shutdown).
        config.bind = [f"fd://{sock.detach()}"]
        config.graceful_timeout = 1.0
        config.accesslog = None
        # Errors in handlers are caught and kept in ``errors``; hypercorn's own log would only duplicate them.
        config.errorlog = None
        self._thread = threading.Thread(
            target=self._run, args=(config,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def _run(self, config: Config) -> None:
        asyncio.run(self._serve(config))

    async def _serve(self, config: Config) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._ready.set()
        await serve(self._asgi, config, shutdown_trigger=self._stop_event.wait, mode="asgi")  # type: ignore[arg-type]

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(15)
        if self._thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} did not stop")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # -- what tests read and control ------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of handler crashes (a crash answers 500, which a test could mistake for a wanted
        failure)."""
        with self._lock:
            return list(self._errors)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(self, count: int, status: int, **detail: Any) -> None:
        """Answer the next ``count`` requests to the provider's main endpoint with ``status`` and the
        provider's error body for it (``detail`` picks the provider's error code or reason)."""
        with self._lock:
            self._failures.extend(_Failure(status, detail) for _ in range(count))

    def _take_failure(self) -> _Failure | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    # -- ASGI -----------------------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunks.append(event.get("body", b""))
            if not event.get("more_body", False):
                break
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            headers=headers,
            body=b"".join(chunks),
            http_version=scope["http_version"],
        )
        with self._lock:
            self._requests.append(request)
        try:
            reply = self.handle(request)
        except Exception:
            with self._lock:
                self._errors.append(traceback.format_exc())
            reply = Reply(500, b"stand-in crashed")
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    @abstractmethod
    def handle(self, request: RecordedRequest) -> Reply:
        """Answer one request, as the provider would."""


def _basic_auth(headers: dict[str, str]) -> tuple[str, str] | None:
    value = headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def _bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    return value[7:] if value.lower().startswith("bearer ") else None


# ----------------------------------------------------------------------------------------------------
# Twilio Programmable Messaging
# ----------------------------------------------------------------------------------------------------

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class TwilioStandin(_Standin):
    """``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``: form-encoded ``To``, ``From`` or
    ``MessagingServiceSid``, ``Body`` and/or repeated ``MediaUrl``; HTTP Basic ``AccountSid:AuthToken``.
    Answers 201 with the Message resource (status "queued", or "accepted" when only a Messaging Service is
    given), or Twilio's error JSON ``{code, message, more_info, status}``.

    ``fail_next(n, status, code=..., message=...)`` picks the Twilio error code (default: 20429 for 429,
    20500 otherwise)."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None) -> None:
        super().__init__()
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        # Numbers that opted out by replying STOP: Twilio refuses them with 21610.
        self.unsubscribed: set[str] = set()

    @staticmethod
    def error(status: int, code: int, message: str) -> Reply:
        return Reply.json(
            status,
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
        )

    def handle(self, request: RecordedRequest) -> Reply:
        match = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)/Messages\.json", request.path)
        if match is None:
            return self.error(404, 20404, f"The requested resource {request.path} was not found")
        if request.method != "POST":
            return self.error(405, 20004, "Method not allowed")
        if _basic_auth(request.headers) != (self.account_sid, self.auth_token):
            return self.error(401, 20003, "Authenticate")
        if match.group(1) != self.account_sid:
            return self.error(404, 20404, f"The requested resource {request.path} was not found")
        failure = self._take_failure()
        if failure is not None:
            code = failure.detail.get("code", 20429 if failure.status == 429 else 20500)
            return self.error(failure.status, code, failure.detail.get("message", "Injected failure"))
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return self.error(400, 20001, "Unsupported content type")
        form = request.form()
        to = form.get("To", [""])[0]
        sender = form.get("From", [None])[0]
        service = form.get("MessagingServiceSid", [None])[0]
        body = form.get("Body", [""])[0]
        media = form.get("MediaUrl", [])
        if not to:
            return self.error(400, 21604, "A 'To' phone number is required.")
        if not _E164.match(to):
            return self.error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not sender and not service:
            return self.error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if not body and not media:
            return self.error(400, 21602, "Message body is required.")
        if to in self.unsubscribed:
            return self.error(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = "SM" + secrets.token_hex(16)
        now = formatdate(usegmt=True)
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        resource = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if sender else "accepted",
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": to,
            "uri": f"{base}.json",
        }
        return Reply.json(201, resource)


# ----------------------------------------------------------------------------------------------------
# Firebase Cloud Messaging HTTP v1 (and Google's OAuth token endpoint)
# ----------------------------------------------------------------------------------------------------

_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]+$")

# FCM v1's canonical status name for each HTTP status it uses.
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
# FcmError.errorCode for each status when a test does not name one.
_FCM_ERROR_CODE = {
    400: "INVALID_ARGUMENT",
    401: "THIRD_PARTY_AUTH_ERROR",
    403: "SENDER_ID_MISMATCH",
    404: "UNREGISTERED",
    429: "QUOTA_EXCEEDED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def make_service_account(token_uri: str, project_id: str = "tidings-test") -> dict[str, Any]:
    """A service account JSON key as the Google Cloud console downloads it, with a fresh RSA key and
    ``token_uri`` pointing where the OAuth token is to be fetched."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    email = f"firebase-adminsdk-test@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }


class FcmStandin(_Standin):
    """Google's OAuth token endpoint (``POST /token``, JWT-bearer grant) and FCM HTTP v1
    (``POST /v1/projects/{project}/messages:send``).

    The token endpoint verifies the assertion's RS256 signature with the service account's public key, its
    ``kid``, ``iss``, ``aud``, ``scope`` and lifetime, and issues an opaque access token valid for
    ``token_lifetime`` seconds. The send endpoint wants one of those tokens as a bearer and answers
    ``{"name": "projects/{p}/messages/{id}"}`` or FCM v1's error JSON.

    Call ``with_service_account(project_id)`` once started to create the service account it trusts.
    ``fail_next(n, status, error_code=...)`` fails sends; ``fail_next_token(n, status)`` fails token
    requests; ``unregistered`` holds tokens FCM answers 404 UNREGISTERED for; ``revoke_tokens()`` makes
    every issued access token invalid (as an expired one would be)."""

    def __init__(self, project_id: str = "tidings-test") -> None:
        super().__init__()
        self.project_id = project_id
        self.service_account: dict[str, Any] = {}
        self.token_lifetime = 3600
        self.unregistered: set[str] = set()
        self._public_key: rsa.RSAPublicKey | None = None
        self._access_tokens: dict[str, float] = {}
        self._token_failures: deque[int] = deque()
        self._message_ids = itertools.count(1)

    def start(self) -> Self:
        super().start()
        self.service_account = make_service_account(f"{self.url}/token", self.project_id)
        key = serialization.load_pem_private_key(self.service_account["private_key"].encode(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        with self._lock:
            self._public_key = key.public_key()
        return self

    def fail_next_token(self, count: int, status: int) -> None:
        with self._lock:
            self._token_failures.extend(status for _ in range(count))

    def revoke_tokens(self) -> None:
        with self._lock:
            self._access_tokens.clear()

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/token"]

    @property
    def sends(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/messages:send")]

    def handle(self, request: RecordedRequest) -> Reply:
        if request.path == "/token" and request.method == "POST":
            return self._token(request)
        match = re.fullmatch(r"/v1/projects/([^/]+)/messages:send", request.path)
        if match is not None and request.method == "POST":
            return self._send(request, match.group(1))
        return self.error(404, "Not found")

    @staticmethod
    def error(status: int, message: str, error_code: str | None = None, **extra: Any) -> Reply:
        details: list[dict[str, Any]] = []
        if error_code is not None:
            details.append(
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}
            )
        if extra.get("field") is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": extra["field"], "description": message}],
                }
            )
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return Reply.json(status, {"error": error})

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> Reply:
        return Reply.json(status, {"error": error, "error_description": description})

    def _token(self, request: RecordedRequest) -> Reply:
        with self._lock:
            failure = self._token_failures.popleft() if self._token_failures else None
            public_key = self._public_key
        if failure is not None:
            return self._oauth_error(failure, "internal_failure", "Injected failure")
        form = request.form()
        if form.get("grant_type") != [JWT_BEARER_GRANT]:
            return self._oauth_error(400, "unsupported_grant_type", "Invalid grant_type")
        assertion = form.get("assertion", [""])[0]
        assert public_key is not None
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                issuer=self.service_account["client_email"],
                options={"require": ["iat", "exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return self._oauth_error(400, "invalid_grant", f"Invalid JWT: {exc}")
        if header.get("kid") != self.service_account["private_key_id"]:
            return self._oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if claims["exp"] - claims["iat"] > 3600:
            return self._oauth_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token")
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            return self._oauth_error(
                400, "invalid_scope", "Invalid OAuth scope or ID token audience provided."
            )
        token = "ya29." + secrets.token_urlsafe(32)
        with self._lock:
            self._access_tokens[token] = time.time() + self.token_lifetime
        return Reply.json(
            200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    def _send(self, request: RecordedRequest, project: str) -> Reply:
        bearer = _bearer(request.headers)
        with self._lock:
            expiry = self._access_tokens.get(bearer or "")
        if expiry is None or expiry < time.time():
            return self.error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.",
            )
        if project != self.project_id:
            return self.error(
                403, f"Permission 'cloudmessaging.messages.create' denied on resource '{project}'"
            )
        failure = self._take_failure()
        if failure is not None:
            code = failure.detail.get("error_code", _FCM_ERROR_CODE.get(failure.status))
            return self.error(failure.status, failure.detail.get("message", "Injected failure"), code)
        try:
            body = request.json()
        except ValueError:
            return self.error(400, "Invalid JSON payload received.")
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return self.error(400, "Invalid JSON payload received. Missing 'message'.", "INVALID_ARGUMENT")
        unknown = set(body) - {"message", "validate_only"}
        if unknown:
            return self.error(400, f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}")
        targets = [k for k in ("token", "topic", "condition") if k in message]
        if len(targets) != 1:
            return self.error(400, "Exactly one of token, topic or condition is required", "INVALID_ARGUMENT")
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return self.error(
                400, "Invalid value at 'message.data': values must be strings", "INVALID_ARGUMENT"
            )
        token = message.get("token")
        if token is not None:
            if not isinstance(token, str) or not _FCM_TOKEN.match(token):
                return self.error(
                    400,
                    "The registration token is not a valid FCM registration token",
                    "INVALID_ARGUMENT",
                    field="message.token",
                )
            if token in self.unregistered:
                return self.error(404, "Requested entity was not found.", "UNREGISTERED")
        return Reply.json(
            200, {"name": f"projects/{project}/messages/0:{int(time.time())}{next(self._message_ids)}"}
        )


# ----------------------------------------------------------------------------------------------------
# Apple Push Notification service (HTTP/2, token-based provider authentication)
# ----------------------------------------------------------------------------------------------------

_APNS_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")
_CANONICAL_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_PUSH_TYPES = {
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
}


def make_apns_key() -> str:
    """An APNs auth key as the .p8 file Apple hands out: an EC P-256 private key, PEM PKCS#8."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def apns_device_token() -> str:
    return secrets.token_hex(32)


class ApnsStandin(_Standin):
    """``POST /3/device/{token}`` over HTTP/2 with token-based authentication: ``authorization: bearer
    <ES256 JWT>`` (header ``kid``, claims ``iss`` = team id and ``iat`` under an hour old), ``apns-topic``
    and ``apns-push-type`` required, ``apns-id`` optional (a canonical UUID, echoed back; generated when
    absent). Answers 200 with ``apns-id`` or ``{"reason": ...}`` (and ``timestamp`` for 410).

    ``unregistered`` holds tokens answered 410 Unregistered; tokens that are not hex are 400
    BadDeviceToken. ``fail_next(n, status, reason=...)`` injects any other answer."""

    def __init__(
        self, team_id: str = "TEAM123456", key_id: str = "KEY1234567", topic: str = "io.tidings.app"
    ) -> None:
        super().__init__()
        self.team_id = team_id
        self.key_id = key_id
        self.topic = topic
        self.private_key = make_apns_key()
        self.unregistered: set[str] = set()
        key = serialization.load_pem_private_key(self.private_key.encode(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._public_key = key.public_key()

    @staticmethod
    def error(status: int, reason: str, apns_id: str) -> Reply:
        payload: dict[str, Any] = {"reason": reason}
        if status == 410:
            payload["timestamp"] = int(time.time() * 1000)
        return Reply.json(status, payload, (("apns-id", apns_id),))

    def handle(self, request: RecordedRequest) -> Reply:
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4()).upper()
        match = re.fullmatch(r"/3/device/([^/]*)", request.path)
        if match is None:
            return self.error(404, "BadPath", apns_id)
        if request.method != "POST":
            return self.error(405, "MethodNotAllowed", apns_id)
        if request.http_version != "2":
            # The real service only speaks HTTP/2; answer as it would refuse a bad request.
            return self.error(400, "BadRequest", apns_id)
        if not _CANONICAL_UUID.match(apns_id):
            return self.error(400, "BadMessageId", apns_id)
        auth = self._check_provider_token(request.headers)
        if auth is not None:
            return self.error(403, auth, apns_id)
        topic = request.headers.get("apns-topic")
        if not topic:
            return self.error(400, "MissingTopic", apns_id)
        if topic != self.topic:
            return self.error(400, "TopicDisallowed", apns_id)
        if request.headers.get("apns-push-type") not in _PUSH_TYPES:
            return self.error(400, "InvalidPushType", apns_id)
        if request.headers.get("apns-priority", "10") not in {"1", "5", "10"}:
            return self.error(400, "BadPriority", apns_id)
        failure = self._take_failure()
        if failure is not None:
            reason = failure.detail.get("reason", "InternalServerError")
            return self.error(failure.status, reason, apns_id)
        token = match.group(1)
        if not token:
            return self.error(400, "MissingDeviceToken", apns_id)
        if not _APNS_TOKEN.match(token):
            return self.error(400, "BadDeviceToken", apns_id)
        if not request.body:
            return self.error(400, "PayloadEmpty", apns_id)
        if len(request.body) > 4096:
            return self.error(413, "PayloadTooLarge", apns_id)
        try:
            payload = request.json()
        except ValueError:
            return self.error(400, "PayloadEmpty", apns_id)
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return self.error(400, "PayloadEmpty", apns_id)
        if token in self.unregistered:
            return self.error(410, "Unregistered", apns_id)
        return Reply(200, b"", (("apns-id", apns_id),))

    def _check_provider_token(self, headers: dict[str, str]) -> str | None:
        value = headers.get("authorization", "")
        if not value.startswith("bearer "):
            return "MissingProviderToken"
        token = value[7:]
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": True},
            )
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if header.get("kid") != self.key_id or header.get("alg") != "ES256":
            return "InvalidProviderToken"
        if claims.get("iss") != self.team_id:
            return "InvalidProviderToken"
        if time.time() - int(claims["iat"]) > 3600:
            return "ExpiredProviderToken"
        return None


# ----------------------------------------------------------------------------------------------------
# A webhook receiver
# ----------------------------------------------------------------------------------------------------


class WebhookReceiver(_Standin):
    """Accepts any method on any path and answers ``status`` (200 unless set) with ``response_body``;
    ``fail_next(n, status)`` overrides the status for the next N requests."""

    def __init__(self, status: int = 200, response_body: bytes = b'{"ok":true}') -> None:
        super().__init__()
        self.status = status
        self.response_body = response_body

    def handle(self, request: RecordedRequest) -> Reply:
        failure = self._take_failure()
        status = failure.status if failure is not None else self.status
        return Reply(status, self.response_body, (("content-type", "application/json"),))


def unused_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused): a provider that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"

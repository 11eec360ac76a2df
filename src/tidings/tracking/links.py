"""Signed links for a delivery: click redirects, the open pixel, unsubscribe and preferences pages.

Every link carries its payload signed (HMAC-SHA256) with the workspace's link-signing key, so a click
redirect only goes to a URL Tidings itself put in a message (no open redirect) and an unsubscribe link
cannot be forged for someone else's delivery. The workspace id is in the path in clear, because the
verifier needs it to choose the key. Keys are ``link_signing`` credentials, made on first use; if two
processes make one at the same moment both stay valid, since verification tries each of the workspace's
keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.ids import hash_secret, new_secret
from tidings.models import Credential

LINK_KEY_KIND = "link_signing"
# One salt per link purpose: a token made for one purpose is refused by every other.
CLICK, OPEN, UNSUBSCRIBE, PREFERENCES, VIEW, CONSENT = (
    "click",
    "open",
    "unsubscribe",
    "preferences",
    "view",
    "consent",
)

_keys: dict[int, list[str]] = {}
_keys_lock = threading.Lock()


def link_keys(session: Session, workspace_id: int, *, create: bool = True, cached: bool = True) -> list[str]:
    """The workspace's link-signing keys, newest first. Cached per process; a verifier that fails with
    the cached keys asks again with ``cached=False``, in case another process has made a key since."""
    with _keys_lock:
        known = _keys.get(workspace_id) if cached else None
    if known:
        return known
    keys = list(
        session.scalars(
            select(Credential.secret_plain)
            .where(
                Credential.workspace_id == workspace_id,
                Credential.kind == LINK_KEY_KIND,
                Credential.revoked_at.is_(None),
                Credential.secret_plain.is_not(None),
            )
            .order_by(Credential.id.desc())
        )
    )
    found = [key for key in keys if key]
    if not found and create:
        secret = new_secret("lnk_")
        session.add(
            Credential(
                workspace_id=workspace_id,
                kind=LINK_KEY_KIND,
                name="link signing",
                secret_hash=hash_secret(secret),
                secret_plain=secret,
                hint=secret[:8],
                created_at=0,
            )
        )
        session.flush()
        found = [secret]
    if found:
        with _keys_lock:
            _keys[workspace_id] = found
    return found


class BadLink(ValueError):
    """A token that was not signed with the workspace's key for this purpose, or is malformed."""


@lru_cache(maxsize=1024)
def _mac(key: str, purpose: str) -> hmac.HMAC:
    # A keyed MAC per key and purpose, copied for each token: a message carries about five signed links,
    # so signing is on the render hot path (itsdangerous' serializer cost ~9 µs a link; this ~2 µs).
    return hmac.new(key.encode(), purpose.encode() + b"\x00", hashlib.sha256)


def _signature(key: str, purpose: str, data: bytes) -> bytes:
    mac = _mac(key, purpose).copy()
    mac.update(data)
    return base64.urlsafe_b64encode(mac.digest()[:18])


def sign(key: str, purpose: str, payload: Any) -> str:
    """``<base64url JSON payload>.<base64url HMAC-SHA256, 144 bits>``; the purpose is under the MAC."""
    data = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
    return (data + b"." + _signature(key, purpose, data)).decode()


def verify(keys: list[str], purpose: str, token: str) -> Any:
    """The payload of a token signed with one of ``keys`` for ``purpose``; BadLink otherwise."""
    data, dot, signature = token.encode("ascii", "replace").rpartition(b".")
    if not dot or not data:
        raise BadLink("malformed link token")
    for key in keys:
        if hmac.compare_digest(_signature(key, purpose, data), signature):
            try:
                return orjson.loads(base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4)))
            except (ValueError, orjson.JSONDecodeError) as exc:
                raise BadLink("malformed link payload") from exc
    raise BadLink("link signature does not match")


def link_id(url: str) -> int:
    """A stable number for a link (Tidings keeps no link table), so clicks on the same link group
    together: 48 bits of its hash, an integer as Customer.io's webhooks carry, and safe in JavaScript."""
    return int.from_bytes(hashlib.sha256(url.encode()).digest()[:6], "big")


@dataclass
class DeliveryLinks:
    """The links of one delivery; implements ``tidings.messaging.liquid.Links``."""

    public_url: str
    workspace_id: int
    delivery_id: str
    key: str
    topic: str = ""

    def _url(self, prefix: str, purpose: str, payload: Any) -> str:
        return (
            f"{self.public_url.rstrip('/')}/{prefix}/{self.workspace_id}/{sign(self.key, purpose, payload)}"
        )

    def tracked(self, url: str) -> str:
        return self._url("c", CLICK, [self.delivery_id, url])

    def link_id(self, url: str) -> str:
        return str(link_id(url))

    def open_pixel_url(self) -> str:
        return self._url("o", OPEN, [self.delivery_id])

    def unsubscribe_url(self) -> str:
        return self._url("u", UNSUBSCRIBE, [self.delivery_id])

    def subscription_preferences_url(self) -> str:
        return self._url("p", PREFERENCES, [self.delivery_id])

    def view_in_browser_url(self) -> str:
        return self._url("v", VIEW, [self.delivery_id])

    def tracking_consent_url(self) -> str:
        return self._url("t", CONSENT, [self.delivery_id])

    def topic_name(self, language: str | None) -> str:
        return self.topic


def delivery_links(
    session: Session, workspace_id: int, delivery_id: str, *, public_url: str, topic: str = ""
) -> DeliveryLinks:
    return DeliveryLinks(public_url, workspace_id, delivery_id, link_keys(session, workspace_id)[0], topic)

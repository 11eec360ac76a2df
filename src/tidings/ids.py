"""Identifier and secret generation."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from ulid import ULID

_ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")


def new_ulid() -> str:
    return str(ULID())


def is_ulid(value: str) -> bool:
    return bool(_ULID_RE.match(value))


def new_cio_id() -> str:
    """Customer.io's cio_ids are short lowercase hex strings such as ``d9c106000001``."""
    return secrets.token_hex(6)


def new_secret(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(20)}"


def new_site_id() -> str:
    return secrets.token_hex(10)


def hash_secret(secret: str) -> str:
    # Secrets are 160 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_delivery_id() -> str:
    """Customer.io's delivery ids are URL-safe base64 strings; this one wraps a ULID's 16 bytes, so it
    is unique without coordination between processes."""
    return base64.urlsafe_b64encode(ULID().bytes).decode()

"""Identifier and secret generation."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import threading
import time

_ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as its two characters: an id's last 20 bits are two lookups.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_RANDOM_BITS = 80


class _UlidClock:
    """Monotonic ULIDs (the spec's "monotonic" mode): a new millisecond starts from 80 fresh random bits,
    later ids in the same millisecond add one. Uniqueness across processes rests on the random start.

    Written here rather than taken from python-ulid, whose generator cost ~3.4 µs an id: the ingestion
    paths make two ids per event (the event's and its activity entry's), and that was 18 % of a batch's
    CPU. This one draws randomness once per millisecond, and consecutive ids share their first 22
    characters, so most cost two table lookups (see ``_encode``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = 0
        self._random = 0
        # A forked child must not continue its parent's sequence within the same millisecond.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._ms = self._random = 0

    def take(self, count: int) -> tuple[int, int]:
        """``count`` consecutive values: (milliseconds, first random part)."""
        now = time.time_ns() // 1_000_000
        with self._lock:
            if now > self._ms:
                self._ms, start = now, int.from_bytes(os.urandom(10))
            else:  # the same millisecond, or the clock stepped back: keep counting from the last id
                start = self._random + 1
            if start + count > 1 << _RANDOM_BITS:
                # The random part would overflow: move to the next millisecond, with room to count.
                self._ms, start = self._ms + 1, int.from_bytes(os.urandom(10)) >> 1
            self._random = start + count - 1
            return self._ms, start


_CLOCK = _UlidClock()


def _encode_head(head: int) -> str:
    """The first 22 characters: ``head`` is the ULID without its last 20 bits (110 bits, 11 pairs)."""
    return "".join(_PAIRS[(head >> shift) & 1023] for shift in range(100, -10, -10))


class _HeadCache:
    """The last head encoded, shared by the threads (replaced whole, so a reader sees a matching pair)."""

    last: tuple[int, str] = (-1, "")


def _encode(value: int) -> str:
    head, text = _HeadCache.last
    if value >> 20 != head:
        head = value >> 20
        text = _encode_head(head)
        _HeadCache.last = (head, text)
    low = value & 0xFFFFF
    return text + _PAIRS[low >> 10] + _PAIRS[low & 1023]


def new_ulid() -> str:
    ms, random_part = _CLOCK.take(1)
    return _encode(ms << _RANDOM_BITS | random_part)


def new_ulids(count: int) -> list[str]:
    """``count`` ULIDs in ascending order, for a batch (one lock and one clock read for all)."""
    ms, start = _CLOCK.take(count)
    first = ms << _RANDOM_BITS | start
    return [_encode(value) for value in range(first, first + count)]


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
    ms, random_part = _CLOCK.take(1)
    return base64.urlsafe_b64encode((ms << _RANDOM_BITS | random_part).to_bytes(16)).decode()

"""Generated ULIDs follow the spec (Crockford base32, 48-bit millisecond time, 80 random bits), ascend
within a process, and a forked child (a pre-fork server's worker) does not repeat its parent's sequence."""

from __future__ import annotations

import base64
import os
import time

from tidings.ids import is_ulid, new_delivery_id, new_ulid, new_ulids

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def decode(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + ALPHABET.index(char)
    assert value < 1 << 128
    return value


def test_ids_carry_the_time_and_ascend() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_ulid() for _ in range(500)] + new_ulids(5000) + [new_ulid()]
    after = time.time_ns() // 1_000_000
    assert all(is_ulid(i) and len(i) == 26 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    values = [decode(i) for i in ids]
    assert values == sorted(values)
    assert all(before <= v >> 80 <= after + 1 for v in values)
    # Random parts: ids of different milliseconds do not continue one another.
    starts = {v >> 80: v & ((1 << 80) - 1) for v in reversed(values)}
    assert len(set(starts.values())) == len(starts)


def test_delivery_ids_wrap_sixteen_bytes() -> None:
    raw = [base64.urlsafe_b64decode(new_delivery_id()) for _ in range(100)]
    assert all(len(r) == 16 for r in raw)
    assert len(set(raw)) == 100
    now = time.time_ns() // 1_000_000
    assert all(abs((int.from_bytes(r) >> 80) - now) < 5_000 for r in raw)


def test_a_forked_child_starts_its_own_sequence() -> None:
    new_ulids(10)  # the parent is mid-millisecond, with a sequence under way
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, " ".join(new_ulids(1000)).encode())
        os._exit(0)
    os.close(write)
    parent = set(new_ulids(1000))
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    child = set(b"".join(chunks).decode().split())
    assert len(child) == 1000
    assert not parent & child

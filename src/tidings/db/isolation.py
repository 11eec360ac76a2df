"""Applying many items in one transaction so that a bad item costs only itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy.orm import Session

from tidings.errors import TidingsError

Item = TypeVar("Item")


def apply_each(
    session: Session, items: Sequence[Item], apply: Callable[[Item], object]
) -> list[tuple[Item, TidingsError]]:
    """Apply every item; return the ones refused, each rolled back alone.

    All items are tried first under one savepoint, because a savepoint per item costs about as much as
    the item itself and nearly every batch is clean. Only when an item is refused is the batch re-run
    with a savepoint per item.
    """
    try:
        with session.begin_nested():
            for item in items:
                apply(item)
            session.flush()
        return []
    except TidingsError:
        pass
    refused: list[tuple[Item, TidingsError]] = []
    for item in items:
        try:
            with session.begin_nested():
                apply(item)
        except TidingsError as exc:
            refused.append((item, exc))
    return refused

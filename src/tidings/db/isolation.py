"""Applying many items in one transaction so that a bad item costs only itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy.orm import Session

from tidings import signals
from tidings.errors import TidingsError

Item = TypeVar("Item")


def apply_each(
    session: Session,
    items: Sequence[Item],
    apply: Callable[[Item], object],
    *,
    together: Callable[[Sequence[Item]], object] | None = None,
) -> list[tuple[Item, TidingsError]]:
    """Apply every item; return the ones refused, each rolled back alone.

    All items are tried first under one savepoint, because a savepoint per item costs about as much as
    the item itself and nearly every batch is clean; ``together``, when given, applies them in that
    first pass as a set (fewer statements than one item at a time). Only when an item is refused is the
    batch re-run one item at a time, each in its own savepoint. A rolled-back attempt's campaign notes
    are forgotten with it.
    """
    noted = signals.mark(session)
    try:
        with session.begin_nested():
            if together is not None:
                together(items)
            else:
                for item in items:
                    apply(item)
            session.flush()
        return []
    except TidingsError:
        signals.rewind(session, noted)
    refused: list[tuple[Item, TidingsError]] = []
    for item in items:
        noted = signals.mark(session)
        try:
            with session.begin_nested():
                apply(item)
        except TidingsError as exc:
            signals.rewind(session, noted)
            refused.append((item, exc))
    return refused

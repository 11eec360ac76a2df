"""Customer search (``POST /v1/customers``): Customer.io's filter grammar, which is the condition model of
:mod:`tidings.segments.conditions` (so every segment condition is also a search filter), evaluated
with the same SQL as segments, a page at a time in person-key order."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.errors import InvalidInput
from tidings.models import Person, Segment
from tidings.segments import compiler
from tidings.segments.conditions import Condition, ConditionError, dependencies, parse

MAX_SEARCH_PAGE = 1000


def search(
    session: Session, workspace_id: int, body: Any, *, start: str | None, limit: int, now: int
) -> dict[str, Any]:
    if not isinstance(body, dict) or "filter" not in body:
        raise InvalidInput('body must be {"filter": {...}}', field="filter")
    if not 1 <= limit <= MAX_SEARCH_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_SEARCH_PAGE}", field="limit")
    condition = parse(body["filter"], "filter")
    used = dependencies(condition).segments
    if used:
        known = set(
            session.scalars(
                select(Segment.id).where(Segment.workspace_id == workspace_id, Segment.id.in_(used))
            )
        )
        for segment_id in sorted(used - known):
            raise ConditionError(f"filter: segment {segment_id} does not exist", field="filter")
    after = 0
    if start:
        if not start.isdigit():
            raise InvalidInput("start is not a cursor this endpoint returned", field="start")
        after = int(start)
    rows = session.execute(
        select(Person.id, Person.customer_id, Person.email, Person.cio_id)
        .where(
            Person.workspace_id == workspace_id,
            Person.id > after,
            compiler.predicate(condition, compiler.Context(workspace_id=workspace_id, now=now)),
        )
        .order_by(Person.id)
        .limit(limit + 1)
    ).all()
    page = rows[:limit]
    return {
        "identifiers": [
            {"id": r.customer_id or "", "email": r.email or "", "cio_id": r.cio_id} for r in page
        ],
        "ids": [r.customer_id or "" for r in page],
        "next": str(page[-1].id) if len(rows) > limit else "",
    }


def holds(session: Session, workspace_id: int, document: Any, person_ids: list[int], *, now: int) -> set[int]:
    """Which of these people a condition document holds for now (campaign filters, branches, waits)."""
    if not person_ids:
        return set()
    condition = _parsed(document)
    return set(
        session.scalars(
            select(Person.id).where(
                Person.workspace_id == workspace_id,
                Person.id.in_(person_ids),
                compiler.predicate(condition, compiler.Context(workspace_id=workspace_id, now=now)),
            )
        )
    )


def _parsed(document: Any) -> Condition:
    # Campaign definitions hold the same few documents and run them for every journey step.
    key = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    found = _PARSED.get(key)
    if found is None:
        found = parse(document, "condition")
        if len(_PARSED) > 4096:
            _PARSED.clear()
        _PARSED[key] = found
    return found


_PARSED: dict[bytes, Condition] = {}

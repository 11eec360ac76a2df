"""Dependency levels of real-time evaluation: segments judged together never use one another, and every
segment comes after the segments it uses (a change of membership in one is seen by its users)."""

from __future__ import annotations

from typing import Any

from tidings.segments.conditions import dependencies, parse
from tidings.segments.realtime import Definition, dependency_levels, dependency_order


def _definitions(documents: dict[int, Any]) -> dict[int, Definition]:
    found = {}
    for segment_id, document in documents.items():
        condition = parse(document)
        found[segment_id] = Definition(segment_id, 1, condition, dependencies(condition))
    return found


def _levels(documents: dict[int, Any]) -> list[list[int]]:
    found = _definitions(documents)
    ordered = tuple(found[i] for i in dependency_order(found))
    return [[d.id for d in level] for level in dependency_levels(ordered)]


PLAN: Any = {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}
PAID: Any = {"event": {"name": "paid"}}


def test_independent_segments_share_one_level() -> None:
    assert _levels({1: PLAN, 2: PAID, 3: {"not": PLAN}}) == [[1, 2, 3]]


def test_users_come_a_level_after_what_they_use() -> None:
    documents = {
        1: PLAN,
        2: PAID,
        3: {"and": [{"segment": {"id": 1}}, PAID]},  # uses 1
        4: {"or": [{"segment": {"id": 3}}, {"segment": {"id": 2}}]},  # uses 3 (level 1) and 2
        5: {"segment": {"id": 2}},  # uses 2
        6: {"segment": {"id": 99}},  # a manual segment: not evaluated, so level 0
    }
    assert _levels(documents) == [[1, 2, 6], [3, 5], [4]]


def test_a_cycle_that_slipped_in_still_yields_every_segment_once() -> None:
    levels = _levels({1: {"segment": {"id": 2}}, 2: {"segment": {"id": 1}}, 3: PLAN})
    assert sorted(i for level in levels for i in level) == [1, 2, 3]

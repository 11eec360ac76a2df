"""The segment condition contract of ``tidings.segments.compiler``, in plain Python over in-memory data.

This is the reference the SQL is held to: it follows the contract in the compiler's module docstring
line by line, with no SQL in sight.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from tidings.segments.compiler import HORIZON
from tidings.segments.conditions import (
    DAY,
    And,
    AttributeCondition,
    Condition,
    DeviceCondition,
    EventCondition,
    InSegment,
    MessageCondition,
    NameMatch,
    Not,
    ObjectCondition,
    Or,
    Test,
    dependencies,
)

PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
EXACT_INTEGERS = 2**53


@dataclass
class EventRow:
    type: str
    name: str
    timestamp: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RelationshipRow:
    type_id: str
    object_attributes: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeliveryRow:
    channel: str
    created_at: int
    # (metric, timestamp)
    reports: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class PersonData:
    cio_id: str
    created_at: int
    customer_id: str | None = None
    email: str | None = None
    unsubscribed: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[EventRow] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)  # platforms
    relationships: list[RelationshipRow] = field(default_factory=list)
    segments: set[int] = field(default_factory=set)
    deliveries: list[DeliveryRow] = field(default_factory=list)


# -- reading values ---------------------------------------------------------------------------------------


def clamp(number: float) -> float:
    if abs(number) < 1e-300:
        return 0.0
    return max(-1e300, min(1e300, number))


def text_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < EXACT_INTEGERS:
            return str(int(value))
        return repr(value)
    return None


def num_of(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return clamp(float(value))
        except OverflowError:
            return clamp(math.copysign(math.inf, value))
    if isinstance(value, float):
        return clamp(value)
    if isinstance(value, str) and PLAIN_NUMBER.fullmatch(value):
        return clamp(float(value))
    return None


@dataclass(frozen=True)
class Reading:
    present: bool
    text: str | None
    number: float | None


def json_reading(document: dict[str, Any], key: str) -> Reading:
    value = document.get(key)
    return Reading(present=value is not None, text=text_of(value), number=num_of(value))


def person_reading(person: PersonData, name: str) -> Reading:
    if name in ("id", "email", "cio_id"):
        value = {"id": person.customer_id, "email": person.email, "cio_id": person.cio_id}[name]
        return Reading(present=value is not None, text=value, number=num_of(value))
    if name == "created_at":
        return Reading(present=True, text=str(person.created_at), number=float(person.created_at))
    if name == "unsubscribed":
        return Reading(present=True, text=text_of(person.unsubscribed), number=None)
    return json_reading(person.attributes, name)


# -- tests ------------------------------------------------------------------------------------------------


def text_matches(text: str | None, operator: str, value: str) -> bool:
    if text is None:
        return False
    if operator == "eq":
        return text == value
    if operator == "contains":
        return value in text
    if operator == "starts_with":
        return text.startswith(value)
    if operator == "ends_with":
        return text.endswith(value)
    raise ValueError(operator)


def passes(reading: Reading, test: Test, now: int) -> bool:
    operator, value = test.operator, test.value
    number = reading.number
    result: bool
    if operator == "exists":
        result = reading.present
    elif operator in ("eq", "contains", "starts_with", "ends_with"):
        result = text_matches(reading.text, operator, value)
    elif operator == "in":
        result = reading.text is not None and reading.text in value
    elif operator == "is_true":
        result = reading.text == "true"
    elif operator == "is_false":
        result = reading.text == "false"
    elif number is None:
        result = False
    elif operator == "gt":
        result = number > value
    elif operator == "gte":
        result = number >= value
    elif operator == "lt":
        result = number < value
    elif operator == "lte":
        result = number <= value
    elif operator == "between":
        result = value[0] <= number <= value[1]
    elif operator == "older_than":
        result = number < now - value * DAY
    elif operator == "newer_than":
        result = now - value * DAY <= number <= now
    elif operator == "within_next":
        result = now <= number <= now + value * DAY
    else:
        raise ValueError(operator)
    return result != test.inverse


def name_matches(name: str, match: NameMatch | None) -> bool:
    return match is None or text_matches(name, match.operator, match.value)


def matching_events(person: PersonData, condition: EventCondition, now: int) -> list[EventRow]:
    return [
        event
        for event in person.events
        if event.type == condition.type
        and name_matches(event.name, condition.name)
        and all(passes(json_reading(event.data, test.field), test, now) for test in condition.filters)
    ]


def message_times(person: PersonData, condition: MessageCondition) -> list[int]:
    """When the matching deliveries were sent (the tests send them as they are created), or the
    timestamps of the matching reports."""
    deliveries = [d for d in person.deliveries if condition.channel is None or d.channel == condition.channel]
    if condition.activity == "sent":
        return [d.created_at for d in deliveries]
    return [stamp for d in deliveries for metric, stamp in d.reports if metric == condition.activity]


def in_window(stamp: int, days: float | None, now: int) -> bool:
    return days is None or stamp >= now - days * DAY


# -- evaluate ---------------------------------------------------------------------------------------------


def evaluate(condition: Condition, person: PersonData, now: int) -> bool:
    if isinstance(condition, And):
        return all(evaluate(item, person, now) for item in condition.items)
    if isinstance(condition, Or):
        return any(evaluate(item, person, now) for item in condition.items)
    if isinstance(condition, Not):
        return not evaluate(condition.item, person, now)
    if isinstance(condition, AttributeCondition):
        return passes(person_reading(person, condition.test.field), condition.test, now)
    result: bool
    if isinstance(condition, InSegment):
        result = condition.segment_id in person.segments
    elif isinstance(condition, EventCondition):
        result = event_holds(condition, person, now)
    elif isinstance(condition, DeviceCondition):
        result = any(condition.platform is None or p == condition.platform for p in person.devices)
    elif isinstance(condition, ObjectCondition):
        result = any(
            r.type_id == condition.type_id
            and all(passes(json_reading(r.object_attributes, t.field), t, now) for t in condition.filters)
            and all(
                passes(json_reading(r.attributes, t.field), t, now) for t in condition.relationship_filters
            )
            for r in person.relationships
        )
    elif isinstance(condition, MessageCondition):
        result = any(in_window(s, condition.within_days, now) for s in message_times(person, condition))
    else:
        raise TypeError(condition)
    return result != condition.inverse


def event_holds(condition: EventCondition, person: PersonData, now: int) -> bool:
    events = matching_events(person, condition, now)
    if condition.timing is not None:
        if not events:
            return False
        stamps = [e.timestamp for e in events]
        stamp = min(stamps) if condition.timing.which == "first" else max(stamps)
        since = now - condition.timing.days * DAY
        if condition.timing.operator == "older_than":
            return stamp < since
        return since <= stamp <= now
    count = sum(1 for e in events if in_window(e.timestamp, condition.within_days, now))
    if condition.count_operator == "at_least":
        return count >= condition.count
    if condition.count_operator == "at_most":
        return count <= condition.count
    return count == condition.count


# -- next_change ------------------------------------------------------------------------------------------


def next_change_py(condition: Condition, person: PersonData, now: int) -> int | None:
    """The condition's next_change (see the contract): the first instant > now at which its result could
    change with no new data, or None."""
    if isinstance(condition, Not):
        return next_change_py(condition.item, person, now)
    if isinstance(condition, And | Or):
        untimed = [item for item in condition.items if not dependencies(item).timed]
        held = [evaluate(item, person, now) for item in untimed]
        # A false untimed item decides an and, a true one an or, until data changes.
        if (isinstance(condition, And) and not all(held)) or (isinstance(condition, Or) and any(held)):
            return None
        dues = [next_change_py(item, person, now) for item in condition.items if dependencies(item).timed]
        return min((due for due in dues if due is not None), default=None)
    candidates = [c for c in leaf_candidates(condition, person, now) if c is not None and c > now]
    return min(candidates, default=None)


def after(y: float) -> int:
    """The first whole second past y, capped at HORIZON."""
    return min(math.floor(y) + 1, HORIZON)


def at(y: float) -> int:
    """The first whole second at or past y, capped at HORIZON."""
    return min(math.ceil(y), HORIZON)


def first_ahead(now: int, *candidates: int) -> int | None:
    return next((c for c in candidates if c > now), None)


def leaf_candidates(condition: Condition, person: PersonData, now: int) -> list[int | None]:
    if isinstance(condition, AttributeCondition):
        test = condition.test
        x = person_reading(person, test.field).number
        if x is None or test.operator not in ("older_than", "newer_than", "within_next"):
            return []
        span = float(test.value * DAY)
        if test.operator == "older_than":
            return [first_ahead(now, after(x + span))]
        if test.operator == "newer_than":
            return [first_ahead(now, at(x), after(x + span))]
        return [first_ahead(now, at(x - span), after(x))]
    if isinstance(condition, EventCondition):
        events = matching_events(person, condition, now)
        if condition.timing is not None:
            if not events:
                return []
            stamps = [e.timestamp for e in events]
            stamp = min(stamps) if condition.timing.which == "first" else max(stamps)
            leaves = min(stamp + math.floor(condition.timing.days * DAY) + 1, HORIZON)
            if condition.timing.operator == "newer_than":
                return [first_ahead(now, min(stamp, HORIZON), leaves)]
            return [first_ahead(now, leaves)]
        days = condition.within_days
        if days is None:
            return []
        inside = [e.timestamp for e in events if in_window(e.timestamp, days, now)]
        n = condition.count
        # The count only falls as time passes: at_least n can only become false, at_most n only true.
        if condition.count_operator == "at_least":
            return [nth_leaves(inside, n, days, now)] if n > 0 else []
        if condition.count_operator == "at_most":
            return [nth_leaves(inside, n + 1, days, now)]
        more = nth_leaves(inside, n + 1, days, now)
        if more is not None or n == 0:
            return [more]
        return [nth_leaves(inside, n, days, now)]
    if isinstance(condition, MessageCondition):
        if condition.within_days is None:
            return []
        inside = [s for s in message_times(person, condition) if in_window(s, condition.within_days, now)]
        return [nth_leaves(inside, 1, condition.within_days, now)]
    return []


def nth_leaves(stamps: list[int], n: int, days: float, now: int) -> int | None:
    """When the n-th latest of ``stamps`` (those inside a window of ``days``) leaves the window, or None
    with fewer than n."""
    if len(stamps) < n:
        return None
    nth = sorted(stamps, reverse=True)[n - 1]
    return first_ahead(now, min(nth + math.floor(days * DAY) + 1, HORIZON))

"""The condition document of a data-driven segment, and of customer search filters.

The grammar is Customer.io's filter grammar (``and`` / ``or`` / ``not`` / ``segment`` / ``attribute`` with
``eq`` and ``exists`` and ``inverse``), extended with the rest of Customer.io's segment builder: more
attribute operators, events, page and screen views, devices, related objects and message activity.
docs/segments.md describes every form with examples; this module parses a document into an immutable
tree, naming the offending path in every error, and tells what a condition depends on so that a change can
re-evaluate only the segments it can affect.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from tidings.errors import InvalidInput

DAY = 86400

# Attribute operators. Customer.io's own two first; the others are Tidings' documented extension.
TEXT_OPERATORS = frozenset({"eq", "contains", "starts_with", "ends_with"})
NUMBER_OPERATORS = frozenset({"gt", "gte", "lt", "lte"})
RELATIVE_OPERATORS = frozenset({"older_than", "newer_than", "within_next"})
OPERATORS = (
    TEXT_OPERATORS
    | NUMBER_OPERATORS
    | RELATIVE_OPERATORS
    | frozenset({"exists", "between", "in", "is_true", "is_false"})
)
# Fields of a person that are not custom attributes; conditions name them like attributes.
PERSON_FIELDS = frozenset({"id", "email", "cio_id", "created_at", "unsubscribed"})
EVENT_TYPES = ("event", "page", "screen")
COUNT_OPERATORS = ("at_least", "at_most", "exactly")
MESSAGE_ACTIVITIES = ("sent", "delivered", "opened", "clicked", "converted", "bounced", "unsubscribed")
MAX_DEPTH = 20
MAX_LEAVES = 200


class ConditionError(InvalidInput):
    """A condition document that cannot be used; ``field`` is the path of the offending part."""


@dataclass(frozen=True)
class Test:
    """A test of one value: a person's attribute, an event property, an object or relationship attribute.
    ``value`` is a string for text operators, a float for number operators, a tuple for ``in`` and
    ``between``, and a number of days for the relative ones."""

    field: str
    operator: str
    value: Any = None
    inverse: bool = False


@dataclass(frozen=True)
class And:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


@dataclass(frozen=True)
class InSegment:
    segment_id: int
    inverse: bool = False


@dataclass(frozen=True)
class AttributeCondition:
    test: Test


@dataclass(frozen=True)
class NameMatch:
    """How an event's name (a page's URL, a screen's name) must match: ``eq`` unless stated."""

    operator: str
    value: str


@dataclass(frozen=True)
class EventCondition:
    """Performed (or, with ``inverse``, did not perform) an event, page view or screen view.

    Either counted (``count`` times, within the last ``within_days`` days or ever) or timed
    (``timing``: when it was first or last performed)."""

    type: str
    name: NameMatch | None
    filters: tuple[Test, ...] = ()
    count_operator: str = "at_least"
    count: int = 1
    within_days: float | None = None
    timing: Timing | None = None
    inverse: bool = False


@dataclass(frozen=True)
class Timing:
    which: Literal["first", "last"]
    operator: Literal["older_than", "newer_than"]
    days: float


@dataclass(frozen=True)
class DeviceCondition:
    platform: str | None = None
    inverse: bool = False


@dataclass(frozen=True)
class ObjectCondition:
    """Related to an object of ``type_id`` whose attributes (and relationship attributes) pass."""

    type_id: str
    filters: tuple[Test, ...] = ()
    relationship_filters: tuple[Test, ...] = ()
    inverse: bool = False


@dataclass(frozen=True)
class MessageCondition:
    activity: str
    channel: str | None = None
    within_days: float | None = None
    inverse: bool = False


Condition = (
    And
    | Or
    | Not
    | InSegment
    | AttributeCondition
    | EventCondition
    | DeviceCondition
    | ObjectCondition
    | MessageCondition
)


@dataclass(frozen=True)
class Dependencies:
    """What can change a condition's result: a change touching none of these cannot."""

    attributes: frozenset[str] = frozenset()
    # (type, name) with name None when any name of the type may match.
    events: frozenset[tuple[str, str | None]] = frozenset()
    segments: frozenset[int] = frozenset()
    object_types: frozenset[str] = frozenset()
    devices: bool = False
    messages: bool = False
    # Depends on the time: the result can flip with no change at all (windows, relative dates).
    timed: bool = False
    keys: frozenset[str] = field(default=frozenset())


# -- parsing --------------------------------------------------------------------------------------------


def parse(document: Any, path: str = "conditions") -> Condition:
    """Parse a condition document; raise :class:`ConditionError` naming the first offending path."""
    parser = _Parser()
    return parser.condition(document, path, 0)


class _Parser:
    def __init__(self) -> None:
        self.leaves = 0

    def condition(self, doc: Any, path: str, depth: int) -> Condition:
        if depth > MAX_DEPTH:
            raise ConditionError(f"{path}: conditions nest deeper than {MAX_DEPTH}", field=path)
        if not isinstance(doc, dict) or len(doc) != 1:
            raise ConditionError(
                f"{path} must be an object with exactly one of and, or, not, segment, attribute, event, "
                "page, screen, device, object, message",
                field=path,
            )
        ((kind, body),) = doc.items()
        sub = f"{path}.{kind}"
        if kind in ("and", "or"):
            if not isinstance(body, list) or not body:
                raise ConditionError(f"{sub} must be a non-empty list of conditions", field=sub)
            items = tuple(self.condition(item, f"{sub}[{i}]", depth + 1) for i, item in enumerate(body))
            return And(items) if kind == "and" else Or(items)
        if kind == "not":
            return Not(self.condition(body, sub, depth + 1))
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            raise ConditionError(f"{path}: more than {MAX_LEAVES} conditions", field=path)
        if not isinstance(body, dict):
            raise ConditionError(f"{sub} must be an object", field=sub)
        if kind == "segment":
            _only(body, sub, {"id", "inverse"})
            return InSegment(_positive_int(body.get("id"), f"{sub}.id"), _flag(body, sub, "inverse"))
        if kind == "attribute":
            return AttributeCondition(self.test(body, sub, relative=True))
        if kind in EVENT_TYPES:
            return self.event(body, sub, kind)
        if kind == "device":
            _only(body, sub, {"platform", "inverse"})
            platform = body.get("platform")
            if platform is not None and not _nonempty_str(platform):
                raise ConditionError(f"{sub}.platform must be a non-empty string", field=f"{sub}.platform")
            # Devices are stored with lower-case platforms (ios, android), whatever the client sent.
            return DeviceCondition(platform.lower() if platform else None, _flag(body, sub, "inverse"))
        if kind == "object":
            _only(body, sub, {"type_id", "filters", "relationship_filters", "inverse"})
            type_id = body.get("type_id")
            if isinstance(type_id, int) and not isinstance(type_id, bool):
                type_id = str(type_id)
            if not _nonempty_str(type_id):
                raise ConditionError(f"{sub}.type_id must be an object type id", field=f"{sub}.type_id")
            return ObjectCondition(
                type_id,
                self.tests(body.get("filters"), f"{sub}.filters"),
                self.tests(body.get("relationship_filters"), f"{sub}.relationship_filters"),
                _flag(body, sub, "inverse"),
            )
        if kind == "message":
            _only(body, sub, {"activity", "channel", "within", "inverse"})
            activity = body.get("activity")
            if activity not in MESSAGE_ACTIVITIES:
                raise ConditionError(
                    f"{sub}.activity must be one of {', '.join(MESSAGE_ACTIVITIES)}", field=f"{sub}.activity"
                )
            channel = body.get("channel")
            if channel is not None and not _nonempty_str(channel):
                raise ConditionError(f"{sub}.channel must be a string", field=f"{sub}.channel")
            return MessageCondition(
                activity, channel, _within(body.get("within"), f"{sub}.within"), _flag(body, sub, "inverse")
            )
        raise ConditionError(f"{path}: unknown condition {kind!r}", field=sub)

    def event(self, body: dict[str, Any], path: str, kind: str) -> EventCondition:
        _only(body, path, {"name", "filters", "count", "within", "timing", "inverse"})
        name = self.name_match(body.get("name"), f"{path}.name", required=kind == "event")
        timing = None
        if body.get("timing") is not None:
            if body.get("count") is not None or body.get("within") is not None:
                raise ConditionError(
                    f"{path}.timing cannot be combined with count or within", field=f"{path}.timing"
                )
            timing = _timing(body["timing"], f"{path}.timing")
        count_operator, count = "at_least", 1
        if body.get("count") is not None:
            count_operator, count = _count(body["count"], f"{path}.count")
        return EventCondition(
            type=kind,
            name=name,
            filters=self.tests(body.get("filters"), f"{path}.filters"),
            count_operator=count_operator,
            count=count,
            within_days=_within(body.get("within"), f"{path}.within"),
            timing=timing,
            inverse=_flag(body, path, "inverse"),
        )

    def name_match(self, value: Any, path: str, *, required: bool) -> NameMatch | None:
        if value is None:
            if required:
                raise ConditionError(f"{path} is required", field=path)
            return None
        if isinstance(value, str):
            if not value:
                raise ConditionError(f"{path} must not be empty", field=path)
            return NameMatch("eq", value)
        if isinstance(value, dict):
            _only(value, path, {"operator", "value"})
            operator = value.get("operator", "eq")
            if operator not in TEXT_OPERATORS:
                raise ConditionError(
                    f"{path}.operator must be one of {', '.join(sorted(TEXT_OPERATORS))}",
                    field=f"{path}.operator",
                )
            text = value.get("value")
            if not _nonempty_str(text):
                raise ConditionError(f"{path}.value must be a non-empty string", field=f"{path}.value")
            return NameMatch(operator, text)
        raise ConditionError(f"{path} must be a string or {{operator, value}}", field=path)

    def tests(self, value: Any, path: str) -> tuple[Test, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ConditionError(f"{path} must be a list", field=path)
        return tuple(self.test(item, f"{path}[{i}]", relative=False) for i, item in enumerate(value))

    def test(self, body: Any, path: str, *, relative: bool) -> Test:
        if not isinstance(body, dict):
            raise ConditionError(f"{path} must be an object", field=path)
        _only(body, path, {"field", "operator", "value", "values", "days", "inverse"})
        name = body.get("field")
        if not _nonempty_str(name):
            raise ConditionError(f"{path}.field must be a non-empty string", field=f"{path}.field")
        operator = body.get("operator")
        if operator not in OPERATORS:
            raise ConditionError(
                f"{path}.operator must be one of {', '.join(sorted(OPERATORS))}", field=f"{path}.operator"
            )
        if operator in RELATIVE_OPERATORS and not relative:
            raise ConditionError(
                f"{path}.operator {operator} is only allowed on person attributes", field=f"{path}.operator"
            )
        inverse = _flag(body, path, "inverse")
        return Test(name, operator, _operand(operator, body, path), inverse)


def _operand(operator: str, body: dict[str, Any], path: str) -> Any:
    value = body.get("value")
    if operator in TEXT_OPERATORS:
        if isinstance(value, bool) or value is None or isinstance(value, dict | list):
            raise ConditionError(f"{path}.value must be a string", field=f"{path}.value")
        return _as_text(value)
    if operator in NUMBER_OPERATORS:
        return _number(value, f"{path}.value")
    if operator == "between":
        values = body.get("values")
        if not isinstance(values, list) or len(values) != 2:
            raise ConditionError(f"{path}.values must be [low, high]", field=f"{path}.values")
        low, high = _number(values[0], f"{path}.values[0]"), _number(values[1], f"{path}.values[1]")
        if low > high:
            raise ConditionError(f"{path}.values: low is above high", field=f"{path}.values")
        return (low, high)
    if operator == "in":
        values = body.get("values")
        if not isinstance(values, list) or not values:
            raise ConditionError(f"{path}.values must be a non-empty list", field=f"{path}.values")
        for i, item in enumerate(values):
            if isinstance(item, bool) or item is None or isinstance(item, dict | list):
                raise ConditionError(f"{path}.values[{i}] must be a string", field=f"{path}.values[{i}]")
        return tuple(_as_text(item) for item in values)
    if operator in RELATIVE_OPERATORS:
        return _days(body.get("days"), f"{path}.days")
    return None


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any, path: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConditionError(f"{path} must be a number", field=path) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConditionError(f"{path} must be a number", field=path)
    return float(value)


def _days(value: Any, path: str) -> float:
    days = _number(value, path)
    if days < 0 or days > 36500:
        raise ConditionError(f"{path} must be between 0 and 36500", field=path)
    return days


def _within(value: Any, path: str) -> float | None:
    if value is None or value == "ever":
        return None
    if not isinstance(value, dict):
        raise ConditionError(f'{path} must be "ever" or {{"days": N}}', field=path)
    _only(value, path, {"days"})
    return _days(value.get("days"), f"{path}.days")


def _count(value: Any, path: str) -> tuple[str, int]:
    if not isinstance(value, dict):
        raise ConditionError(f"{path} must be {{operator, value}}", field=path)
    _only(value, path, {"operator", "value"})
    operator = value.get("operator", "at_least")
    if operator not in COUNT_OPERATORS:
        raise ConditionError(
            f"{path}.operator must be one of {', '.join(COUNT_OPERATORS)}", field=f"{path}.operator"
        )
    count = value.get("value")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConditionError(f"{path}.value must be a whole number ≥ 0", field=f"{path}.value")
    return operator, count


def _timing(value: Any, path: str) -> Timing:
    if not isinstance(value, dict):
        raise ConditionError(f"{path} must be {{which, operator, days}}", field=path)
    _only(value, path, {"which", "operator", "days"})
    which, operator = value.get("which"), value.get("operator")
    if which not in ("first", "last"):
        raise ConditionError(f"{path}.which must be first or last", field=f"{path}.which")
    if operator not in ("older_than", "newer_than"):
        raise ConditionError(f"{path}.operator must be older_than or newer_than", field=f"{path}.operator")
    return Timing(which, operator, _days(value.get("days"), f"{path}.days"))


def _positive_int(value: Any, path: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConditionError(f"{path} must be a segment id", field=path)
    return value


def _flag(body: dict[str, Any], path: str, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ConditionError(f"{path}.{name} must be true or false", field=f"{path}.{name}")
    return value


def _only(body: dict[str, Any], path: str, allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise ConditionError(f"{path}: unknown key {key!r}", field=f"{path}.{key}")


def _nonempty_str(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


# -- what a condition depends on -------------------------------------------------------------------------


def walk(condition: Condition) -> Iterator[Condition]:
    yield condition
    if isinstance(condition, And | Or):
        for item in condition.items:
            yield from walk(item)
    elif isinstance(condition, Not):
        yield from walk(condition.item)


def dependencies(condition: Condition) -> Dependencies:
    attributes: set[str] = set()
    events: set[tuple[str, str | None]] = set()
    segments: set[int] = set()
    object_types: set[str] = set()
    devices = messages = timed = False
    for node in walk(condition):
        if isinstance(node, AttributeCondition):
            attributes.add(node.test.field)
            timed |= node.test.operator in RELATIVE_OPERATORS
        elif isinstance(node, EventCondition):
            exact = node.name is not None and node.name.operator == "eq"
            events.add((node.type, node.name.value if exact and node.name else None))
            timed |= node.within_days is not None or node.timing is not None
        elif isinstance(node, InSegment):
            segments.add(node.segment_id)
        elif isinstance(node, ObjectCondition):
            object_types.add(node.type_id)
        elif isinstance(node, DeviceCondition):
            devices = True
        elif isinstance(node, MessageCondition):
            messages = True
            timed |= node.within_days is not None
    keys = {f"attr:{name}" for name in attributes}
    keys |= {f"event:{kind}:{name if name is not None else '*'}" for kind, name in events}
    keys |= {f"segment:{segment_id}" for segment_id in segments}
    keys |= {f"object:{type_id}" for type_id in object_types}
    if devices:
        keys.add("device")
    if messages:
        keys.add("message")
    return Dependencies(
        attributes=frozenset(attributes),
        events=frozenset(events),
        segments=frozenset(segments),
        object_types=frozenset(object_types),
        devices=devices,
        messages=messages,
        timed=timed,
        keys=frozenset(keys),
    )

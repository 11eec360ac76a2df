"""Journey attributes in workflow conditions.

Branches, splits and waits take segment-style condition documents (tidings.segments.conditions), which
SQL answers for the person. A workflow condition may also test the journey's own attributes (those set by
"set journey attributes", webhook actions and LLM actions) with a ``journey`` leaf::

    {"journey": {"field": "sentiment", "operator": "eq", "value": "positive"}}

It takes the operators of an attribute test, except the relative-time ones. Journey attributes live on the
journey row, not in SQL's reach, so each ``journey`` leaf is decided here first: a document made only of
them never reaches the database, and in a mixed one each leaf is replaced by an always-true or
always-false person test before the rest goes to SQL.
"""

from __future__ import annotations

from typing import Any

from tidings.segments.conditions import (
    NUMBER_OPERATORS,
    ConditionError,
    Test,
    _as_text,
    _Parser,
)

JOURNEY = "journey"
# Every person has a cio_id, so this holds for all and its negation for none.
ALWAYS: dict[str, Any] = {"attribute": {"field": "cio_id", "operator": "exists"}}
NEVER: dict[str, Any] = {"not": ALWAYS}


def _tests(document: Any, path: str, found: dict[str, Test]) -> Any:
    """``document`` with each journey leaf replaced by a placeholder person test; the parsed leaves go
    into ``found`` keyed by path."""
    if isinstance(document, dict) and len(document) == 1:
        ((kind, body),) = document.items()
        if kind == JOURNEY:
            found[path] = _Parser().test(body, f"{path}.{kind}", relative=False)
            return ALWAYS
        if kind in ("and", "or") and isinstance(body, list):
            return {kind: [_tests(item, f"{path}.{kind}[{i}]", found) for i, item in enumerate(body)]}
        if kind == "not":
            return {kind: _tests(body, f"{path}.{kind}", found)}
    return document


def person_part(document: Any, path: str) -> Any:
    """Check the journey leaves of ``document`` (raising ConditionError naming the path) and return the
    document the segment grammar must accept."""
    return _tests(document, path, {})


def _value_passes(test: Test, value: Any) -> bool:
    operator = test.operator
    if operator == "exists":
        return value is not None
    if isinstance(value, list):
        # A list (an LLM list or multi-select field) passes when one of its items does.
        return any(_value_passes(test, item) for item in value)
    if value is None or isinstance(value, dict):
        return False
    if operator in ("is_true", "is_false"):
        wanted = operator == "is_true"
        return value is wanted or (isinstance(value, str) and value.lower() == str(wanted).lower())
    if operator in NUMBER_OPERATORS or operator == "between":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False
        if operator == "between":
            low, high = test.value
            return bool(low <= number <= high)
        limit = float(test.value)
        return {
            "gt": number > limit,
            "gte": number >= limit,
            "lt": number < limit,
            "lte": number <= limit,
        }[operator]
    text = str(value).lower() if isinstance(value, bool) else _as_text(value)
    if operator == "eq":
        return bool(text == test.value)
    if operator == "contains":
        return test.value in text
    if operator == "starts_with":
        return text.startswith(test.value)
    if operator == "ends_with":
        return text.endswith(test.value)
    if operator == "in":
        return text in test.value
    return False


def passes(test: Test, attributes: dict[str, Any]) -> bool:
    result = _value_passes(test, attributes.get(test.field))
    return result != test.inverse


def _decide(document: Any, attributes: dict[str, Any]) -> bool | None:
    """The document's value when journey leaves alone decide it, else None."""
    if not isinstance(document, dict) or len(document) != 1:
        return None
    ((kind, body),) = document.items()
    if kind == JOURNEY:
        return passes(_Parser().test(body, kind, relative=False), attributes)
    if kind == "not":
        inner = _decide(body, attributes)
        return None if inner is None else not inner
    if kind in ("and", "or") and isinstance(body, list):
        values = [_decide(item, attributes) for item in body]
        short: bool = kind == "or"  # the value that settles the whole: True for or, False for and
        if short in values:
            return short
        return None if None in values else not short
    return None


def _substitute(document: Any, attributes: dict[str, Any]) -> Any:
    if isinstance(document, dict) and len(document) == 1:
        ((kind, body),) = document.items()
        if kind == JOURNEY:
            return ALWAYS if passes(_Parser().test(body, kind, relative=False), attributes) else NEVER
        if kind in ("and", "or") and isinstance(body, list):
            return {kind: [_substitute(item, attributes) for item in body]}
        if kind == "not":
            return {kind: _substitute(body, attributes)}
    return document


def resolve(document: Any, attributes: dict[str, Any]) -> tuple[bool | None, Any]:
    """(value, None) when the journey's attributes decide the document; else (None, the document with
    its journey leaves replaced) for SQL to decide."""
    decided = _decide(document, attributes)
    if decided is not None:
        return decided, None
    return None, _substitute(document, attributes)


__all__ = ["ConditionError", "person_part", "resolve"]

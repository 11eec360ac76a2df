"""Output fields of the LLM action: the ten types, the JSON schema a model is asked to follow, and how an
answer is checked and coerced; plus journey-attribute leaves in workflow conditions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.ai.fields import TYPES, coerce, json_schema, parse_field, parse_fields
from tidings.errors import InvalidInput
from tidings.journeys.conditions import person_part, resolve
from tidings.segments.conditions import ConditionError

ALL: list[dict[str, Any]] = [
    {"name": "t", "type": "text"},
    {"name": "n", "type": "number"},
    {"name": "i", "type": "integer"},
    {"name": "b", "type": "boolean"},
    {"name": "d", "type": "date"},
    {"name": "dt", "type": "datetime"},
    {"name": "tm", "type": "time"},
    {"name": "l", "type": "list"},
    {"name": "s", "type": "single_select", "options": ["positive", "negative", "neutral"]},
    {"name": "m", "type": "multi_select", "options": ["positive", "negative", "neutral"]},
]


def test_every_type_has_a_schema_and_coerces_good_values() -> None:
    fields = parse_fields(ALL)
    assert [f.type for f in fields] == list(TYPES)
    schema = json_schema(fields)
    assert schema["required"] == [f["name"] for f in ALL]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["s"]["enum"] == ["positive", "negative", "neutral"]
    assert schema["properties"]["m"]["items"]["enum"] == ["positive", "negative", "neutral"]
    values, problems = coerce(
        fields,
        {
            "t": "Mark your calendars",
            "n": 3.14,
            "i": 42,
            "b": True,
            "d": "2026-03-31",
            "dt": "2026-03-31T14:30:00Z",
            "tm": "14:30:00",
            "l": ["Subject 1", "Subject 2"],
            "s": "positive",
            "m": ["positive", "neutral"],
        },
    )
    assert problems == []
    assert values == {
        "t": "Mark your calendars",
        "n": 3.14,
        "i": 42,
        "b": True,
        "d": "2026-03-31",
        "dt": "2026-03-31T14:30:00Z",
        "tm": "14:30:00",
        "l": ["Subject 1", "Subject 2"],
        "s": "positive",
        "m": ["positive", "neutral"],
    }


def test_loose_answers_are_coerced_and_wrong_ones_named() -> None:
    fields = parse_fields(ALL)
    values, problems = coerce(
        fields,
        {"t": 7, "n": "2.5", "i": 4.0, "b": "false", "d": "2026-02-30", "dt": "yesterday", "tm": "25:00",
         "l": "a, b", "s": "angry", "m": ["positive", "angry"]},
    )  # fmt: skip
    assert values == {"t": "7", "n": 2.5, "i": 4, "b": False}
    assert [p.split(":")[0] for p in problems] == ["d", "dt", "tm", "l", "s", "m"]
    assert "expected one of positive, negative, neutral" in problems[4]


def test_optional_fields_may_be_null_or_missing_required_ones_may_not() -> None:
    fields = parse_fields(
        [{"name": "a", "type": "integer", "required": False}, {"name": "b", "type": "text"}]
    )
    schema = json_schema(fields)
    assert schema["properties"]["a"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert coerce(fields, {"a": None, "b": "x"}) == ({"b": "x"}, [])
    assert coerce(fields, {"a": "nope", "b": "x"}) == ({"b": "x"}, [])
    assert coerce(fields, {"a": 1}) == ({"a": 1}, ["b: missing"])


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ({"name": "9lives", "type": "text"}, "name"),
        ({"name": "a", "type": "colour"}, "type must be one of"),
        ({"name": "a", "type": "single_select"}, "options"),
        ({"name": "a", "type": "multi_select", "options": ["x", "x"]}, "distinct"),
        ({"name": "a", "type": "text", "options": ["x"]}, "only belongs to select fields"),
        ({"name": "a", "type": "text", "target": "object"}, "journey or customer"),
        ({"name": "a", "type": "boolean", "fallback": "maybe"}, "fallback"),
        ({"name": "a", "type": "text", "required": "yes"}, "required"),
        ({"name": "a", "type": "text", "colour": "red"}, "unknown key"),
    ],
)
def test_bad_fields_are_refused_naming_the_place(field: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_fields([field], "steps[0].output_fields")
    assert problem in refused.value.message
    assert refused.value.message.startswith("steps[0].output_fields[0]")


def test_fallbacks_are_stored_in_the_field_type() -> None:
    field = parse_field({"name": "n", "type": "integer", "fallback": "3"}, "f")
    assert (field.has_fallback, field.fallback) == (True, 3)
    assert parse_field({"name": "n", "type": "integer"}, "f").has_fallback is False


@given(st.text(max_size=30))
def test_text_answers_are_kept_as_given(text: str) -> None:
    fields = parse_fields([{"name": "t", "type": "text"}])
    assert coerce(fields, {"t": text}) == ({"t": text}, [])


@given(st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False)))
def test_integers_accept_whole_numbers_only(number: float) -> None:
    fields = parse_fields([{"name": "i", "type": "integer"}])
    values, problems = coerce(fields, {"i": number})
    if float(number).is_integer():
        assert values == {"i": int(number)}
    else:
        assert problems


def test_journey_leaves_decide_alone_or_leave_sql_the_rest() -> None:
    attributes = {"sentiment": "positive", "score": 87, "topics": ["billing", "seats"], "ok": True}
    leaf = {"journey": {"field": "sentiment", "operator": "eq", "value": "positive"}}
    assert resolve(leaf, attributes) == (True, None)
    assert resolve({"not": leaf}, attributes) == (False, None)
    assert resolve({"journey": {"field": "score", "operator": "gte", "value": 90}}, attributes) == (
        False,
        None,
    )
    assert resolve({"journey": {"field": "score", "operator": "between", "values": [80, 90]}}, attributes)[0]
    assert resolve({"journey": {"field": "topics", "operator": "eq", "value": "seats"}}, attributes)[0]
    assert resolve({"journey": {"field": "ok", "operator": "is_true"}}, attributes)[0]
    assert resolve({"journey": {"field": "gone", "operator": "exists"}}, attributes) == (False, None)
    assert resolve({"journey": {"field": "gone", "operator": "exists", "inverse": True}}, attributes)[0]
    person = {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}
    # "or" with a true journey leaf is settled; "and" needs the person's part from SQL.
    assert resolve({"or": [leaf, person]}, attributes) == (True, None)
    decided, rest = resolve({"and": [leaf, person]}, attributes)
    assert decided is None
    assert rest == {"and": [{"attribute": {"field": "cio_id", "operator": "exists"}}, person]}


def test_journey_leaves_are_checked_when_saved() -> None:
    with pytest.raises(ConditionError) as refused:
        person_part({"and": [{"journey": {"field": "x", "operator": "nope"}}]}, "condition")
    assert refused.value.field == "condition.and[0].journey.operator"

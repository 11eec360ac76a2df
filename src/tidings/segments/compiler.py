"""Compile a parsed segment condition into SQL: one boolean expression correlated to ``people``.

:func:`predicate` gives the expression that is true for the rows of ``people`` matching a condition, to be
used as ``select(Person.id).where(Person.workspace_id == w, ..., predicate(c, ctx))``. :func:`next_change`
gives, per person, the earliest instant after ``ctx.now`` at which the result could change with no new data.
Both compile to the same meaning on SQLite and PostgreSQL; the dialect is chosen when the statement is
compiled, so one expression serves both. Every subquery is correlated to ``people.id`` and filters by
workspace; events are reached through (person_id, name, timestamp), devices and relationships through
person_id, deliveries through (workspace_id, person_id), memberships through (segment_id, person_id).

The contract (``tests/segments/oracle.py`` implements it in Python; the property tests hold SQL to it)
----------------------------------------------------------------------------------------------------------

Values. A condition's field names a person column or a custom attribute: ``id`` is ``customer_id``,
``email``, ``cio_id`` (text), ``created_at`` (a number), ``unsubscribed`` (a boolean); any other name is a
key of ``attributes`` (keys may hold dots, quotes, spaces or any character: they are bound, never spliced).
Event filters read ``events.data``; object filters ``objects.attributes``; relationship filters
``relationships.attributes``, always by key. A value is *missing* when the key is absent or JSON null.

- text(v): a string is itself; true/false are "true"/"false"; a number is its decimal form, integral
  values without a fraction (5 and 5.0 are both "5", as the parser makes a text operand 5.0 "5").
  Non-integral numbers read alike on both databases (and in Python, repr) only when short and plain
  (2.5, -0.25: at most 15 significant digits, no exponent), integral ones only below 2**53 in magnitude;
  beyond that each database gives its own decimal form. Objects, arrays and missing values have no text.
- num(v): a JSON number (never a boolean) is its value; a string that is a plain decimal number, exactly
  ``^-?[0-9]+(\\.[0-9]+)?$`` (no spaces, no "+", no exponent, no trailing newline), is that number;
  anything else has no number. Numbers are compared as IEEE doubles (the nearest double to the decimal);
  magnitudes above 1e300 read as ±1e300 and below 1e-300 as 0, so that no stored value can make
  PostgreSQL fail a cast to double.

Attribute operators (the parser has normalised the operand). Every operator is false on a value it cannot
read (missing, or without text or number as the operator needs):

- ``eq``: text(v) == value. ``in``: text(v) is one of the values. ``exists``: v present and not JSON null
  (objects and arrays exist).
- ``contains`` / ``starts_with`` / ``ends_with``: case-sensitive substring tests on text(v), code point
  by code point (``%`` and ``_`` are ordinary characters); an empty operand matches any text.
- ``is_true``: text(v) == "true" (JSON true or the string "true"); ``is_false`` likewise with "false".
- ``gt`` / ``gte`` / ``lt`` / ``lte`` on num(v); ``between``: low <= num(v) <= high.
- Relative, with num(v) a unix time, D = 86400 and N the operand in days (a float; N·D is computed as a
  double): ``older_than``: num < now - N·D; ``newer_than``: now - N·D <= num <= now; ``within_next``:
  now <= num <= now + N·D.
- ``inverse: true`` negates the whole test, so "does not equal" matches people without the attribute.

Logic is two-valued: ``and`` / ``or`` / ``not`` never see SQL NULL.

Other leaves (``inverse`` negates each of them):

- ``segment``: the person is a member of the segment (``segment_memberships``).
- ``event`` / ``page`` / ``screen``: the person's events of that type whose name matches (eq, contains,
  starts_with, ends_with; case-sensitive) and whose data pass every filter. Counted form: the number of
  those with timestamp >= now - W·D (all of them when ``within`` is ever) is at least / at most / exactly
  ``count`` (at most 0 and exactly 0 hold for people with no events; at least 0 always holds). Timed form:
  t = the earliest (first) or latest (last) timestamp of those events, ever; ``older_than``: t < now - N·D;
  ``newer_than``: now - N·D <= t <= now; no such event: false.
- ``device``: the person has a device (of that platform, when given).
- ``object``: the person has a relationship to an object of ``type_id`` whose attributes pass every filter
  and whose relationship attributes pass every relationship filter.
- ``message``: ``sent``: a delivery to the person (on that channel, when given) with created_at >=
  now - W·D (any, when ``within`` is ever). Other activities: a delivery metric report of that metric for a
  delivery to the person (reports join deliveries on workspace and delivery id), report timestamp >=
  now - W·D.

Time windows have no upper end: a future-dated event or report counts as inside its window.

next_change: the next instant > now at which the condition's result could change with no new data, or NULL
when it provably cannot; early is allowed, late is not. A condition is *timed* when it holds a relative
operator, a ``within`` of days or a ``timing`` (``dependencies(c).timed``); an untimed one never changes
by the passage of time alone (segment memberships included: they change as data). Then:

- ``not``: its item's next_change.
- ``and``: NULL while any untimed item is false (the ``and`` stays false until data changes); otherwise
  the least of its timed items' next_change. ``or``: NULL while any untimed item is true; otherwise the
  least of its timed items'. (An untimed condition has none; ``inverse`` does not matter: a leaf and its
  inverse flip at the same instants.)
- A leaf: the next instant > now at which its value can change (NULL when none), where H = 253402300800
  (year 10000) caps every candidate (an instant past H is reported as H), and with x = num(v),
  S = N·D (or W·D):

  - ``older_than``: floor(x + S) + 1 (the first whole second with x < t - S; it is > now only while the
    test is false: once true it stays true);
  - ``newer_than``: ceil(x) (becomes true) and floor(x + S) + 1 (becomes false);
  - ``within_next``: ceil(x - S) (becomes true) and floor(x) + 1 (becomes false);
  - a counted event window: with t_k the k-th latest timestamp inside the window, t_k + floor(S) + 1, the
    instant it leaves (none when fewer than k are inside). As time passes the count only falls, so
    ``at_least n`` (n >= 1) can only become false: k = n (none while it is false); ``at_most n`` can only
    become true: k = n + 1 (none while it is true); ``exactly n``: k = n + 1 (becomes true, or skips n on
    a tie), else k = n when n >= 1 (becomes false); ``at_least 0``: none;
  - ``sent`` and report windows, like ``at_least 1``: the latest created_at (report timestamp) inside the
    window + floor(S) + 1 (none while there is none);
  - a timed event: t + floor(N·D) + 1, and for ``newer_than`` also t itself.

  Only candidates > now count (a candidate from a negative instant never does); of several, the first.

Between now and next_change the predicate's result cannot change unless data changes. :func:`next_change`
returns Python ``None`` when the condition has no time-dependent part at all (no relative operator,
``within`` or ``timing``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Integer,
    Numeric,
    Select,
    SQLColumnExpression,
    Text,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    not_,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, Case, Cast, ColumnClause, ColumnElement, Grouping
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import Exists, FromClause, ScalarSelect
from sqlalchemy.sql.visitors import InternalTraversal, iterate
from sqlalchemy.types import TypeEngine

from tidings.models import (
    Delivery,
    DeliveryMetricReport,
    Device,
    Event,
    Object,
    Person,
    Relationship,
    SegmentMembership,
)
from tidings.segments.conditions import (
    DAY,
    NUMBER_OPERATORS,
    RELATIVE_OPERATORS,
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
)

__all__ = ["HORIZON", "Context", "members_only", "next_change", "predicate", "time_parameters"]

T = TypeVar("T")

# next_change never reports an instant later than this (10000-01-01T00:00:00Z): early is allowed.
HORIZON = 253402300800
# Magnitudes above HUGE read as ±HUGE and below TINY as 0 (PostgreSQL cannot cast every numeric to a double).
HUGE = "1e300"
TINY = "1e-300"
# A string that reads as a number.
PLAIN_NUMBER = r"^-?[0-9]+(\.[0-9]+)?$"
# Integral doubles below this magnitude read as integers (5.0 is "5").
EXACT_INTEGERS = 2**53


@dataclass(frozen=True)
class Context:
    workspace_id: int
    now: int  # unix seconds; relative-time and window conditions are judged at this instant
    # Live: every value derived from the time is a named bind parameter (``time_*``) whose value the
    # caller passes when executing: ``time_parameters(statement)(now)`` (``now`` is then ignored). One
    # statement then serves every instant, so callers can build it once and keep it: building a
    # condition's SQL costs far more than running it for a few people.
    live: bool = False
    # Bulk build: the statement judges the people whose keys lie between these two bind parameters
    # (their names). On PostgreSQL an event count then reads the range's events of that name once,
    # grouped by person, instead of probing the index person by person (see _Compiler.event).
    people_range: tuple[str, str] | None = None


# Live time parameters: the name says how the value follows from now (seconds; days as a tag).
_TIME_PREFIX = "time_"
_TIME_FORMULAS: dict[str, Callable[[int, float], float]] = {
    "now": lambda now, _days: now,
    "nowf": lambda now, _days: float(now),
    "since": lambda now, days: math.ceil(now - days * DAY),
    "ago": lambda now, days: now - days * DAY,
    "ahead": lambda now, days: now + days * DAY,
}


def _time_name(formula: str, days: float) -> str:
    # repr of a finite float holds digits, ".", "-", "+" and "e" only; spelled so a bind name can hold it.
    return f"{_TIME_PREFIX}{formula}_{repr(days).replace('.', 'd').replace('-', 'm').replace('+', 'p')}"


def time_parameters(statement: Any) -> Callable[[int], dict[str, Any]]:
    """For a statement holding live time parameters: a function from now to their values."""
    wanted: dict[str, tuple[str, float]] = {}
    for element in iterate(statement):
        if isinstance(element, BindParameter) and str(element.key).startswith(_TIME_PREFIX):
            formula, tag = str(element.key)[len(_TIME_PREFIX) :].split("_", 1)
            days = float(tag.replace("d", ".").replace("m", "-").replace("p", "+"))
            wanted[str(element.key)] = (formula, days)

    def values(now: int) -> dict[str, Any]:
        return {name: _TIME_FORMULAS[formula](now, days) for name, (formula, days) in wanted.items()}

    return values


def predicate(condition: Condition, ctx: Context) -> ColumnElement[bool]:
    """True for the rows of ``people`` (the Person table, unaliased) matching the condition."""
    return _Compiler(ctx).condition(condition)


def next_change(condition: Condition, ctx: Context) -> ColumnElement[int] | None:
    """A scalar SQL expression correlated to ``people``: the earliest unix time > ctx.now at which the
    condition's result for that person could flip with no new data (a window edge passing), or NULL
    when there is none. None (Python) when the condition has no time-dependent part at all."""
    timed, due = _Compiler(ctx).change(condition)
    if not timed:
        return None
    if due is None:
        return cast(null(), BigInteger())
    return due


def driving_count(condition: Condition, ctx: Context) -> Select[Any] | None:
    """For a build step (``ctx.people_range`` set; PostgreSQL): when the condition as a whole, or one item
    of its top-level ``and``, needs at least n >= 1 events of one name (``at least`` or ``exactly`` n, not
    inverted, no first/last timing), the keys of the range's people with at least n such events, as
    :meth:`_Compiler.counted` finds them; else None. Everyone matching is among them, so a step may fetch
    just these people by key instead of reading the whole range (see tidings.segments.realtime)."""
    items = condition.items if isinstance(condition, And) else (condition,)
    for item in items:
        if (
            isinstance(item, EventCondition)
            and not item.inverse
            and item.timing is None
            and item.name is not None
            and item.name.operator == "eq"
            and item.count_operator in ("at_least", "exactly")
            and item.count >= 1
        ):
            return _Compiler(ctx).counted(item, item.count)
    return None


def members_only(condition: Condition) -> bool:
    """Whether time passing alone can turn the condition false but never true: then a person who does
    not match now cannot start matching without new data, and only members need a next_change."""
    rises, _ = _turns(condition)
    return not rises


def _turns(node: Condition) -> tuple[bool, bool]:
    """(can time alone make it true, can time alone make it false), judged leaf by leaf."""
    if isinstance(node, Not):
        rises, falls = _turns(node.item)
        return falls, rises
    if isinstance(node, And | Or):
        both = [_turns(item) for item in node.items]
        return any(r for r, _ in both), any(f for _, f in both)
    turns: tuple[bool, bool]
    inverse = False
    if isinstance(node, AttributeCondition):
        # older_than only ever becomes true; newer_than and within_next become true, then false.
        operator, inverse = node.test.operator, node.test.inverse
        turns = (True, operator != "older_than") if operator in RELATIVE_OPERATORS else (False, False)
    elif isinstance(node, EventCondition):
        inverse = node.inverse
        if node.timing is not None:
            turns = (True, node.timing.operator == "newer_than")
        elif node.within_days is None:
            turns = (False, False)
        else:
            # Counts inside a window only fall as events leave it.
            operator = node.count_operator
            turns = (operator != "at_least", operator != "at_most")
    elif isinstance(node, MessageCondition):
        inverse = node.inverse
        turns = (False, node.within_days is not None)
    else:
        turns = (False, False)
    return (turns[1], turns[0]) if inverse else turns


# -- one expression per dialect ---------------------------------------------------------------------------


class _Switch(ColumnElement[T]):
    """An expression written once for SQLite and once for PostgreSQL; the one for the dialect compiling
    the statement is rendered (in parentheses). Both are part of the cache key."""

    __visit_name__ = "tidings_dialect_switch"
    inherit_cache = True
    _traverse_internals = [
        ("sqlite", InternalTraversal.dp_clauseelement),
        ("postgresql", InternalTraversal.dp_clauseelement),
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(
        self, sqlite: ColumnElement[Any], postgresql: ColumnElement[Any], type_: TypeEngine[T]
    ) -> None:
        self.sqlite = sqlite
        self.postgresql = postgresql
        self.type = type_

    @property
    def _from_objects(self) -> list[FromClause]:
        return [*self.sqlite._from_objects, *self.postgresql._from_objects]


@compiles(_Switch)
def _compile_switch(element: _Switch[Any], compiler: SQLCompiler, **kw: Any) -> str:
    name = compiler.dialect.name
    if name == "sqlite":
        chosen = element.sqlite
    elif name == "postgresql":
        chosen = element.postgresql
    else:
        raise CompileError(f"segment conditions compile for SQLite and PostgreSQL, not {name}")
    sql = compiler.process(chosen, **kw)
    # Parentheses only where precedence needs them: SQLite's parser has a fixed stack (100 entries in
    # 3.40) that deeply nested conditions' time expressions came to fill, one level per parenthesis.
    return sql if isinstance(chosen, _ATOMS) else f"({sql})"


# Expressions written as one term (a call, CASE … END, CAST(…), a name, a parameter, a subquery in its
# own parentheses): safe as an operand of any operator.
_ATOMS = (FunctionElement, Case, Cast, ColumnClause, BindParameter, Grouping, ScalarSelect, Exists)


def _const(sql: str, type_: TypeEngine[T]) -> ColumnElement[T]:
    """A constant of this module written into the SQL (never user data)."""
    return literal_column(sql, type_)


def _text_const(value: str) -> ColumnElement[str]:
    assert "'" not in value
    return literal_column(f"'{value}'", Text())


def _clip(value: ColumnElement[T], low: int, high: int) -> ColumnElement[T]:
    """``value`` limited to [low, high]. NULL stays NULL on SQLite; PostgreSQL's GREATEST ignores NULL and
    gives ``low``: callers choose ``low`` so that either way the result is no candidate (<= now)."""
    low_, high_ = _const(str(low), BigInteger()), _const(str(high), BigInteger())
    sqlite = func.min(func.max(value, low_), high_)
    postgresql = func.least(func.greatest(value, low_), high_)
    return _Switch(sqlite, postgresql, value.type)


def _floor(value: ColumnElement[float]) -> ColumnElement[int]:
    """floor() of a double between -HORIZON and HORIZON (SQLite may lack math functions: CAST truncates,
    which differs from floor only below 0, where no candidate is anyway)."""
    return _Switch(cast(value, Integer()), cast(func.floor(value), BigInteger()), BigInteger())


def _ceil(value: ColumnElement[float]) -> ColumnElement[int]:
    """ceil() of a double between -HORIZON and HORIZON (the same below 0 as _floor)."""
    truncated = cast(value, Integer())
    sqlite = truncated + case((value > truncated, 1), else_=0)
    return _Switch(sqlite, cast(func.ceil(value), BigInteger()), BigInteger())


def _least(items: Sequence[ColumnElement[int]]) -> ColumnElement[int]:
    """The smallest non-NULL item, NULL when all are (SQLite's min(a, b) is NULL when any is)."""
    if len(items) == 1:
        return items[0]
    sentinel = _const(str(HORIZON + 1), BigInteger())
    sqlite = func.nullif(func.min(*[func.coalesce(item, sentinel) for item in items]), sentinel)
    return _Switch(sqlite, func.least(*items), BigInteger())


# -- values -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """How to read one value of a row. Each expression is NULL when the value has no such reading;
    ``number`` is None when the value can never be a number."""

    present: ColumnElement[bool]
    text: SQLColumnExpression[Any]
    number: ColumnElement[float] | None
    # A cheaper reading that equals text() wherever text() is a string that no number, boolean, object
    # or array can have as its text (see _plain_text); None when there is none.
    string: SQLColumnExpression[Any] | None = None
    # For a text written verbatim in JSON (see _verbatim): a test true wherever the value is that string,
    # and much cheaper than reading it; None when there is none.
    written: Callable[[str], ColumnElement[bool]] | None = None


def _sqlite_clamp(value: ColumnElement[Any]) -> ColumnElement[float]:
    """A double as num() reads it: saturated at ±HUGE, and 0 below TINY."""
    huge = _const(HUGE, Float())
    return case(
        (func.abs(value) < _const(TINY, Float()), _const("0.0", Float())),
        else_=func.max(-huge, func.min(huge, value)),
    )


def _postgresql_clamp(value: ColumnElement[Any]) -> ColumnElement[float]:
    """A numeric as num() reads it; the cast to a double would fail on numbers a double cannot hold."""
    huge = _const(HUGE, Numeric())
    return cast(
        case(
            (func.abs(value) < _const(TINY, Numeric()), _const("0", Numeric())),
            else_=func.greatest(-huge, func.least(huge, value)),
        ),
        Float(),
    )


def _sqlite_plain_number(text: SQLColumnExpression[Any]) -> ColumnElement[bool]:
    """``text`` matches PLAIN_NUMBER, with GLOB (SQLite has no regular expressions built in)."""

    def glob(value: SQLColumnExpression[Any], pattern: str) -> ColumnElement[bool]:
        return value.op("GLOB", is_comparison=True)(_text_const(pattern))

    return and_(
        or_(glob(text, "[0-9]*"), glob(text, "-[0-9]*")),
        glob(text, "*[0-9]"),
        not_(glob(func.substr(text, 2), "*[^0-9.]*")),
        not_(glob(text, "*.*.*")),
    )


def _postgresql_plain_number(text: SQLColumnExpression[Any]) -> ColumnElement[bool]:
    return text.op("~", is_comparison=True)(_text_const(PLAIN_NUMBER))


def _decimal_number(text: SQLColumnExpression[Any]) -> ColumnElement[float]:
    """num() of a text column: the number a plain decimal string spells."""
    sqlite = case((_sqlite_plain_number(text), _sqlite_clamp(cast(text, Float()))))
    postgresql = case((_postgresql_plain_number(text), _postgresql_clamp(cast(text, Numeric()))))
    return _Switch(sqlite, postgresql, Float())


def _path_safe(key: str) -> bool:
    """Whether SQLite can look ``key`` up with the path ``$."key"``: the label is compared with the key
    as stored in the JSON text, which must then hold no escape (JSON is stored with ensure_ascii)."""
    return all(" " <= char <= "~" and char not in '"\\' for char in key)


def _sqlite_text(kind: ColumnElement[Any], raw: ColumnElement[Any]) -> ColumnElement[str]:
    """text() of a JSON value on SQLite, from its json_type and json_extract."""
    integral = and_(raw == cast(raw, Integer()), func.abs(raw) < _const(str(EXACT_INTEGERS), Integer()))
    return case(
        (_text_const("text"), raw),
        (_text_const("integer"), cast(raw, Text())),
        (
            _text_const("real"),
            case((integral, cast(cast(raw, Integer()), Text())), else_=cast(raw, Text())),
        ),
        (_text_const("true"), _text_const("true")),
        (_text_const("false"), _text_const("false")),
        value=kind,
    )


def _sqlite_number(kind: ColumnElement[Any], raw: ColumnElement[Any]) -> ColumnElement[float]:
    """num() of a JSON value on SQLite (json_extract gives 1 and 0 for true and false: json_type tells)."""
    return case(
        (_text_const("integer"), _sqlite_clamp(cast(raw, Float()))),
        (_text_const("real"), _sqlite_clamp(raw)),
        (_text_const("text"), case((_sqlite_plain_number(raw), _sqlite_clamp(cast(raw, Float()))))),
        value=kind,
    )


# Text forms a non-string JSON value may take on either database: numbers (digits, sign, point, exponent,
# infinities), booleans (true/false, SQLite's 1/0) and objects or arrays (their JSON text).
_NOT_PLAIN = re.compile(r"[-+.0-9{\[]|(?i:inf|nan|true|false)")


# Characters a JSON serializer writes other than as themselves: quote, backslash, control characters
# (and lone surrogates, which it cannot write as UTF-8 at all).
_ESCAPED = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')
# Operands of "in" searched for as text, at most: each search costs about an eighth of a JSON read
# (measured over B3's people), so past a few they would cost more than the read they save.
WRITTEN_UP_TO = 4


def _first(cheap: ColumnElement[bool], test: ColumnElement[bool]) -> ColumnElement[bool]:
    """``cheap AND test`` where ``test`` implies ``cheap``, with ``test`` evaluated only where ``cheap``
    holds: documents that do not hold the text at all (most) are ruled out before the JSON read. A CASE,
    as SQLite evaluates both sides of an AND that is an operand (here of coalesce)."""
    return case((cheap, test), else_=false())


def _verbatim(value: str) -> bool:
    """Whether ``value`` as a JSON string is ``"value"``: how the stored documents (written by orjson, or
    json.dumps without ensure_ascii) hold it."""
    return _ESCAPED.search(value) is None


def _plain_text(value: str) -> bool:
    """Whether no JSON value other than the string ``value`` has ``value`` as its text() or as the
    cheaper ``string`` reading: such operands can be compared with the raw reading."""
    return value != "" and _NOT_PLAIN.match(value) is None


def _json_value(doc: SQLColumnExpression[Any], key: str) -> _Value:
    """The value of ``doc[key]`` for a JSON document column (JSON on SQLite, JSONB on PostgreSQL)."""
    s_kind: ColumnElement[Any]
    if _path_safe(key):
        path = bindparam(None, f'$."{key}"', type_=Text())
        s_kind, s_raw = func.json_type(doc, path), func.json_extract(doc, path)
        s_text, s_number = _sqlite_text(s_kind, s_raw), _sqlite_number(s_kind, s_raw)
        s_string: ColumnElement[Any] | None = s_raw

        def s_written(value: str) -> ColumnElement[bool]:
            # SQLite stores JSON as text: a string value of the document appears in it as "value". A
            # substring search costs a fraction of parsing the document (json_extract parses it whole).
            needle = bindparam(None, f'"{value}"', type_=Text())
            return _Switch(func.instr(doc, needle) > 0, true(), Boolean())

        written: Callable[[str], ColumnElement[bool]] | None = s_written
    else:
        # Any other key: json_each decodes the stored keys, so compare them with the bound key.
        entries = func.json_each(doc).table_valued("key", "value", "type")
        s_bound = bindparam(None, key, type_=Text())

        def entry(expression: ColumnElement[T]) -> ColumnElement[T]:
            found: ColumnElement[T] = select(expression).where(entries.c.key == s_bound).scalar_subquery()
            return found

        s_kind = entry(entries.c.type)
        s_text = entry(_sqlite_text(entries.c.type, entries.c.value))
        s_number = entry(_sqlite_number(entries.c.type, entries.c.value))
        s_string = None
        written = None

    bound = bindparam(None, key, type_=Text())
    p_raw = doc.op("->>", return_type=Text())(bound)
    p_kind = func.jsonb_typeof(doc.op("->", return_type=JSONB())(bound))
    p_numeric = cast(p_raw, Numeric())
    p_text = case(
        (_text_const("string"), p_raw),
        (_text_const("boolean"), p_raw),
        (_text_const("number"), cast(func.trim_scale(p_numeric), Text())),
        value=p_kind,
    )
    p_number = case(
        (_text_const("number"), _postgresql_clamp(p_numeric)),
        (_text_const("string"), case((_postgresql_plain_number(p_raw), _postgresql_clamp(p_numeric)))),
        value=p_kind,
    )
    kind = _Switch(s_kind, p_kind, Text())
    return _Value(
        present=kind != _text_const("null"),
        text=_Switch(s_text, p_text, Text()),
        number=_Switch(s_number, p_number, Float()),
        # json_extract and ->> give a JSON string's own text, and for any other value a number's
        # decimal form, 1/0 or true/false, or the JSON text of an object or array: never a plain text.
        string=None if s_string is None else _Switch(s_string, p_raw, Text()),
        written=written,
    )


def _person_value(name: str) -> _Value:
    if name in ("id", "email", "cio_id"):
        column = {"id": Person.customer_id, "email": Person.email, "cio_id": Person.cio_id}[name]
        return _Value(present=column.is_not(None), text=column, number=_decimal_number(column), string=column)
    if name == "created_at":
        return _Value(
            present=Person.created_at.is_not(None),
            text=cast(Person.created_at, Text()),
            number=cast(Person.created_at, Float()),
        )
    if name == "unsubscribed":
        return _Value(
            present=Person.unsubscribed.is_not(None),
            text=case((Person.unsubscribed, _text_const("true")), else_=_text_const("false")),
            number=None,
        )
    return _json_value(Person.attributes, name)


# -- text tests -------------------------------------------------------------------------------------------


def _text_test(text: SQLColumnExpression[Any], operator: str, value: str) -> ColumnElement[bool]:
    """A case-sensitive text operator; NULL (or false) when ``text`` is NULL."""
    if operator == "eq":
        return text == value
    if value == "":
        return text.is_not(None)
    if operator == "contains":
        bound = bindparam(None, value, type_=Text())
        return _Switch(func.instr(text, bound), func.strpos(text, bound), Integer()) > 0
    if operator == "starts_with":
        return func.substr(text, 1, len(value)) == value
    if operator == "ends_with":
        length = len(value)
        tail = _Switch(func.substr(text, -length), func.right(text, length), Text())
        return tail == value
    raise ValueError(f"not a text operator: {operator}")


def _name_test(column: SQLColumnExpression[str], name: NameMatch) -> ColumnElement[bool]:
    return _text_test(column, name.operator, name.value)


# -- the compiler ----------------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def from_now(self, formula: str, days: float, type_: TypeEngine[Any]) -> ColumnElement[Any]:
        """A value following from now (see ``_TIME_FORMULAS``): fixed at ``ctx.now``, or (live) a named
        parameter given at execution."""
        if not self.ctx.live:
            return literal(_TIME_FORMULAS[formula](self.ctx.now, days), type_)
        return bindparam(_time_name(formula, days), type_=type_)

    def current(self) -> ColumnElement[int]:
        return self.from_now("now", 0.0, BigInteger())

    def since(self, days: float) -> ColumnElement[int]:
        """The first whole second inside a window of ``days`` ending now (timestamp >= now - days·D)."""
        return self.from_now("since", days, BigInteger())

    # -- predicate --

    def condition(self, node: Condition) -> ColumnElement[bool]:
        if isinstance(node, And):
            return and_(*[self.condition(item) for item in node.items])
        if isinstance(node, Or):
            return or_(*[self.condition(item) for item in node.items])
        if isinstance(node, Not):
            return not_(self.condition(node.item))
        if isinstance(node, AttributeCondition):
            return self.test(_person_value(node.test.field), node.test, relative=True)
        if isinstance(node, InSegment):
            found = (
                select(SegmentMembership.person_id)
                .where(
                    SegmentMembership.segment_id == node.segment_id,
                    SegmentMembership.person_id == Person.id,
                    SegmentMembership.workspace_id == self.ctx.workspace_id,
                )
                .exists()
            )
            return _inverse(found, node.inverse)
        if isinstance(node, EventCondition):
            return _inverse(self.event(node), node.inverse)
        if isinstance(node, DeviceCondition):
            where = [Device.person_id == Person.id, Device.workspace_id == self.ctx.workspace_id]
            if node.platform is not None:
                where.append(Device.platform == node.platform)
            return _inverse(select(Device.id).where(*where).exists(), node.inverse)
        if isinstance(node, ObjectCondition):
            return _inverse(self.related(node), node.inverse)
        if isinstance(node, MessageCondition):
            where, stamp = self.message_rows(node)
            return _inverse(select(stamp).where(*where).exists(), node.inverse)
        raise TypeError(f"not a condition: {node!r}")

    def test(self, value: _Value, test: Test, *, relative: bool) -> ColumnElement[bool]:
        """A test as a two-valued expression (never NULL)."""
        operator, operand = test.operator, test.value
        result: ColumnElement[bool]
        if operator == "exists":
            result = value.present
        elif operator == "eq" and value.string is not None and _plain_text(operand):
            # One JSON read instead of the type switch: on the segment builds' hot path.
            result = value.string == operand
            if value.written is not None and _verbatim(operand):
                result = _first(value.written(operand), result)
        elif operator in ("eq", "contains", "starts_with", "ends_with"):
            result = _text_test(value.text, operator, operand)
        elif operator == "in" and value.string is not None and all(map(_plain_text, operand)):
            result = value.string.in_(list(operand))
            if value.written is not None and len(operand) <= WRITTEN_UP_TO and all(map(_verbatim, operand)):
                result = _first(or_(*(value.written(text) for text in operand)), result)
        elif operator == "in":
            result = value.text.in_(list(operand))
        elif operator == "is_true":
            result = value.text == _text_const("true")
        elif operator == "is_false":
            result = value.text == _text_const("false")
        elif operator in NUMBER_OPERATORS or operator == "between" or operator in RELATIVE_OPERATORS:
            if operator in RELATIVE_OPERATORS and not relative:
                raise ValueError(f"{operator} applies to person attributes only")
            number = value.number
            result = false() if number is None else self.number_test(number, operator, operand)
        else:
            raise ValueError(f"unknown operator {operator!r}")
        sure = func.coalesce(result, false())
        return _inverse(sure, test.inverse)

    def number_test(self, number: ColumnElement[float], operator: str, operand: Any) -> ColumnElement[bool]:
        if operator == "gt":
            return number > float(operand)
        if operator == "gte":
            return number >= float(operand)
        if operator == "lt":
            return number < float(operand)
        if operator == "lte":
            return number <= float(operand)
        if operator == "between":
            low, high = operand
            return and_(number >= float(low), number <= float(high))
        days = float(operand)
        now = self.from_now("nowf", 0.0, Float())
        ago = self.from_now("ago", days, Float())
        if operator == "older_than":
            return number < ago
        if operator == "newer_than":
            return and_(number >= ago, number <= now)
        if operator == "within_next":
            return and_(number >= now, number <= self.from_now("ahead", days, Float()))
        raise ValueError(f"unknown operator {operator!r}")

    # -- events --

    def event_where(self, node: EventCondition) -> list[ColumnElement[bool]]:
        return [Event.person_id == Person.id, *self.event_filters(node)]

    def event_filters(self, node: EventCondition) -> list[ColumnElement[bool]]:
        """The condition's test of an event row, whoever it belongs to."""
        where = [Event.workspace_id == self.ctx.workspace_id, Event.type == node.type]
        if node.name is not None:
            where.append(_name_test(Event.name, node.name))
        where.extend(
            self.test(_json_value(Event.data, item.field), item, relative=False) for item in node.filters
        )
        return where

    def event(self, node: EventCondition) -> ColumnElement[bool]:
        where = self.event_where(node)
        if node.timing is not None:
            timing = node.timing
            stamp = func.min(Event.timestamp) if timing.which == "first" else func.max(Event.timestamp)
            since = self.since(timing.days)
            if timing.operator == "older_than":
                test = stamp < since
            else:
                test = and_(stamp >= since, stamp <= self.current())
            return select(func.coalesce(test, false())).where(*where).scalar_subquery()
        window = [] if node.within_days is None else [Event.timestamp >= self.since(node.within_days)]
        # A constant, not a column: nothing of the row is needed, only whether it is there.
        rows = select(_const("1", Integer())).select_from(Event).where(*where, *window)
        count, operator = node.count, node.count_operator
        if operator == "at_least" and count == 0:
            return true()
        # "At least n" is "the n-th row exists": a bounded index range scan, not a full count.
        probed = _count_test(operator, count, lambda n: _nth_exists(rows, n))
        if self.ctx.people_range is None or node.name is None or node.name.operator != "eq":
            return probed
        # A build step on PostgreSQL: one walk of the range's events of this name along the name-first
        # index (PostgreSQL only, see tidings.models.event), counted per person, instead of a probe per
        # person (B3, 1M people: 25 → 15 ms a 25,000-key part).
        grouped = _count_test(operator, count, lambda n: Person.id.in_(self.counted(node, n)))
        return _Switch(probed, grouped, Boolean())

    def counted(self, node: EventCondition, n: int) -> Select[Any]:
        """The keys of the build step's people range (``ctx.people_range``) with at least ``n`` >= 1 of
        the node's events (name equal, window and filters included), from one walk of the range's
        events of that name, grouped by person."""
        assert self.ctx.people_range is not None
        low, high = (bindparam(name, type_=BigInteger()) for name in self.ctx.people_range)
        window = [] if node.within_days is None else [Event.timestamp >= self.since(node.within_days)]
        in_range = [*self.event_filters(node), *window, Event.person_id.between(low, high)]
        return select(Event.person_id).where(*in_range).group_by(Event.person_id).having(func.count() >= n)

    # -- objects and messages --

    def related(self, node: ObjectCondition) -> ColumnElement[bool]:
        workspace = self.ctx.workspace_id
        where = [
            Relationship.person_id == Person.id,
            # "+ 0": not a way in, so that SQLite (without statistics) takes the person's relationships
            # by person_id rather than the whole workspace's by workspace_id.
            Relationship.workspace_id + 0 == workspace,
            Object.workspace_id == workspace,
            Object.type_id == node.type_id,
        ]
        where.extend(
            self.test(_json_value(Object.attributes, t.field), t, relative=False) for t in node.filters
        )
        where.extend(
            self.test(_json_value(Relationship.attributes, t.field), t, relative=False)
            for t in node.relationship_filters
        )
        query = select(Relationship.id).join(Object, Object.id == Relationship.object_pk).where(*where)
        return query.exists()

    def message_rows(self, node: MessageCondition) -> tuple[list[ColumnElement[bool]], ColumnElement[int]]:
        """WHERE clauses selecting the person's matching sent deliveries or delivery metric reports
        (any other activity), and the time column their windows are on."""
        workspace = self.ctx.workspace_id
        where = [Delivery.person_id == Person.id, Delivery.workspace_id == workspace]
        if node.channel is not None:
            where.append(Delivery.channel == node.channel)
        if node.activity == "sent":
            where.append(Delivery.sent_at.is_not(None))
            if node.within_days is not None:
                where.append(Delivery.sent_at >= self.since(node.within_days))
            return where, func.coalesce(Delivery.sent_at, 0)
        # Reports of the person's deliveries: found through (workspace_id, delivery_id) for each delivery
        # found through (workspace_id, person_id), never by scanning the workspace's reports.
        report = DeliveryMetricReport
        reports = [
            report.workspace_id == workspace,
            report.delivery_id.in_(select(Delivery.id).where(*where).correlate(Person)),
            report.metric == node.activity,
        ]
        if node.within_days is not None:
            reports.append(report.timestamp >= self.since(node.within_days))
        return reports, report.timestamp.expression

    # -- next_change --
    #
    # Candidates: after(y) = min(floor(y) + 1, HORIZON), the first whole second past y; at(y) =
    # min(ceil(y), HORIZON), the first whole second at or past y; each counts only when > now, and a
    # NULL y gives none. Written so that every value appears once or twice in the SQL.

    def after_now(self, value: ColumnElement[int]) -> ColumnElement[int]:
        """``value`` when it is > now, else NULL."""
        now = self.current()
        sqlite = func.nullif(func.max(value, now), now)
        postgresql = func.nullif(func.greatest(value, now), now)
        return _Switch(sqlite, postgresql, BigInteger())

    def after(self, value: ColumnElement[float]) -> ColumnElement[int]:
        return self.after_now(_floor(_clip(value, -HORIZON, HORIZON - 1)) + 1)

    def at(self, value: ColumnElement[float]) -> ColumnElement[int]:
        return self.after_now(_ceil(_clip(value, -HORIZON, HORIZON)))

    def after_whole(self, value: ColumnElement[int], step: int) -> ColumnElement[int]:
        """after(value + step) for whole numbers, without overflowing on absurd timestamps."""
        return self.after_now(_clip(_clip(value, -HORIZON, HORIZON) + step, -HORIZON, HORIZON - 1) + 1)

    def attribute_change(self, test: Test) -> ColumnElement[int] | None:
        number = _person_value(test.field).number
        if number is None:
            return None
        span = float(test.value * DAY)
        if test.operator == "older_than":
            return self.after(number + span)
        # The value becomes true, then false: the first of the two that is still ahead.
        if test.operator == "newer_than":
            return func.coalesce(self.at(number), self.after(number + span))
        if test.operator == "within_next":
            return func.coalesce(self.at(number - span), self.after(number))
        raise ValueError(f"not a relative operator: {test.operator}")

    def leaving(
        self, stamp: ColumnElement[int], days: float, *, arriving: bool = False
    ) -> ColumnElement[int]:
        """For an aggregate timestamp ``stamp`` (NULL when no row): when it leaves a window of ``days``
        (after(stamp + days·D) = stamp + floor(days·D) + 1), or, with ``arriving``, first when it stops
        being in the future (at(stamp) = stamp)."""
        leaves = self.after_whole(stamp, math.floor(days * DAY))
        if not arriving:
            return leaves
        return func.coalesce(self.after_now(_clip(stamp, -HORIZON, HORIZON)), leaves)

    def event_change(self, node: EventCondition) -> ColumnElement[int] | None:
        where = self.event_where(node)
        if node.timing is not None:
            timing = node.timing
            stamp = func.min(Event.timestamp) if timing.which == "first" else func.max(Event.timestamp)
            candidate = self.leaving(stamp, timing.days, arriving=timing.operator == "newer_than")
            return select(candidate).where(*where).scalar_subquery()
        days = node.within_days
        assert days is not None
        where.append(Event.timestamp >= self.since(days))
        count = node.count

        def nth_leaves(n: int) -> ColumnElement[int]:
            """When the n-th latest event inside the window leaves it (NULL with fewer than n inside)."""
            stamp = Event.timestamp.expression
            rows = select(self.leaving(stamp, days)).where(*where).order_by(stamp.desc())
            found: ColumnElement[int] = rows.limit(1).offset(n - 1).scalar_subquery()
            return found

        # The count only falls as time passes: at_least n can only become false, at_most n only true.
        if node.count_operator == "at_least":
            return nth_leaves(count) if count > 0 else None
        if node.count_operator == "at_most":
            return nth_leaves(count + 1)
        if node.count_operator == "exactly":
            more = nth_leaves(count + 1)
            return more if count == 0 else func.coalesce(more, nth_leaves(count))
        raise ValueError(f"unknown count operator {node.count_operator!r}")

    def message_change(self, node: MessageCondition) -> ColumnElement[int]:
        """When the latest matching delivery (report) inside the window leaves it: "sent" and reports
        within a window can only become false."""
        assert node.within_days is not None
        where, stamp = self.message_rows(node)
        return select(self.leaving(func.max(stamp), node.within_days)).where(*where).scalar_subquery()

    def change(self, node: Condition) -> tuple[bool, ColumnElement[int] | None]:
        """Whether ``node`` is timed, and its next_change (None: NULL for everyone).

        The earliest instant any timed leaf can flip, counting a leaf only while the untimed items
        beside it, at every level above it, leave its and / or open (a false untimed item decides an
        and, a true one an or, until data changes). Written flat, as one least() of guarded leaves, not
        nested level by level: SQLite's parser has a fixed stack that a few nested levels filled."""
        if not _timed(node):
            return False, None
        leaves = self.leaf_changes(node, ())
        if not leaves:
            return True, None
        return True, _least(
            [due if not guards else case((and_(*guards), due), else_=_NO_TIME) for due, guards in leaves]
        )

    def leaf_changes(
        self, node: Condition, guards: tuple[ColumnElement[bool], ...]
    ) -> list[tuple[ColumnElement[int], tuple[ColumnElement[bool], ...]]]:
        """The timed leaves under ``node`` with a next change, each with what must hold for it to count."""
        if isinstance(node, Not):
            return self.leaf_changes(node.item, guards)
        if isinstance(node, And | Or):
            untimed = [item for item in node.items if not _timed(item)]
            if untimed:
                held = [self.condition(item) for item in untimed]
                guards = (*guards, and_(*held) if isinstance(node, And) else not_(or_(*held)))
            found = []
            for item in node.items:
                if _timed(item):
                    found += self.leaf_changes(item, guards)
            return found
        due: ColumnElement[int] | None = None
        if isinstance(node, AttributeCondition):
            due = self.attribute_change(node.test)
        elif isinstance(node, EventCondition):
            due = self.event_change(node)
        elif isinstance(node, MessageCondition):
            due = self.message_change(node)
        return [] if due is None else [(due, guards)]


_NO_TIME: ColumnElement[int] = cast(null(), BigInteger())


def _timed(node: Condition) -> bool:
    """Whether time alone can change ``node``'s result (with no new data)."""
    if isinstance(node, Not):
        return _timed(node.item)
    if isinstance(node, And | Or):
        return any(_timed(item) for item in node.items)
    if isinstance(node, AttributeCondition):
        return node.test.operator in RELATIVE_OPERATORS
    if isinstance(node, EventCondition):
        return node.within_days is not None or node.timing is not None
    if isinstance(node, MessageCondition):
        return node.within_days is not None
    return False


def _inverse(expression: ColumnElement[bool], inverse: bool) -> ColumnElement[bool]:
    return not_(expression) if inverse else expression


def _count_test(
    operator: str, count: int, at_least: Callable[[int], ColumnElement[bool]]
) -> ColumnElement[bool]:
    """A count condition from ``at_least(n)``, the test that a person has at least n >= 1 such rows."""
    if operator == "at_least":
        return at_least(count)
    if operator == "at_most":
        return not_(at_least(count + 1))
    if operator == "exactly":
        absent = not_(at_least(count + 1))
        return absent if count == 0 else and_(at_least(count), absent)
    raise ValueError(f"unknown count operator {operator!r}")


def _nth_exists(rows: Any, n: int) -> ColumnElement[bool]:
    """Whether the query ``rows`` has at least ``n`` >= 1 rows."""
    if n == 1:
        found: ColumnElement[bool] = rows.exists()
        return found
    bounded: ColumnElement[bool] = rows.limit(1).offset(n - 1).exists()
    return bounded

"""The condition compiler (``tidings.segments.compiler``) against its Python reference (``oracle``), in
process on SQLite and PostgreSQL: readable examples per operator first, then properties over random
people and random conditions."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from tests.segments.oracle import (
    DeliveryRow,
    EventRow,
    PersonData,
    RelationshipRow,
    evaluate,
    next_change_py,
)
from tidings.db import Database
from tidings.models import (
    Delivery,
    DeliveryMetricReport,
    Device,
    Event,
    Object,
    Person,
    Relationship,
    Segment,
    SegmentMembership,
)
from tidings.segments import conditions as grammar
from tidings.segments import realtime
from tidings.segments.compiler import HORIZON, Context, next_change, predicate, time_parameters
from tidings.segments.conditions import (
    AttributeCondition,
    Condition,
    EventCondition,
    MessageCondition,
    dependencies,
    parse,
)
from tidings.workspaces.service import create_workspace

DAY = 86400
NOW = 1_700_000_000
Json = dict[str, Any]


# -- a workspace of people, written to the database and kept for the oracle ----------------------------


class World:
    """One workspace: people with their events, devices, relationships, memberships and deliveries, in
    the database and in memory (``people``: database id → PersonData)."""

    _serial = itertools.count()

    def __init__(self, db: Database) -> None:
        self.db = db
        with db.session() as session:
            self.workspace_id = create_workspace(session, f"w{next(self._serial)}", now=NOW).workspace_id
            segments = [
                Segment(workspace_id=self.workspace_id, name=f"s{i}", created_at=NOW, updated_at=NOW)
                for i in range(2)
            ]
            session.add_all(segments)
            session.flush()
            self.segment_ids = [segment.id for segment in segments]
        self.people: dict[int, PersonData] = {}

    def add(self, *people: PersonData) -> list[int]:
        """Store people; ``segments`` hold indexes into ``segment_ids``."""
        ws = self.workspace_id
        serial = next(self._serial)
        with self.db.session() as session:
            rows = [
                Person(
                    workspace_id=ws,
                    cio_id=p.cio_id,
                    customer_id=p.customer_id,
                    email=p.email,
                    email_key=p.email.lower() if p.email is not None else None,
                    created_at=p.created_at,
                    updated_at=p.created_at,
                    unsubscribed=p.unsubscribed,
                    attributes=p.attributes,
                )
                for p in people
            ]
            session.add_all(rows)
            session.flush()
            events: list[Json] = []
            devices: list[Json] = []
            memberships: list[Json] = []
            deliveries: list[Json] = []
            reports: list[Json] = []
            for row, p in zip(rows, people, strict=True):
                for i, e in enumerate(p.events):
                    events.append(
                        {
                            "workspace_id": ws,
                            "event_id": f"{serial}-{row.id}-{i}",
                            "person_id": row.id,
                            "type": e.type,
                            "name": e.name,
                            "data": e.data,
                            "timestamp": e.timestamp,
                            "received_at": NOW,
                        }
                    )
                for i, platform in enumerate(p.devices):
                    devices.append(
                        {
                            "workspace_id": ws,
                            "person_id": row.id,
                            "token": f"{serial}-{row.id}-{i}",
                            "platform": platform,
                            "last_used": NOW,
                            "created_at": NOW,
                        }
                    )
                for index in sorted(p.segments):
                    memberships.append(
                        {
                            "segment_id": self.segment_ids[index],
                            "person_id": row.id,
                            "workspace_id": ws,
                            "added_at": NOW,
                        }
                    )
                for i, r in enumerate(p.relationships):
                    obj = Object(
                        workspace_id=ws,
                        type_id=r.type_id,
                        object_id=f"{row.id}-{i}",
                        cio_object_id=f"{serial}-{row.id}-{i}",
                        attributes=r.object_attributes,
                        created_at=NOW,
                        updated_at=NOW,
                    )
                    session.add(obj)
                    session.flush()
                    session.add(
                        Relationship(
                            workspace_id=ws,
                            person_id=row.id,
                            object_pk=obj.id,
                            attributes=r.attributes,
                            created_at=NOW,
                            updated_at=NOW,
                        )
                    )
                for i, d in enumerate(p.deliveries):
                    delivery_id = f"{ws}-{serial}-{row.id}-{i}"
                    deliveries.append(
                        {
                            "id": delivery_id,
                            "workspace_id": ws,
                            "person_id": row.id,
                            "channel": d.channel,
                            "created_at": d.created_at,
                            "sent_at": d.created_at,
                            "state": "sent",
                        }
                    )
                    reports.extend(
                        {
                            "workspace_id": ws,
                            "delivery_id": delivery_id,
                            "metric": metric,
                            "timestamp": stamp,
                            "source": "track_metrics",
                            "received_at": NOW,
                        }
                        for metric, stamp in d.reports
                    )
            for model, values in (
                (Event, events),
                (Device, devices),
                (SegmentMembership, memberships),
                (Delivery, deliveries),
                (DeliveryMetricReport, reports),
            ):
                if values:
                    session.execute(insert(model), values)
            ids = [row.id for row in rows]
        for person_id, p in zip(ids, people, strict=True):
            segments = {self.segment_ids[index] for index in p.segments}
            self.people[person_id] = dataclasses.replace(p, segments=segments)
        return ids

    def condition(self, document: Json) -> Condition:
        """Parse a condition document; ``{"segment": {"index": i}}`` names the world's i-th segment."""
        return parse(self._segments(document))

    def _segments(self, document: Any) -> Any:
        if isinstance(document, dict):
            if set(document) == {"segment"} and "index" in document["segment"]:
                body = dict(document["segment"])
                body["id"] = self.segment_ids[body.pop("index")]
                return {"segment": body}
            return {key: self._segments(value) for key, value in document.items()}
        if isinstance(document, list):
            return [self._segments(item) for item in document]
        return document

    def matching(self, condition: Condition, now: int = NOW) -> set[int]:
        """Members by the statement built for ``now`` — checked equal to the live statement (built once,
        time bound at execution) run at the same instant."""
        results = []
        for ctx in self._contexts(now):
            query = select(Person.id).where(
                Person.workspace_id == self.workspace_id, predicate(condition, ctx)
            )
            # Twice each: the second run goes through SQLAlchemy's cache of compiled statements.
            for _ in range(2):
                with self.db.read_session() as session:
                    results.append(set(session.scalars(query, time_parameters(query)(now))))
        assert results[0] == results[1] == results[2] == results[3], "live and fixed-time statements disagree"
        return results[0]

    def next_changes(self, condition: Condition, now: int = NOW) -> dict[int, int | None] | None:
        results: list[dict[int, int | None]] = []
        for ctx in self._contexts(now):
            due = next_change(condition, ctx)
            if due is None:
                return None
            query = select(Person.id, due).where(Person.workspace_id == self.workspace_id)
            for _ in range(2):
                with self.db.read_session() as session:
                    rows = session.execute(query, time_parameters(query)(now))
                    results.append({row[0]: row[1] for row in rows})
        assert results[0] == results[1] == results[2] == results[3], "live and fixed-time statements disagree"
        return results[0]

    def _contexts(self, now: int) -> tuple[Context, Context]:
        # The live one is built for another instant on purpose: only the execution time may count.
        return (
            Context(workspace_id=self.workspace_id, now=now),
            Context(workspace_id=self.workspace_id, now=now - 12345, live=True),
        )


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.close()


def person(label: str, **fields: Any) -> PersonData:
    """A person whose customer id is ``label`` (customer_id may be overridden)."""
    fields.setdefault("customer_id", label)
    fields.setdefault("created_at", NOW - 100 * DAY)
    return PersonData(cio_id=f"cio-{label}", **fields)


class Examples:
    """A world of labelled people and the conditions asked of it: each check compares the SQL result
    with the expected labels and with the oracle."""

    def __init__(self, db: Database, *people: PersonData) -> None:
        self.world = World(db)
        ids = self.world.add(*people)
        self.labels = {
            person_id: p.cio_id.removeprefix("cio-") for person_id, p in zip(ids, people, strict=True)
        }

    def __call__(self, document: Json, *, now: int = NOW) -> set[str]:
        condition = self.world.condition(document)
        got = {self.labels[i] for i in self.world.matching(condition, now)}
        oracle = {self.labels[i] for i, p in self.world.people.items() if evaluate(condition, p, now)}
        assert got == oracle, f"SQL and oracle disagree on {document}"
        return got

    def next_change(self, document: Json, *, now: int = NOW) -> dict[str, int | None] | None:
        condition = self.world.condition(document)
        changes = self.world.next_changes(condition, now)
        if changes is None:
            return None
        for person_id, due in changes.items():
            assert due == next_change_py(condition, self.world.people[person_id], now), document
        return {self.labels[i]: due for i, due in changes.items()}


def attribute(field: str, operator: str, value: Any = None, **extra: Any) -> Json:
    body: Json = {"field": field, "operator": operator, **extra}
    if value is not None:
        body["value"] = value
    return {"attribute": body}


# -- examples ---------------------------------------------------------------------------------------------


def test_text_operators_keys_and_logic(db: Database) -> None:
    ask = Examples(
        db,
        person("pro", attributes={"plan": "Pro", "note": "50%_off today", "a.b": "flat"}),
        person("lower", attributes={"plan": "pro", "note": "50% off, 5x_off", "a": {"b": "flat"}}),
        person("pros", attributes={"plan": "Professional", "note": "50X_off"}),
        person("none", attributes={"plan": None}),
        person("bare"),
    )
    # Equality and substring tests are case-sensitive.
    assert ask(attribute("plan", "eq", "Pro")) == {"pro"}
    assert ask(attribute("plan", "contains", "Pro")) == {"pro", "pros"}
    assert ask(attribute("plan", "contains", "ro")) == {"pro", "lower", "pros"}
    assert ask(attribute("plan", "starts_with", "Pro")) == {"pro", "pros"}
    assert ask(attribute("plan", "ends_with", "al")) == {"pros"}
    assert ask(attribute("plan", "ends_with", "Professional!")) == set()
    assert ask(attribute("plan", "in", values=["pro", "team"])) == {"lower"}
    # % and _ are ordinary characters, not LIKE wildcards.
    assert ask(attribute("note", "contains", "50%_off")) == {"pro"}
    assert ask(attribute("note", "contains", "%")) == {"pro", "lower"}
    assert ask(attribute("note", "contains", "_off")) == {"pro", "lower", "pros"}
    assert ask(attribute("note", "starts_with", "50%")) == {"pro", "lower"}
    assert ask(attribute("note", "ends_with", "_off")) == {"lower", "pros"}
    # An empty operand matches any text.
    assert ask(attribute("plan", "contains", "")) == {"pro", "lower", "pros"}
    # A key with a dot is one key, not a path.
    assert ask(attribute("a.b", "eq", "flat")) == {"pro"}
    # exists: present and not null.
    assert ask(attribute("plan", "exists")) == {"pro", "lower", "pros"}
    # inverse negates the whole test: people without the attribute "do not equal" anything.
    assert ask(attribute("plan", "eq", "Pro", inverse=True)) == {"lower", "pros", "none", "bare"}
    assert ask(attribute("plan", "exists", inverse=True)) == {"none", "bare"}
    assert ask({"not": attribute("plan", "contains", "x")}) == {"pro", "lower", "pros", "none", "bare"}

    # Keys with dots, quotes, spaces, backslashes, non-ASCII characters: each is one key.
    keys = ["a.b", 'say "hi"', "with space", "back\\slash", "café", "$.x", "[0]", "it's", "tab\there", "5"]
    ask = Examples(
        db,
        person("all", attributes={key: f"v {key}" for key in keys}),
        person("numbers", attributes=dict.fromkeys(keys, 7)),
        person("other", attributes={"a": {"b": "v a.b"}, "x": "v $.x"}),
    )
    for key in keys:
        assert ask(attribute(key, "eq", f"v {key}")) == {"all"}, key
        assert ask(attribute(key, "exists")) == {"all", "numbers"}, key
        assert ask(attribute(key, "gt", 6)) == {"numbers"}, key

    # Logic is two-valued: no SQL NULL leaks through not, and, or.
    ask = Examples(db, person("with", attributes={"n": 3}), person("without"))
    has_big_n = attribute("n", "gt", 5)
    assert ask({"not": has_big_n}) == {"with", "without"}
    assert ask({"not": {"and": [has_big_n, attribute("n", "lt", 1)]}}) == {"with", "without"}
    assert ask({"or": [{"not": has_big_n}, has_big_n]}) == {"with", "without"}
    assert ask({"and": [{"not": attribute("n", "exists")}, {"not": has_big_n}]}) == {"without"}


def test_values_as_text_and_as_numbers(db: Database) -> None:
    ask = Examples(
        db,
        person("int", attributes={"v": 5}),
        person("float", attributes={"v": 5.0}),
        person("text", attributes={"v": "5"}),
        person("text5.0", attributes={"v": "5.0"}),
        person("half", attributes={"v": 2.5}),
        person("true", attributes={"v": True}),
        person("truetext", attributes={"v": "true"}),
        person("TRUE", attributes={"v": "TRUE"}),
        person("false", attributes={"v": False}),
        person("one", attributes={"v": 1}),
        person("list", attributes={"v": [5]}),
        person("object", attributes={"v": {"5": 5}}),
        person("spaced", attributes={"v": " 5"}),
        person("exp", attributes={"v": "5e0"}),
    )
    # 5, 5.0 and "5" all read as the text "5"; "5.0" stays itself.
    assert ask(attribute("v", "eq", "5")) == {"int", "float", "text"}
    assert ask(attribute("v", "eq", 5)) == {"int", "float", "text"}
    assert ask(attribute("v", "eq", "5.0")) == {"text5.0"}
    assert ask(attribute("v", "eq", "2.5")) == {"half"}
    # Numbers: JSON numbers and plain decimal strings; never booleans, lists, exponents or spaces.
    assert ask(attribute("v", "gte", 5)) == {"int", "float", "text", "text5.0"}
    assert ask(attribute("v", "lt", 5)) == {"half", "one"}
    assert ask(attribute("v", "between", values=[1, 2.5])) == {"half", "one"}
    assert ask(attribute("v", "gt", "2.4")) == {"int", "float", "text", "text5.0", "half"}
    # true/false: JSON booleans or exactly the text "true"/"false".
    assert ask(attribute("v", "is_true")) == {"true", "truetext"}
    assert ask(attribute("v", "is_false")) == {"false"}
    assert ask(attribute("v", "eq", "true")) == {"true", "truetext"}
    # Lists and objects exist but equal nothing.
    assert ask(attribute("v", "exists")) == set(ask.labels.values())
    assert ask(attribute("v", "contains", "5")) == {
        "int",
        "float",
        "text",
        "text5.0",
        "half",
        "spaced",
        "exp",
    }

    # Numbers no double can hold are harmless.
    ask = Examples(
        db,
        person("huge", attributes={"v": "9" * 400}),
        person("tiny", attributes={"v": "0." + "0" * 400 + "1"}),
        person("negative", attributes={"v": "-" + "9" * 400}),
        person("big", attributes={"v": 10**30}),
    )
    # Magnitudes past 1e300 read as ±1e300, below 1e-300 as 0: no cast can fail on PostgreSQL.
    assert ask(attribute("v", "gt", 1e299)) == {"huge"}
    assert ask(attribute("v", "eq", 0)) == set()
    assert ask(attribute("v", "lte", 0)) == {"tiny", "negative"}
    assert ask(attribute("v", "gt", 1e29)) == {"huge", "big"}


def test_text_equality_against_every_kind_of_value(db: Database) -> None:
    # eq and in compare a plain operand with the raw JSON reading, any other with text(): both must
    # leave numbers, booleans, objects and arrays out, and keep strings that look like them apart.
    ask = Examples(
        db,
        person("pro", attributes={"v": "pro"}),
        person("Pro", attributes={"v": "Pro"}),
        person("object", attributes={"v": {"pro": "pro"}}),
        person("list", attributes={"v": ["pro"]}),
        person("objecttext", attributes={"v": '{"pro":"pro"}'}),
        person("listtext", attributes={"v": '["pro"]'}),
        person("true", attributes={"v": True}),
        person("one", attributes={"v": 1}),
        person("inftext", attributes={"v": "Inf"}),
        person("null", attributes={"v": None}),
        person("missing"),
    )
    everyone = set(ask.labels.values())
    assert ask(attribute("v", "eq", "pro")) == {"pro"}
    assert ask(attribute("v", "eq", "pro", inverse=True)) == everyone - {"pro"}
    assert ask(attribute("v", "in", values=["pro", "Pro", "x"])) == {"pro", "Pro"}
    assert ask(attribute("v", "in", values=["pro"], inverse=True)) == everyone - {"pro"}
    assert ask(attribute("v", "eq", '{"pro":"pro"}')) == {"objecttext"}
    assert ask(attribute("v", "eq", '["pro"]')) == {"listtext"}
    assert ask(attribute("v", "in", values=['["pro"]', "1"])) == {"listtext", "one"}
    assert ask(attribute("v", "eq", "Inf")) == {"inftext"}
    assert ask(attribute("v", "eq", "true")) == {"true"}


def test_text_search_before_the_json_read(db: Database) -> None:
    # On SQLite eq and in first look for the operand's JSON text in the stored document; the JSON read
    # still decides. The text appearing elsewhere (another key, a key, a longer string) must not match,
    # and operands JSON writes with escapes (quotes, backslashes, control characters) must still match.
    ask = Examples(
        db,
        person("pro", attributes={"v": "pro"}),
        person("elsewhere", attributes={"v": "free", "w": "pro", "pro": "pro"}),
        person("longer", attributes={"v": "propose"}),
        person("nested", attributes={"v": {"v": "pro"}}),
        person("unicode", attributes={"v": "Zürich 🎉"}),
        person("quote", attributes={"v": 'say "hi"'}),
        person("backslash", attributes={"v": "C:\\dir"}),
        person("tab", attributes={"v": "a\tb"}),
    )
    assert ask(attribute("v", "eq", "pro")) == {"pro"}
    assert ask(attribute("v", "eq", "pro", inverse=True)) == set(ask.labels.values()) - {"pro"}
    assert ask(attribute("w", "eq", "pro")) == {"elsewhere"}
    assert ask(attribute("v", "eq", "Zürich 🎉")) == {"unicode"}
    assert ask(attribute("v", "eq", 'say "hi"')) == {"quote"}
    assert ask(attribute("v", "eq", "C:\\dir")) == {"backslash"}
    assert ask(attribute("v", "eq", "a\tb")) == {"tab"}
    assert ask(attribute("v", "in", values=["pro", "Zürich 🎉", 'say "hi"'])) == {"pro", "unicode", "quote"}
    many = ["x1", "x2", "x3", "x4", "x5", "propose", "a\tb"]
    assert ask(attribute("v", "in", values=many)) == {"longer", "tab"}
    assert ask(attribute("v", "in", values=["free", "pro"], inverse=True)) == set(ask.labels.values()) - {
        "pro",
        "elsewhere",
    }


def test_person_fields(db: Database) -> None:
    ask = Examples(
        db,
        person("42", email="Ana@Example.com", created_at=NOW - 10 * DAY, unsubscribed=True),
        person("bob", email=None, created_at=NOW - DAY),
        person("noid", customer_id=None, email="x@example.com", created_at=NOW),
    )
    assert ask(attribute("id", "eq", "42")) == {"42"}
    assert ask(attribute("id", "gt", 41)) == {"42"}
    assert ask(attribute("id", "exists")) == {"42", "bob"}
    assert ask(attribute("email", "ends_with", "@Example.com")) == {"42"}
    assert ask(attribute("email", "exists", inverse=True)) == {"bob"}
    assert ask(attribute("cio_id", "eq", "cio-bob")) == {"bob"}
    assert ask(attribute("created_at", "newer_than", days=2)) == {"bob", "noid"}
    assert ask(attribute("created_at", "eq", str(NOW))) == {"noid"}
    assert ask(attribute("unsubscribed", "is_true")) == {"42"}
    assert ask(attribute("unsubscribed", "is_false")) == {"bob", "noid"}
    assert ask(attribute("unsubscribed", "eq", "true")) == {"42"}


def test_relative_dates_and_when_they_change(db: Database) -> None:
    ask = Examples(
        db,
        person("past", attributes={"at": NOW - 3 * DAY}),
        person("edge", attributes={"at": NOW - DAY}),
        person("soon", attributes={"at": str(NOW + DAY // 2)}),
        person("later", attributes={"at": NOW + 5 * DAY + 0.5}),
        person("text", attributes={"at": "yesterday"}),
    )
    assert ask(attribute("at", "older_than", days=1)) == {"past"}
    assert ask(attribute("at", "newer_than", days=1)) == {"edge"}
    assert ask(attribute("at", "within_next", days=1)) == {"soon"}
    assert ask(attribute("at", "within_next", days=7)) == {"soon", "later"}
    # older_than 1 day: edge (at = now - 1 day) becomes older one second after a day has fully passed.
    changes = ask.next_change(attribute("at", "older_than", days=1))
    assert changes == {
        "past": None,
        "edge": NOW + 1,
        "soon": NOW + DAY // 2 + DAY + 1,
        "later": NOW + 6 * DAY + 1,
        "text": None,
    }
    # newer_than: true from the instant itself (rounded up to a whole second), false a window later.
    changes = ask.next_change(attribute("at", "newer_than", days=1))
    assert changes == {
        "past": None,
        "edge": NOW + 1,
        "soon": NOW + DAY // 2,
        "later": NOW + 5 * DAY + 1,
        "text": None,
    }
    assert ask(attribute("at", "newer_than", days=1), now=NOW + 1) == set()
    assert ask(attribute("at", "newer_than", days=1), now=NOW + 5 * DAY + 1) == {"later"}
    # within_next: true a window before the instant, false just after it.
    changes = ask.next_change(attribute("at", "within_next", days=1))
    assert changes == {
        "past": None,
        "edge": None,
        "soon": NOW + DAY // 2 + 1,
        "later": NOW + 4 * DAY + 1,
        "text": None,
    }
    # No relative operator: nothing to wait for.
    assert ask.next_change(attribute("at", "gt", 0)) is None


def test_events_counted(db: Database) -> None:
    def buy(days_ago: float, **data: Any) -> EventRow:
        return EventRow("event", "buy", int(NOW - days_ago * DAY), data)

    ask = Examples(
        db,
        person("never"),
        person("once", events=[buy(10, total=5)]),
        person("thrice", events=[buy(1, total=50), buy(2, total="7"), buy(20, total=5)]),
        person("pager", events=[EventRow("page", "buy", NOW - DAY), EventRow("event", "Buy", NOW - DAY)]),
    )
    assert ask({"event": {"name": "buy"}}) == {"once", "thrice"}
    assert ask({"event": {"name": "buy", "inverse": True}}) == {"never", "pager"}
    assert ask({"event": {"name": "buy", "count": {"operator": "at_least", "value": 3}}}) == {"thrice"}
    assert ask({"event": {"name": "buy", "count": {"operator": "at_least", "value": 0}}}) == set(
        ask.labels.values()
    )
    # at_most 0 and exactly 0 hold for people with no such event at all.
    assert ask({"event": {"name": "buy", "count": {"operator": "at_most", "value": 0}}}) == {"never", "pager"}
    assert ask({"event": {"name": "buy", "count": {"operator": "exactly", "value": 0}}}) == {"never", "pager"}
    assert ask({"event": {"name": "buy", "count": {"operator": "exactly", "value": 1}}}) == {"once"}
    assert ask({"event": {"name": "buy", "count": {"operator": "at_most", "value": 1}}}) == {
        "never",
        "once",
        "pager",
    }
    # Windows count events with timestamp >= now - days.
    within = {"event": {"name": "buy", "within": {"days": 2}, "count": {"operator": "at_least", "value": 2}}}
    assert ask(within) == {"thrice"}
    assert ask(within, now=NOW + 1) == set()
    assert ask.next_change(within) == {"never": None, "once": None, "thrice": NOW + 1, "pager": None}
    # Names and filters.
    assert ask({"event": {"name": {"operator": "starts_with", "value": "Bu"}}}) == {"pager"}
    assert ask({"page": {"name": "buy"}}) == {"pager"}
    assert ask({"page": {}}) == {"pager"}
    filtered = {"event": {"name": "buy", "filters": [{"field": "total", "operator": "gt", "value": 6}]}}
    assert ask(filtered) == {"thrice"}
    filtered_twice = {
        "event": {
            "name": "buy",
            "filters": [{"field": "total", "operator": "gte", "value": 5}],
            "count": {"operator": "exactly", "value": 3},
        }
    }
    assert ask(filtered_twice) == {"thrice"}


def test_events_timed(db: Database) -> None:
    ask = Examples(
        db,
        person("never"),
        person("old", events=[EventRow("event", "login", NOW - 40 * DAY)]),
        person(
            "both", events=[EventRow("event", "login", NOW - 40 * DAY), EventRow("event", "login", NOW - DAY)]
        ),
        person("future", events=[EventRow("event", "login", NOW + 100)]),
    )

    def timed(which: str, operator: str, days: float) -> Json:
        return {"event": {"name": "login", "timing": {"which": which, "operator": operator, "days": days}}}

    assert ask(timed("first", "older_than", 30)) == {"old", "both"}
    assert ask(timed("last", "older_than", 30)) == {"old"}
    assert ask(timed("last", "newer_than", 7)) == {"both"}
    assert ask(timed("first", "newer_than", 7)) == set()
    # No such event is never "older than" anything.
    assert ask({"not": timed("last", "older_than", 30)}) == {"never", "both", "future"}
    assert ask.next_change(timed("last", "newer_than", 7)) == {
        "never": None,
        "old": None,
        "both": NOW + 6 * DAY + 1,
        "future": NOW + 100,
    }
    assert ask.next_change(timed("last", "older_than", 30)) == {
        "never": None,
        "old": None,
        "both": NOW + 29 * DAY + 1,
        "future": NOW + 100 + 30 * DAY + 1,
    }


def test_deeply_nested_time_conditions(db: Database) -> None:
    # When a result next changes is one least() over the timed leaves, each guarded by the untimed items
    # beside it at every level: nested level by level, a few levels filled SQLite's parser stack.
    ask = Examples(
        db,
        person(
            "pro",
            attributes={"plan": "pro", "seen": NOW - DAY // 2},
            events=[
                EventRow("event", "buy", NOW - DAY, {"price": 150}),
                EventRow("event", "buy", NOW - 2 * DAY, {"price": 250}),
            ],
        ),
        person(
            "free",
            attributes={"plan": "free", "seen": NOW - 3 * DAY},
            events=[
                EventRow("event", "buy", NOW - DAY // 4, {"price": 500}),
            ],
        ),
        person("none"),
    )
    bought = {
        "event": {
            "name": "buy",
            "filters": [{"field": "price", "operator": "gt", "value": 100}],
            "within": {"days": 3},
        }
    }
    seen = attribute("seen", "newer_than", days=1)
    document: Json = {"and": [bought, seen]}
    for level in range(9):
        untimed = attribute("plan", "eq", "pro") if level % 2 else attribute("plan", "exists", inverse=True)
        document = {"or": [{"and": [document, untimed]}, {"not": {"and": [bought, seen]}}]}
    ask(document)
    changes = ask.next_change(document)
    assert changes is not None
    assert changes["pro"] == NOW + DAY // 2 + 1
    assert changes["none"] is None


def test_devices_objects_segments_and_messages(db: Database) -> None:
    ask = Examples(
        db,
        person(
            "a",
            devices=["ios"],
            segments={0},
            relationships=[RelationshipRow("1", {"plan": "enterprise", "seats": 50}, {"role": "admin"})],
            deliveries=[
                DeliveryRow("email", NOW - 2 * DAY, [("opened", NOW - DAY), ("clicked", NOW - 9 * DAY)])
            ],
        ),
        person(
            "b",
            devices=["android", "ios"],
            relationships=[
                RelationshipRow("1", {"plan": "free"}, {"role": "admin"}),
                RelationshipRow("2", {"plan": "enterprise"}, {"role": "member"}),
            ],
            deliveries=[DeliveryRow("push", NOW - 10 * DAY, [("delivered", NOW - 10 * DAY)])],
        ),
        person("c", segments={0, 1}),
    )
    assert ask({"device": {}}) == {"a", "b"}
    assert ask({"device": {"platform": "android"}}) == {"b"}
    assert ask({"device": {"platform": "android", "inverse": True}}) == {"a", "c"}
    assert ask({"segment": {"index": 0}}) == {"a", "c"}
    assert ask({"segment": {"index": 1, "inverse": True}}) == {"a", "b"}
    enterprise = [{"field": "plan", "operator": "eq", "value": "enterprise"}]
    admin = [{"field": "role", "operator": "eq", "value": "admin"}]
    assert ask({"object": {"type_id": "1"}}) == {"a", "b"}
    assert ask({"object": {"type_id": 2}}) == {"b"}
    assert ask({"object": {"type_id": "1", "filters": enterprise}}) == {"a"}
    # Object and relationship filters must hold for the same relationship.
    assert ask({"object": {"type_id": "2", "filters": enterprise, "relationship_filters": admin}}) == set()
    assert ask({"object": {"type_id": "1", "relationship_filters": admin, "inverse": True}}) == {"c"}
    assert ask({"message": {"activity": "sent"}}) == {"a", "b"}
    assert ask({"message": {"activity": "sent", "channel": "push"}}) == {"b"}
    assert ask({"message": {"activity": "sent", "within": {"days": 7}}}) == {"a"}
    assert ask({"message": {"activity": "opened", "within": {"days": 7}}}) == {"a"}
    assert ask({"message": {"activity": "clicked", "within": {"days": 7}}}) == set()
    assert ask({"message": {"activity": "delivered", "channel": "email"}}) == set()
    assert ask({"message": {"activity": "bounced", "inverse": True}}) == {"a", "b", "c"}
    assert ask.next_change({"message": {"activity": "opened", "within": {"days": 7}}}) == {
        "a": NOW + 6 * DAY + 1,
        "b": None,
        "c": None,
    }
    assert ask.next_change({"message": {"activity": "sent", "within": {"days": 7}}}) == {
        "a": NOW + 5 * DAY + 1,
        "b": None,
        "c": None,
    }


def test_next_change_only_when_time_can_flip_the_result(db: Database) -> None:
    """Windows only lose rows as time passes, and untimed parts of and / or hold until data changes: no
    instant is named when the result cannot flip by time alone."""

    def buys(*days_ago: float) -> list[EventRow]:
        return [EventRow("event", "purchase", int(NOW - d * DAY)) for d in days_ago]

    ask = Examples(
        db,
        person("member", attributes={"plan": "pro"}, events=buys(1, 5, 10, 20, 40)),
        person("free", attributes={"plan": "free"}, events=buys(2, 4, 6)),
        person("few", attributes={"plan": "pro"}, events=buys(3, 25)),
        person("none", attributes={"plan": "pro"}),
    )
    pro = attribute("plan", "eq", "pro")

    def purchases(operator: str, n: int) -> Json:
        return {
            "event": {"name": "purchase", "count": {"operator": operator, "value": n}, "within": {"days": 30}}
        }

    # at_least: only while true, when the n-th latest purchase leaves the window (then it is false).
    assert ask(purchases("at_least", 3)) == {"member", "free"}
    assert ask.next_change(purchases("at_least", 3)) == {
        "member": NOW + 20 * DAY + 1,
        "free": NOW + 24 * DAY + 1,
        "few": None,
        "none": None,
    }
    assert ask(purchases("at_least", 3), now=NOW + 20 * DAY + 1) == {"free"}
    # The benchmark's segment: a false untimed item settles the and.
    segment = {"and": [pro, purchases("at_least", 3)]}
    assert ask(segment) == {"member"}
    assert ask.next_change(segment) == {"member": NOW + 20 * DAY + 1, "free": None, "few": None, "none": None}
    assert ask.next_change({"not": segment}) == ask.next_change(segment)
    # at_most: only while false, when the (n + 1)-th latest leaves (then it is true).
    assert ask(purchases("at_most", 2)) == {"few", "none"}
    assert ask.next_change(purchases("at_most", 2)) == {
        "member": NOW + 20 * DAY + 1,
        "free": NOW + 24 * DAY + 1,
        "few": None,
        "none": None,
    }
    # exactly: both ways.
    assert ask(purchases("exactly", 2)) == {"few"}
    assert ask.next_change(purchases("exactly", 2)) == {
        "member": NOW + 20 * DAY + 1,
        "free": NOW + 24 * DAY + 1,
        "few": NOW + 5 * DAY + 1,
        "none": None,
    }
    assert ask.next_change(purchases("exactly", 0)) == {
        "member": NOW + 29 * DAY + 1,
        "free": NOW + 28 * DAY + 1,
        "few": NOW + 27 * DAY + 1,
        "none": None,
    }
    # at_least 0 always holds.
    assert ask.next_change(purchases("at_least", 0)) == dict.fromkeys(["member", "free", "few", "none"])
    # A true untimed item settles an or.
    assert ask.next_change({"or": [pro, purchases("at_least", 3)]}) == {
        "member": None,
        "free": NOW + 24 * DAY + 1,
        "few": None,
        "none": None,
    }
    # Several timed items: the first of their instants.
    either = {"or": [purchases("at_least", 3), purchases("exactly", 2)]}
    assert ask.next_change(either) == {
        "member": NOW + 20 * DAY + 1,
        "free": NOW + 24 * DAY + 1,
        "few": NOW + 5 * DAY + 1,
        "none": None,
    }


def test_other_workspaces_rows_never_count(db: Database) -> None:
    """Rows of another workspace that point at this workspace's people (or deliveries) are ignored."""
    ask = Examples(db, person("p", deliveries=[DeliveryRow("email", NOW, [])]))
    other = World(db)
    (person_id,) = ask.world.people
    with db.read_session() as session:
        delivery_id = session.scalars(select(Delivery.id).where(Delivery.person_id == person_id)).one()
    ws = other.workspace_id
    with db.session() as session:
        session.execute(
            insert(Event),
            [
                {
                    "workspace_id": ws,
                    "event_id": "x",
                    "person_id": person_id,
                    "name": "buy",
                    "timestamp": NOW,
                    "received_at": NOW,
                }
            ],
        )
        session.execute(
            insert(Device),
            [
                {
                    "workspace_id": ws,
                    "person_id": person_id,
                    "token": "t",
                    "platform": "ios",
                    "last_used": NOW,
                    "created_at": NOW,
                }
            ],
        )
        session.execute(
            insert(SegmentMembership),
            [
                {
                    "segment_id": other.segment_ids[0],
                    "person_id": person_id,
                    "workspace_id": ws,
                    "added_at": NOW,
                }
            ],
        )
        session.execute(
            insert(DeliveryMetricReport),
            [
                {
                    "workspace_id": ws,
                    "delivery_id": delivery_id,
                    "metric": "opened",
                    "timestamp": NOW,
                    "source": "x",
                    "received_at": NOW,
                }
            ],
        )
        obj = Object(
            workspace_id=ws,
            type_id="1",
            object_id="o",
            cio_object_id="o",
            attributes={},
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(obj)
        session.flush()
        session.add(
            Relationship(
                workspace_id=ws,
                person_id=person_id,
                object_pk=obj.id,
                attributes={},
                created_at=NOW,
                updated_at=NOW,
            )
        )
    other_segment = {"segment": {"id": other.segment_ids[0]}}
    assert ask({"event": {"name": "buy"}}) == set()
    assert ask({"device": {}}) == set()
    assert ask(other_segment) == set()
    assert ask({"message": {"activity": "opened"}}) == set()
    assert ask({"message": {"activity": "sent"}}) == {"p"}
    assert ask({"object": {"type_id": "1"}}) == set()


# -- properties -------------------------------------------------------------------------------------------

KEYS = ["plan", "n", "at", "a.b", 'q"k', "sp ace", "café"]
DATA_KEYS = ["price", "sku", "a.b"]
OBJECT_KEYS = ["plan", "seats", "role"]
TEXTS = [
    "5",
    "5.0",
    "2.5",
    "-3",
    "007",
    "true",
    "false",
    "TRUE",
    "Pro",
    "pro",
    "Professional",
    "50%_off",
    "%",
    "_",
]
TEXTS += ["", " 5", "5.", "1e3", "a.b", "Ünï", "-"]
NAMES = ["buy", "Buy", "buy_now", "/home", "/home/x", "50%_off"]
HALF_DAY = DAY // 2

timestamps = st.builds(
    lambda half_days, jitter: NOW + half_days * HALF_DAY + jitter,
    st.integers(-24, 24),
    st.sampled_from([-1, 0, 0, 1]),
)
values = st.one_of(
    st.sampled_from(TEXTS),
    st.integers(-3, 10),
    st.sampled_from([2.5, 5.0, -0.5, 0.25, 1.5, 7.0]),
    st.booleans(),
    st.none(),
    st.sampled_from([{"x": 1}, [1, "a"]]),
    timestamps,
    timestamps.map(str),
    timestamps.map(lambda t: t + 0.5),
)


def documents(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=3)


events = st.builds(
    EventRow,
    type=st.sampled_from(["event", "event", "page", "screen"]),
    name=st.sampled_from(NAMES),
    timestamp=timestamps,
    data=documents(DATA_KEYS),
)
relationships = st.builds(
    RelationshipRow,
    type_id=st.sampled_from(["1", "2"]),
    object_attributes=documents(OBJECT_KEYS),
    attributes=documents(OBJECT_KEYS),
)
METRICS = ["delivered", "opened", "clicked", "converted", "bounced", "unsubscribed"]
deliveries = st.builds(
    DeliveryRow,
    channel=st.sampled_from(["email", "push"]),
    created_at=timestamps,
    reports=st.lists(st.tuples(st.sampled_from(METRICS), timestamps), max_size=3),
)
people_data = st.builds(
    PersonData,
    cio_id=st.just(""),
    created_at=timestamps,
    customer_id=st.sampled_from([None, "5", "abc", "true", "Pro", "7.5", "-2"]),
    email=st.sampled_from([None, "A@x.com", "b@y.org", "50%_off@x.com"]),
    unsubscribed=st.booleans(),
    attributes=documents(KEYS),
    events=st.lists(events, max_size=5),
    devices=st.lists(st.sampled_from(["ios", "android"]), max_size=2),
    relationships=st.lists(relationships, max_size=2),
    segments=st.sets(st.sampled_from([0, 1])),
    deliveries=st.lists(deliveries, max_size=2),
)


def _distinct(people: list[PersonData]) -> list[PersonData]:
    """Give each person a cio_id, and no two the same customer id or email (unique per workspace)."""
    seen: set[str] = set()
    result = []
    for index, p in enumerate(people):
        customer_id = p.customer_id if p.customer_id is None or p.customer_id.lower() not in seen else None
        email = p.email if p.email is None or p.email.lower() not in seen else None
        seen |= {x.lower() for x in (customer_id, email) if x is not None}
        result.append(dataclasses.replace(p, cio_id=f"cio-{index}", customer_id=customer_id, email=email))
    return result


populations = st.lists(people_data, min_size=3, max_size=8).map(_distinct)

# Every operator the parser knows, in a fixed order so hypothesis examples replay.
OPERATORS = sorted(grammar.OPERATORS - grammar.RELATIVE_OPERATORS)
RELATIVE = sorted(grammar.RELATIVE_OPERATORS)
DAYS = st.sampled_from([0, 0.5, 1, 1.25, 2, 7, 10])
text_operands = st.one_of(st.sampled_from([*TEXTS, "o", "ro", "Pr", "off", "0", "5"]), st.integers(-3, 10))
number_operands = st.one_of(
    st.sampled_from([-1, 0, 2.5, 5, 7, "5", "-3", float(NOW), NOW - DAY, NOW + DAY]), st.integers(-3, 10)
)


def attribute_tests(fields: list[str], *, relative: bool) -> st.SearchStrategy[Json]:
    def operand(operator: str) -> st.SearchStrategy[Json]:
        if operator in ("eq", "contains", "starts_with", "ends_with"):
            return text_operands.map(lambda v: {"value": v})
        if operator in ("gt", "gte", "lt", "lte"):
            return number_operands.map(lambda v: {"value": v})
        if operator == "between":
            return st.lists(number_operands.map(lambda v: float(str(v))), min_size=2, max_size=2).map(
                lambda v: {"values": sorted(v)}
            )
        if operator == "in":
            return st.lists(text_operands, min_size=1, max_size=3).map(lambda v: {"values": v})
        if operator in RELATIVE:
            return DAYS.map(lambda d: {"days": d})
        return st.just({})

    operators = OPERATORS + (RELATIVE * 2 if relative else [])
    return st.builds(
        lambda field, body, inverse: {"field": field, **body, "inverse": inverse},
        st.sampled_from(fields),
        st.sampled_from(operators).flatmap(lambda op: operand(op).map(lambda body: {"operator": op, **body})),
        st.booleans(),
    )


def _event(kind: str, name: Any, filters: list[Json], shape: Json, inverse: bool) -> Json:
    body: Json = {"filters": filters, "inverse": inverse, **shape}
    if name is not None:
        body["name"] = name
    return {kind: body}


names = st.one_of(
    st.sampled_from(NAMES),
    st.builds(
        lambda op, value: {"operator": op, "value": value},
        st.sampled_from(["eq", "contains", "starts_with", "ends_with"]),
        st.sampled_from([*NAMES, "uy", "B", "/", "%", "_"]),
    ),
)
withins = st.one_of(st.just("ever"), DAYS.map(lambda d: {"days": d}))
event_shapes = st.one_of(
    st.just({}),
    st.builds(
        lambda op, n, within: {"count": {"operator": op, "value": n}, "within": within},
        st.sampled_from(["at_least", "at_most", "exactly"]),
        st.integers(0, 3),
        withins,
    ),
    st.builds(
        lambda which, op, days: {"timing": {"which": which, "operator": op, "days": days}},
        st.sampled_from(["first", "last"]),
        st.sampled_from(["older_than", "newer_than"]),
        DAYS,
    ),
)
leaves = st.one_of(
    attribute_tests([*KEYS, "id", "email", "cio_id", "created_at", "unsubscribed"], relative=True).map(
        lambda t: {"attribute": t}
    ),
    st.builds(
        lambda i, inverse: {"segment": {"index": i, "inverse": inverse}},
        st.sampled_from([0, 1]),
        st.booleans(),
    ),
    st.builds(
        _event,
        st.just("event"),
        names,
        st.lists(attribute_tests(DATA_KEYS, relative=False), max_size=2),
        event_shapes,
        st.booleans(),
    ),
    st.builds(
        _event,
        st.sampled_from(["page", "screen"]),
        st.one_of(st.none(), names),
        st.lists(attribute_tests(DATA_KEYS, relative=False), max_size=1),
        event_shapes,
        st.booleans(),
    ),
    st.builds(
        lambda platform, inverse: {"device": {"platform": platform, "inverse": inverse}},
        st.sampled_from([None, "ios", "android"]),
        st.booleans(),
    ),
    st.builds(
        lambda type_id, filters, rfilters, inverse: {
            "object": {
                "type_id": type_id,
                "filters": filters,
                "relationship_filters": rfilters,
                "inverse": inverse,
            }
        },
        st.sampled_from(["1", "2"]),
        st.lists(attribute_tests(OBJECT_KEYS, relative=False), max_size=2),
        st.lists(attribute_tests(OBJECT_KEYS, relative=False), max_size=1),
        st.booleans(),
    ),
    st.builds(
        lambda activity, channel, within, inverse: {
            "message": {"activity": activity, "channel": channel, "within": within, "inverse": inverse}
        },
        st.sampled_from(["sent", *METRICS]),
        st.sampled_from([None, "email", "push"]),
        withins,
        st.booleans(),
    ),
)
conditions = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"and": items}),
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"or": items}),
        children.map(lambda item: {"not": item}),
    ),
    max_leaves=5,
)
moments = st.sampled_from([0, 0, 1, -1, HALF_DAY, DAY, -DAY, 3 * DAY + 1]).map(lambda offset: NOW + offset)


def check(world: World, condition: Condition, now: int) -> None:
    """SQL predicate == oracle for everyone; SQL next_change == oracle's; and the oracle's result does not
    change before that instant."""
    want = {i for i, p in world.people.items() if evaluate(condition, p, now)}
    assert world.matching(condition, now) == want
    changes = world.next_changes(condition, now)
    if changes is None:
        assert not dependencies(condition).timed
        return
    for person_id, p in world.people.items():
        due = next_change_py(condition, p, now)
        assert changes[person_id] == due, f"next_change of person {person_id}"
        result = evaluate(condition, p, now)
        end = due if due is not None else HORIZON
        for moment in {now + 1, (now + end) // 2, end - 1, now + HALF_DAY, now + 40 * DAY}:
            if now < moment < end:
                assert evaluate(condition, p, moment) == result, f"changed at {moment} before {due}"
        # A lone relative test or timed event flips exactly then (unless its window is shorter than a
        # second: newer_than 0 days of a fractional instant holds at no whole second, so its candidates
        # are early, which is allowed).
        # The same for a lone window of at_least / at_most (ties may make exactly skip its count) or of
        # messages.
        exact = (
            (isinstance(condition, AttributeCondition) and condition.test.value != 0)
            or (isinstance(condition, EventCondition) and condition.timing is not None)
            or (
                isinstance(condition, EventCondition)
                and condition.within_days is not None
                and condition.count_operator != "exactly"
            )
            or (isinstance(condition, MessageCondition) and condition.within_days is not None)
        )
        if exact and due is not None and due < HORIZON:
            assert evaluate(condition, p, due) != result


PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@PROPERTY_SETTINGS
@given(population=populations, data=st.data())
def test_sql_agrees_with_the_oracle(db: Database, population: list[PersonData], data: st.DataObject) -> None:
    world = World(db)
    world.add(*population)
    for _ in range(15):
        condition = world.condition(data.draw(conditions, label="condition"))
        check(world, condition, data.draw(moments, label="now"))


relative_tests = st.builds(
    lambda field, operator, days, inverse: {
        "field": field,
        "operator": operator,
        "days": days,
        "inverse": inverse,
    },
    st.sampled_from(["at", "n", "created_at"]),
    st.sampled_from(RELATIVE),
    DAYS,
    st.booleans(),
)
time_leaves = st.one_of(
    relative_tests.map(lambda t: {"attribute": t}),
    st.builds(
        _event,
        st.sampled_from(["event", "page"]),
        st.sampled_from(NAMES),
        st.just([]),
        st.one_of(event_shapes, withins.map(lambda within: {"within": within})),
        st.booleans(),
    ),
    st.builds(
        lambda activity, within: {"message": {"activity": activity, "within": within}},
        st.sampled_from(["sent", "opened", "clicked"]),
        DAYS.map(lambda d: {"days": d}),
    ),
)


untimed_leaves = st.one_of(
    attribute_tests(["plan", "n", "at"], relative=False).map(lambda t: {"attribute": t}),
    st.builds(
        lambda i, inverse: {"segment": {"index": i, "inverse": inverse}},
        st.sampled_from([0, 1]),
        st.booleans(),
    ),
    st.builds(
        lambda platform, inverse: {"device": {"platform": platform, "inverse": inverse}},
        st.sampled_from([None, "ios"]),
        st.booleans(),
    ),
)
# Timed and untimed items under and / or / not: untimed ones decide when no instant is named.
mixed_conditions = st.recursive(
    st.one_of(time_leaves, untimed_leaves),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"and": items}),
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"or": items}),
        children.map(lambda item: {"not": item}),
    ),
    max_leaves=4,
)


@PROPERTY_SETTINGS
@given(population=populations, data=st.data())
def test_next_change_agrees_with_the_oracle(
    db: Database, population: list[PersonData], data: st.DataObject
) -> None:
    """Time-dependent conditions only, evaluated again at the instants next_change names."""
    world = World(db)
    world.add(*population)
    timed = st.one_of(
        time_leaves,
        st.lists(time_leaves, min_size=2, max_size=3).map(lambda items: {"or": items}),
        mixed_conditions,
    )
    for _ in range(10):
        condition = world.condition(data.draw(timed, label="condition"))
        now = data.draw(moments, label="now")
        check(world, condition, now)
        changes = world.next_changes(condition, now) or {}
        for later in sorted({due for due in changes.values() if due is not None and due < HORIZON})[:2]:
            check(world, condition, later)


def test_a_build_step_fetching_people_by_their_counted_events_finds_the_same_members(
    db: Database, database_url: str
) -> None:
    """On PostgreSQL a build step whose condition needs n events of one name fetches by key only the
    people with them when few of the first part's keys have any (realtime.drives); otherwise, and on
    SQLite, it reads the whole range. Both ways find the members a search finds."""
    world = World(db)
    people = []
    for index in range(60):
        events = [EventRow("event", "visit", NOW - DAY, {})]
        if index >= 10 and index % 7 == 0:
            events += [EventRow("event", "gift", NOW - (n + 1) * DAY, {}) for n in range(1 + index % 3)]
        plan = "pro" if index % 2 else "free"
        people.append(person(f"p{index}", attributes={"plan": plan}, events=events))
    ids = world.add(*people)
    low, high = min(ids), max(ids)
    gifted = world.condition(
        {
            "and": [
                attribute("plan", "eq", "pro"),
                {"event": {"name": "gift", "count": {"operator": "at_least", "value": 2}}},
            ]
        }
    )
    visited = world.condition({"event": {"name": "visit", "within": {"days": 2}}})
    on_postgres = database_url.startswith("postgresql")
    for condition, driven in ((gifted, on_postgres), (visited, False)):
        definition = realtime.Definition(world.segment_ids[1], 1, condition, dependencies(condition))
        with db.session() as session:
            assert (
                realtime.drives(session, world.workspace_id, definition, low, high, now=NOW, part_keys=10)
                is driven
            )
        expected = world.matching(condition)
        assert expected
        for drive in (False, True) if on_postgres else (False,):
            with db.session() as session:
                realtime.evaluate_range(
                    session,
                    world.workspace_id,
                    definition,
                    low,
                    high,
                    now=NOW,
                    emit=False,
                    part_keys=10,
                    drive=drive,
                )
                found = set(
                    session.scalars(
                        select(SegmentMembership.person_id).where(
                            SegmentMembership.segment_id == definition.id
                        )
                    )
                )
                session.rollback()
            assert found == expected, (condition, drive)

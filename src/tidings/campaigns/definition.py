"""A campaign's definition document: trigger, entry filters, re-entry rules, goal, exit rules and workflow.

Written as JSON or YAML (``tidings campaigns apply``, ``POST /v1/campaigns``); docs/campaigns.md shows every
part. :func:`parse` checks the whole document and returns a :class:`Definition`; errors name the part (and,
in the workflow, the block) at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.ai import block as _llm_block  # registers the LLM action
from tidings.journeys import blocks as _blocks  # registers the block types
from tidings.journeys.blocks import CLOCK, DAYS, as_time
from tidings.journeys.workflow import DefinitionError, Parser, Workflow, compile_steps, parse_duration
from tidings.segments.conditions import ConditionError
from tidings.segments.conditions import parse as parse_condition

assert _blocks.RUNNERS
assert _llm_block.KEYS
TRIGGER_TYPES = ("event", "segment", "attribute", "date", "object", "relationship", "broadcast", "scheduled")
REENTRY_MODES = ("once", "always", "every")
MAX_NAME = 190
KEYS = {"name", "description", "tags", "trigger", "filters", "reentry", "goal", "exit", "steps", "timezone"}
EVENT_OPERATORS = ("eq", "neq", "exists", "not_exists", "contains", "gt", "gte", "lt", "lte")
DEFAULT_GOAL_WINDOW = 7 * 86400


@dataclass(frozen=True)
class Definition:
    document: dict[str, Any]
    name: str
    trigger: dict[str, Any]
    filters: Any
    reentry: dict[str, Any]
    goal: dict[str, Any] | None
    exit: dict[str, Any]
    workflow: Workflow

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def kind(self) -> str:
        return "broadcast" if self.trigger_type == "broadcast" else "campaign"


def _fail(path: str, message: str) -> DefinitionError:
    return DefinitionError(f"{path}: {message}", field=path)


def _condition(value: Any, path: str) -> Any:
    try:
        parse_condition(value, path)
    except ConditionError as exc:
        raise DefinitionError(exc.message, field=exc.field) from None
    return value


def _duration(value: Any, path: str) -> int:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _fail(path, str(exc)) from None


def _event_filters(value: Any, path: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):  # {"plan": "pro"}: equality on each key
        value = [{"property": key, "operator": "eq", "value": item} for key, item in value.items()]
    if not isinstance(value, list):
        raise _fail(path, "must be a list of {property, operator, value} or an object of property → value")
    out = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("property"), str) or not item["property"]:
            raise _fail(where, "must be {property, operator, value}")
        operator = item.get("operator", "eq")
        if operator not in EVENT_OPERATORS:
            raise _fail(f"{where}.operator", f"must be one of {', '.join(EVENT_OPERATORS)}")
        if operator not in ("exists", "not_exists") and "value" not in item:
            raise _fail(f"{where}.value", "is required")
        if operator in ("gt", "gte", "lt", "lte") and (
            isinstance(item["value"], bool) or not isinstance(item["value"], int | float)
        ):
            raise _fail(f"{where}.value", "must be a number")
        out.append({"property": item["property"], "operator": operator, "value": item.get("value")})
    return out


def _id(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise _fail(path, "must be an id (a whole number)")
    return int(value)


def _trigger(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail("trigger", f"is required: an object with a type ({', '.join(TRIGGER_TYPES)})")
    kind = value.get("type")
    if kind not in TRIGGER_TYPES:
        raise _fail("trigger.type", f"must be one of {', '.join(TRIGGER_TYPES)}")
    allowed = {
        "event": {"event", "event_type", "filters"},
        "segment": {"segment_id", "on"},
        "attribute": {"attribute", "from", "to"},
        "date": {"attribute", "offset", "recurring"},
        "object": {"object_type_id", "on", "attribute"},
        "relationship": {"object_type_id", "on"},
        "broadcast": {"audience"},
        "scheduled": {"at", "every", "day", "time", "timezone", "audience"},
    }[kind]
    unknown = sorted(set(value) - allowed - {"type"})
    if unknown:
        raise _fail(
            f"trigger.{unknown[0]}",
            f"unknown field for a {kind} trigger; expected {', '.join(sorted(allowed))}",
        )
    out: dict[str, Any] = {"type": kind}
    if kind == "event":
        name = value.get("event")
        if not isinstance(name, str) or not name:
            raise _fail("trigger.event", "is required (the event name)")
        event_type = value.get("event_type", "event")
        if event_type not in ("event", "page", "screen", "form"):
            raise _fail("trigger.event_type", "must be event, page, screen or form")
        out.update(
            event=name, event_type=event_type, filters=_event_filters(value.get("filters"), "trigger.filters")
        )
    elif kind == "segment":
        out["segment_id"] = _id(value.get("segment_id"), "trigger.segment_id")
        on = value.get("on", "entered")
        if on not in ("entered", "exited"):
            raise _fail("trigger.on", "must be entered or exited")
        out["on"] = on
    elif kind == "attribute":
        name = value.get("attribute")
        if not isinstance(name, str) or not name:
            raise _fail("trigger.attribute", "is required (the attribute name)")
        out["attribute"] = name
        for key in ("from", "to"):
            if key in value:
                out[key] = value[key]
    elif kind == "date":
        name = value.get("attribute")
        if not isinstance(name, str) or not name:
            raise _fail("trigger.attribute", "is required (a date attribute, unix seconds or ISO 8601)")
        offset = value.get("offset", 0)
        negative = isinstance(offset, str) and offset.strip().startswith("-")
        seconds = _duration(offset.strip()[1:] if negative else offset, "trigger.offset")
        recurring = value.get("recurring", "none")
        if recurring not in ("none", "yearly"):
            raise _fail("trigger.recurring", "must be none or yearly")
        out.update(attribute=name, offset=-seconds if negative else seconds, recurring=recurring)
    elif kind in ("object", "relationship"):
        type_id = value.get("object_type_id")
        if isinstance(type_id, bool) or not isinstance(type_id, int | str) or str(type_id) == "":
            raise _fail("trigger.object_type_id", "is required")
        on = value.get("on", "created" if kind == "object" else "added")
        choices = ("created", "updated") if kind == "object" else ("added", "removed")
        if on not in choices:
            raise _fail("trigger.on", f"must be {' or '.join(choices)}")
        out.update(object_type_id=str(type_id), on=on)
        if kind == "object" and value.get("attribute") is not None:
            if not isinstance(value["attribute"], str):
                raise _fail("trigger.attribute", "must be an attribute name")
            out["attribute"] = value["attribute"]
    else:  # broadcast, scheduled
        if value.get("audience") is not None:
            out["audience"] = _condition(value["audience"], "trigger.audience")
        if kind == "scheduled":
            if ("at" in value) == ("every" in value):
                raise _fail(
                    "trigger", "a scheduled trigger needs either at (one time) or every (day or week)"
                )
            if "at" in value:
                try:
                    out["at"] = as_time(value["at"])
                except ValueError as exc:
                    raise _fail("trigger.at", str(exc)) from None
            else:
                if value["every"] not in ("day", "week"):
                    raise _fail("trigger.every", "must be day or week")
                parser = Parser("trigger", "trigger", value)
                time = value.get("time", "09:00")
                if not isinstance(time, str) or not CLOCK.match(time):
                    raise _fail("trigger.time", "must be a time of day HH:MM")
                day = value.get("day", "mon")
                if value["every"] == "week" and day not in DAYS:
                    raise _fail("trigger.day", f"must be one of {', '.join(DAYS)}")
                zone = value.get("timezone", "UTC")
                try:
                    ZoneInfo(str(zone))
                except (ZoneInfoNotFoundError, ValueError):
                    raise _fail("trigger.timezone", f"unknown time zone {zone!r}") from None
                out["day"] = day
                out.update(
                    every=value["every"],
                    time=time,
                    timezone=parser.text("timezone", required=False, default="UTC"),
                )
    return out


def _recurs(trigger: dict[str, Any]) -> bool:
    """Triggers that fire again by design (a yearly date, a repeating schedule)."""
    return trigger.get("recurring") == "yearly" or "every" in trigger


def _reentry(value: Any, *, broadcast: bool, recurring: bool) -> dict[str, Any]:
    if broadcast:
        # Every trigger of a broadcast reaches its audience again; re-entry rules do not apply.
        if value is not None:
            raise _fail("reentry", "a broadcast has no re-entry rules: every trigger reaches its audience")
        return {"mode": "always", "every": None, "max_concurrent": 1000}
    if value is None:
        # A recurring trigger lets people in each time it fires; others let a person in once.
        return {"mode": "always" if recurring else "once", "every": None, "max_concurrent": 1}
    if isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, dict):
        raise _fail("reentry", "must be once, always, or {mode, every, max_concurrent}")
    unknown = sorted(set(value) - {"mode", "every", "max_concurrent"})
    if unknown:
        raise _fail(f"reentry.{unknown[0]}", "unknown field; expected mode, every, max_concurrent")
    mode = value.get("mode", "once")
    if mode not in REENTRY_MODES:
        raise _fail("reentry.mode", f"must be one of {', '.join(REENTRY_MODES)}")
    every = None
    if mode == "every":
        if value.get("every") is None:
            raise _fail("reentry.every", "is required with mode every (a duration such as 7d)")
        every = _duration(value["every"], "reentry.every")
    concurrent = value.get("max_concurrent", 1)
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or not 1 <= concurrent <= 1000:
        raise _fail("reentry.max_concurrent", "must be a whole number from 1 to 1000")
    return {"mode": mode, "every": every, "max_concurrent": concurrent}


def _goal(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or ("event" in value) == ("condition" in value):
        raise _fail("goal", "must be {event: name} or {condition: ...}, with an optional within")
    unknown = sorted(set(value) - {"event", "condition", "within"})
    if unknown:
        raise _fail(f"goal.{unknown[0]}", "unknown field; expected event, condition, within")
    out: dict[str, Any] = {"within": _duration(value.get("within", DEFAULT_GOAL_WINDOW), "goal.within")}
    if "event" in value:
        if not isinstance(value["event"], str) or not value["event"]:
            raise _fail("goal.event", "must be an event name")
        out["event"] = value["event"]
    else:
        out["condition"] = _condition(value["condition"], "goal.condition")
    return out


def _exit(value: Any, trigger: dict[str, Any], goal: dict[str, Any] | None) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise _fail("exit", "must be {on_goal, on_leave_segment}")
    unknown = sorted(set(value) - {"on_goal", "on_leave_segment"})
    if unknown:
        raise _fail(f"exit.{unknown[0]}", "unknown field; expected on_goal, on_leave_segment")
    out = {}
    for key in ("on_goal", "on_leave_segment"):
        flag = value.get(key, False)
        if not isinstance(flag, bool):
            raise _fail(f"exit.{key}", "must be true or false")
        out[key] = flag
    if out["on_goal"] and goal is None:
        raise _fail("exit.on_goal", "needs a goal")
    if out["on_leave_segment"] and not (trigger["type"] == "segment" and trigger.get("on") == "entered"):
        raise _fail("exit.on_leave_segment", "needs a segment-entered trigger")
    return out


def parse(document: Any) -> Definition:
    if not isinstance(document, dict):
        raise DefinitionError("a campaign definition must be an object")
    unknown = sorted(set(document) - KEYS)
    if unknown:
        raise _fail(unknown[0], f"unknown field; expected {', '.join(sorted(KEYS))}")
    name = document.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise _fail("name", f"is required: 1 to {MAX_NAME} characters")
    if not isinstance(document.get("description", ""), str):
        raise _fail("description", "must be a string")
    tags = document.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise _fail("tags", "must be a list of strings")
    trigger = _trigger(document.get("trigger"))
    filters = _condition(document["filters"], "filters") if document.get("filters") is not None else None
    goal = _goal(document.get("goal"))
    if "steps" not in document:
        raise _fail("steps", "is required: a list of blocks")
    if document["steps"] == []:
        raise _fail("steps", "must hold at least one block")
    workflow = compile_steps(document["steps"])
    return Definition(
        document=document,
        name=name.strip(),
        trigger=trigger,
        filters=filters,
        reentry=_reentry(
            document.get("reentry"), broadcast=trigger["type"] == "broadcast", recurring=_recurs(trigger)
        ),
        goal=goal,
        exit=_exit(document.get("exit"), trigger, goal),
        workflow=workflow,
    )


def event_matches(filters: list[dict[str, Any]], data: dict[str, Any]) -> bool:
    """Whether an event's data passes a trigger's property filters."""
    for item in filters:
        present = item["property"] in data
        value, expected, operator = data.get(item["property"]), item["value"], item["operator"]
        if operator == "exists":
            ok = present
        elif operator == "not_exists":
            ok = not present
        elif operator == "eq":
            ok = present and str(value) == str(expected)
        elif operator == "neq":
            ok = not present or str(value) != str(expected)
        elif operator == "contains":
            ok = present and str(expected) in (value if isinstance(value, list) else str(value))
        else:
            try:
                number = float(str(value))
            except (TypeError, ValueError):
                return False
            ok = {
                "gt": number > expected,
                "gte": number >= expected,
                "lt": number < expected,
                "lte": number <= expected,
            }[operator]
        if not ok:
            return False
    return True

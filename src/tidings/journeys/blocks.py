"""The workflow blocks: how each is written (parsed) and what it does when a journey reaches it (run).

A block's ``run`` gets a :class:`Step` (the journey, its person, the transaction) and returns an
:class:`Outcome`: go on (to the next block or a branch), wait (until a time, an event or a change), exit,
or make an outside call. Everything a block writes (deliveries, person updates, events) goes through the
step's session, in the transaction that also moves the journey on, so it happens exactly once. A block
that talks to the outside world returns a ``call``: the engine makes it after the step commits (under a
lease, at least once, with an idempotency key) and hands the answer to the block's ``resume``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.deliveries import lifecycle
from tidings.events.service import EventInput, track_person_event
from tidings.ids import new_delivery_id
from tidings.journeys import calls
from tidings.journeys import conditions as journey_conditions
from tidings.journeys.workflow import Block, BlockType, Parser, Workflow, parse_duration, register
from tidings.messaging.liquid import RenderFailed, TemplateInvalid
from tidings.messaging.render import customer_of
from tidings.messaging.templates import CHANNELS, liquid, validate_content
from tidings.models import CampaignAction, Delivery, Journey, Object, Person, Relationship
from tidings.objects.service import ObjectRef, upsert_object
from tidings.people.identifiers import Identifier
from tidings.people.service import identify
from tidings.segments.search import holds
from tidings.worker import wake
from tidings.workspaces.schemas import WorkspaceContext

MESSAGE_ACTION_TYPES = {"email": "email", "sms": "twilio", "push": "push", "webhook": "webhook"}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
MESSAGE_KEYS = {
    "template",
    "content",
    "languages",
    "layout_id",
    "topic_id",
    "link_tracking",
    "open_tracking",
    "send_to_unsubscribed",
    "queue_draft",
}


@dataclass(frozen=True)
class CampaignInfo:
    """What blocks need to know of the campaign a journey runs in."""

    id: int
    kind: str
    name: str
    actions: dict[str, ActionInfo]


@dataclass(frozen=True)
class ActionInfo:
    id: int
    template_id: int | None
    state: dict[str, Any]


@dataclass
class Step:
    session: Session
    ws: WorkspaceContext
    campaign: CampaignInfo
    workflow: Workflow
    journey: Journey
    block: Block
    person: Person
    now: int
    _context: dict[str, Any] | None = None

    @property
    def waiting(self) -> bool:
        """Whether the journey already waits at this block (it is being looked at again)."""
        return self.journey.wait is not None

    def context(self) -> dict[str, Any]:
        """Liquid's view of the journey: customer, trigger and event data, journey attributes, campaign."""
        if self._context is None:
            trigger = self.journey.trigger or {}
            event = trigger.get("event") or {}
            self._context = {
                "customer": customer_of(self.person),
                "trigger": trigger.get("data") or event.get("data") or {},
                "event": event.get("data") or {},
                "event_name": event.get("name"),
                "event_id": event.get("id"),
                "journey": dict(self.journey.attributes or {}),
                "campaign": {"id": self.campaign.id, "name": self.campaign.name},
                "snippets": {},
            }
        return self._context

    def render(self, value: Any, where: str) -> Any:
        """Render every string inside ``value`` (a string, list or object) as Liquid."""
        if isinstance(value, str):
            return liquid.render(value, self.context(), field=where)
        if isinstance(value, list):
            return [self.render(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {key: self.render(item, f"{where}.{key}") for key, item in value.items()}
        return value

    def holds(self, condition: Any) -> bool:
        decided, rest = journey_conditions.resolve(condition, self.journey.attributes or {})
        if decided is not None:
            return decided
        return bool(holds(self.session, self.ws.workspace_id, rest, [self.person.id], now=self.now))

    def fraction(self, salt: str = "") -> float:
        return journey_fraction(self.journey.id, self.block.id, salt)

    def action(self, block_id: str | None = None) -> ActionInfo | None:
        return self.campaign.actions.get(block_id or self.block.id)


def journey_fraction(journey_id: int, block_id: str, salt: str = "") -> float:
    """A number in [0, 1) fixed for a journey and block: splits are reproducible, and uniform over
    journeys (a hash, not a random draw, so a step re-run after a crash picks the same branch)."""
    digest = hashlib.sha256(f"{journey_id}:{block_id}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_share(point: float, weights: list[float]) -> int:
    """The index whose share of ``sum(weights)`` holds ``point`` (a number in [0, 1))."""
    limit, total = point * sum(weights), 0.0
    for index, weight in enumerate(weights):
        total += weight
        if limit < total:
            return index
    return len(weights) - 1


@dataclass
class Outcome:
    # What happened, for the journey log.
    text: str
    # Where to go on: a block id, or None for the end; ``NEXT`` for the block's own next.
    goto: str | None = None
    wait_until: int | None = None
    wait: dict[str, Any] | None = None
    wake_on: str | None = None
    exit: str | None = None
    failed: bool = False
    detail: dict[str, Any] | None = None
    delivery_id: str | None = None
    # An outside call to make after the step commits; its result goes to the block type's ``resume``.
    call: calls.Call | None = None
    waiting: bool = False


def go_on(step: Step, text: str, **extra: Any) -> Outcome:
    return Outcome(text, goto=step.block.next, **extra)


def branch(step: Step, label: str, text: str) -> Outcome:
    return Outcome(text, goto=step.workflow.first_of(label, step.block), detail={"branch": label})


def wait(
    text: str, *, until: int | None, notes: dict[str, Any] | None = None, wake_on: str | None = None
) -> Outcome:
    return Outcome(text, wait_until=until, wait=notes or {}, wake_on=wake_on, waiting=True)


@dataclass(frozen=True)
class Runner:
    run: Callable[[Step], Outcome]
    # For blocks that make outside calls: turns the call's result into the outcome.
    resume: Callable[[Step, dict[str, Any]], Outcome] | None = None


RUNNERS: dict[str, Runner] = {}


def block_type(
    name: str,
    parse: Callable[[Parser], dict[str, Any]],
    run: Callable[[Step], Outcome],
    *,
    action_type: str | None = None,
    branches: Callable[[dict[str, Any]], list[tuple[str, Any]]] | None = None,
    resume: Callable[[Step, dict[str, Any]], Outcome] | None = None,
) -> None:
    """Register a block type: how it is parsed and how it runs (the extension point for new blocks)."""
    register(BlockType(name, parse, branches or (lambda body: []), action_type or name))
    RUNNERS[name] = Runner(run, resume)


def _keys(p: Parser, allowed: set[str]) -> None:
    unknown = sorted(set(p.body) - allowed - {"id", "type", "name"})
    if unknown:
        raise p.fail(f"unknown field {unknown[0]!r}; expected {', '.join(sorted(allowed))}", unknown[0])


def _liquid(p: Parser, value: Any, key: str) -> None:
    """Check every string in ``value`` as Liquid, naming the block on error."""

    if isinstance(value, str):
        try:
            liquid.validate(value, field=key)
        except TemplateInvalid as exc:
            raise p.fail(exc.message, key) from None
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _liquid(p, item, f"{key}[{index}]")
    elif isinstance(value, dict):
        for name, item in value.items():
            _liquid(p, item, f"{key}.{name}")


# -- send a message -------------------------------------------------------------------------------------


def _parse_message(channel: str) -> Callable[[Parser], dict[str, Any]]:
    def parse(p: Parser) -> dict[str, Any]:

        _keys(p, MESSAGE_KEYS)
        has_template, has_content = "template" in p.body, "content" in p.body
        if has_template == has_content:
            raise p.fail("give either template (a transactional message id or trigger name) or content")
        spec: dict[str, Any] = {"channel": channel}
        if has_template:
            ref = p.body["template"]
            if not isinstance(ref, int | str) or isinstance(ref, bool) or ref == "":
                raise p.fail("must be a message id or trigger name", "template")
            spec["template"] = ref
        else:
            try:
                spec["content"] = validate_content(channel, p.body["content"], path="content")
            except Exception as exc:
                raise p.fail(str(getattr(exc, "message", exc)), "content") from None
        for flag in ("link_tracking", "open_tracking", "send_to_unsubscribed", "queue_draft"):
            if flag in p.body:
                if not isinstance(p.body[flag], bool):
                    raise p.fail("must be true or false", flag)
                spec[flag] = p.body[flag]
        for key in ("languages", "layout_id", "topic_id"):
            if key in p.body:
                spec[key] = p.body[key]
        return spec

    return parse


def send_message(
    step: Step, channel: str, action: ActionInfo | None, extra: dict[str, Any] | None = None
) -> Outcome:
    spec = step.block.spec
    if action is None or action.template_id is None:
        return go_on(step, "failed: the message's content is missing", failed=True)
    journey, now = step.journey, step.now
    draft = bool(spec.get("queue_draft"))
    trigger = journey.trigger or {}
    event = trigger.get("event") or {}
    delivery = Delivery(
        id=new_delivery_id(),
        workspace_id=journey.workspace_id,
        person_id=journey.person_id,
        channel=channel,
        created_at=now,
        template_id=action.template_id,
        campaign_id=step.campaign.id if step.campaign.kind == "campaign" else None,
        broadcast_id=step.campaign.id if step.campaign.kind == "broadcast" else None,
        action_id=action.id,
        trigger_event_id=event.get("id"),
        request={
            "message_data": step.context()["trigger"],
            "event": step.context()["event"],
            "journey": dict(journey.attributes or {}),
            "campaign": {"id": step.campaign.id, "name": step.campaign.name},
            "send_to_unsubscribed": bool(spec.get("send_to_unsubscribed", False)),
            **(extra or {}),
        },
        state="drafted" if draft else "queued",
        due_at=None if draft else now,
        drafted_at=now if draft else None,
        attempts=0,
    )
    step.session.add(delivery)
    if draft:
        step.session.flush()
        lifecycle.created(step.session, delivery, now=now)
    # Otherwise the row is written with the batch's other changes when the step commits.
    wake.soon(step.session)
    journey.last_delivery_id, journey.last_sent_at = delivery.id, now
    return go_on(step, "drafted" if draft else "queued", delivery_id=delivery.id)


def _message_runner(channel: str) -> Callable[[Step], Outcome]:
    def run(step: Step) -> Outcome:
        return send_message(step, channel, step.action())

    return run


for _channel in CHANNELS:
    block_type(
        _channel,
        _parse_message(_channel),
        _message_runner(_channel),
        action_type=MESSAGE_ACTION_TYPES[_channel],
    )


# -- delay ------------------------------------------------------------------------------------------------


def _signed_duration(p: Parser, key: str) -> int:
    value = p.body.get(key)
    if value is None:
        return 0
    negative = isinstance(value, str) and value.strip().startswith("-")
    try:
        seconds = parse_duration(value.strip()[1:] if negative else value)
    except ValueError as exc:
        raise p.fail(str(exc), key) from None
    return -seconds if negative else seconds


def _parse_delay(p: Parser) -> dict[str, Any]:
    _keys(p, {"duration", "until", "until_attribute", "offset"})
    given = [key for key in ("duration", "until", "until_attribute") if key in p.body]
    if len(given) != 1:
        raise p.fail("give exactly one of duration, until (a time) or until_attribute")
    if given[0] == "duration":
        return {"duration": p.duration("duration")}
    if given[0] == "until":
        try:
            return {"until": as_time(p.body["until"])}
        except ValueError as exc:
            raise p.fail(str(exc), "until") from None
    return {"until_attribute": p.text("until_attribute"), "offset": _signed_duration(p, "offset")}


def as_time(value: Any) -> int:
    """Unix seconds from a number or an ISO 8601 string (UTC unless it says otherwise)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a time (unix seconds or ISO 8601)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp())
    raise ValueError("must be unix seconds or an ISO 8601 time")


def _run_delay(step: Step) -> Outcome:
    spec = step.block.spec
    if step.waiting:
        until = int((step.journey.wait or {}).get("until", 0))
        if step.now >= until:
            return go_on(step, "delay over")
        return wait(f"waiting until {until}", until=until, notes={"until": until})
    if "duration" in spec:
        until = step.now + int(spec["duration"])
    elif "until" in spec:
        until = int(spec["until"])
    else:
        value = step.context()["customer"].get(spec["until_attribute"])
        try:
            until = as_time(value) + int(spec["offset"])
        except ValueError:
            return go_on(step, f"no delay: attribute {spec['until_attribute']!r} is not a time")
    if until <= step.now:
        return go_on(step, "no delay: the time has passed")
    return wait(f"waiting until {until}", until=until, notes={"until": until})


block_type("delay", _parse_delay, _run_delay)


# -- wait until -------------------------------------------------------------------------------------------


def _parse_wait_until(p: Parser) -> dict[str, Any]:
    _keys(p, {"condition", "event", "timeout", "timeout_steps"})
    if ("condition" in p.body) == ("event" in p.body):
        raise p.fail("give either condition or event")
    spec: dict[str, Any] = {"timeout": p.duration("timeout", required=False)}
    if "timeout_steps" in p.body and spec["timeout"] is None:
        raise p.fail("timeout_steps needs a timeout", "timeout_steps")
    if "condition" in p.body:
        spec["condition"] = p.condition("condition")
        return spec
    event = p.body["event"]
    if isinstance(event, str):
        event = {"name": event}
    if not isinstance(event, dict) or not isinstance(event.get("name"), str) or not event["name"]:
        raise p.fail("must be an event name or {name, match}", "event")
    unknown = sorted(set(event) - {"name", "match"})
    if unknown:
        raise p.fail(f"unknown field {unknown[0]!r}; expected name, match", f"event.{unknown[0]}")
    match = event.get("match") or {}
    if not isinstance(match, dict) or not all(isinstance(v, str | int | float) for v in match.values()):
        raise p.fail("must be an object of event data key → value (Liquid allowed)", "event.match")
    _liquid(p, {k: v for k, v in match.items() if isinstance(v, str)}, "event.match")
    spec["event"] = {"name": event["name"], "match": match}
    return spec


def _matches(expected: dict[str, Any], data: dict[str, Any]) -> bool:
    return all(str(data.get(key)) == str(value) for key, value in expected.items())


def _run_wait_until(step: Step) -> Outcome:
    spec, journey = step.block.spec, step.journey
    if not step.waiting:
        deadline = step.now + spec["timeout"] if spec.get("timeout") is not None else None
        if "condition" in spec:
            if step.holds(spec["condition"]):
                return go_on(step, "condition already true")
            return wait(
                "waiting for the condition", until=deadline, notes={"until": deadline}, wake_on="change"
            )
        event = spec["event"]
        expected = {key: step.render(value, f"event.match.{key}") for key, value in event["match"].items()}
        return wait(
            f"waiting for event {event['name']!r}",
            until=deadline,
            notes={"until": deadline, "match": expected},
            wake_on=event["name"],
        )
    notes = journey.wait or {}
    woken = journey.woken_by
    if "event" in spec and woken is not None and _matches(notes.get("match") or {}, woken.get("data") or {}):
        journey.attributes = {**(journey.attributes or {}), "wait_event": woken.get("data") or {}}
        return go_on(step, f"event {woken.get('name')!r} arrived", detail={"event_id": woken.get("id")})
    if "condition" in spec and step.holds(spec["condition"]):
        return go_on(step, "condition became true")
    until = notes.get("until")
    if until is not None and step.now >= until:
        return branch(step, "timeout_steps", "timed out")
    wake_on = spec["event"]["name"] if "event" in spec else "change"
    return wait("still waiting", until=until, notes=notes, wake_on=wake_on)


block_type(
    "wait_until",
    _parse_wait_until,
    _run_wait_until,
    branches=lambda body: [("timeout_steps", body.get("timeout_steps"))],
)


# -- time window ------------------------------------------------------------------------------------------


def _minutes(p: Parser, key: str, default: str) -> int:
    value = p.body.get(key, default)
    found = CLOCK.match(value) if isinstance(value, str) else None
    if not found:
        raise p.fail("must be a time of day HH:MM", key)
    return int(found.group(1)) * 60 + int(found.group(2))


def _parse_time_window(p: Parser) -> dict[str, Any]:
    _keys(p, {"days", "start", "end", "timezone"})
    days = p.body.get("days", list(DAYS))
    if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
        raise p.fail(f"must be a non-empty list of {', '.join(DAYS)}", "days")
    start, end = _minutes(p, "start", "00:00"), _minutes(p, "end", "23:59")
    if start == end:
        raise p.fail("start and end must differ", "end")
    zone = p.body.get("timezone", "person")
    if zone != "person":
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise p.fail(f"unknown time zone {zone!r}", "timezone") from None
    return {"days": [DAYS.index(d) for d in days], "start": start, "end": end, "timezone": zone}


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name)) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def window_opens(spec: dict[str, Any], zone: ZoneInfo, now: int) -> int:
    """``now`` if it lies in the window, else when the window next opens (in ``zone``'s local time)."""
    local = datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute
    start, end, days = spec["start"], spec["end"], set(spec["days"])

    def inside(weekday: int, at: int) -> bool:
        if start < end:
            return weekday in days and start <= at < end
        # Overnight window (22:00 to 06:00): the part after midnight belongs to the day it started.
        return (weekday in days and at >= start) or ((weekday - 1) % 7 in days and at < end)

    if inside(local.weekday(), minute):
        return now
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in range(0, 8):
        day = midnight + timedelta(days=offset)
        opening = datetime(day.year, day.month, day.day, start // 60, start % 60, tzinfo=zone)
        if day.weekday() in days and opening.timestamp() > now:
            return int(opening.timestamp())
    return now


def _run_time_window(step: Step) -> Outcome:
    spec = step.block.spec
    zone = _zone(
        step.context()["customer"].get("timezone") if spec["timezone"] == "person" else spec["timezone"]
    )
    opens = window_opens(spec, zone, step.now)
    if opens <= step.now:
        return go_on(step, "inside the time window")
    return wait(f"waiting for the window at {opens}", until=opens, notes={"until": opens})


# Looked at again (woken early, or the window opened), the same test decides.
block_type("time_window", _parse_time_window, _run_time_window)


# -- branches ---------------------------------------------------------------------------------------------


def _parse_branch(p: Parser) -> dict[str, Any]:
    _keys(p, {"condition", "yes", "no"})
    return {"condition": p.condition("condition")}


def _run_branch(step: Step) -> Outcome:
    if step.holds(step.block.spec["condition"]):
        return branch(step, "yes", "condition true")
    return branch(step, "no", "condition false")


block_type(
    "branch",
    _parse_branch,
    _run_branch,
    action_type="true_false_branch",
    branches=lambda body: [("yes", body.get("yes")), ("no", body.get("no"))],
)


def _split_paths(body: dict[str, Any]) -> list[tuple[str, Any]]:
    paths = body.get("branches")
    out = [
        (f"branches[{i}].steps", item.get("steps"))
        for i, item in enumerate(paths or [])
        if isinstance(item, dict)
    ]
    return [*out, ("else", body.get("else"))]


def _parse_split(p: Parser) -> dict[str, Any]:
    _keys(p, {"branches", "else"})
    items = p.body.get("branches")
    if not isinstance(items, list) or not items or len(items) > 10:
        raise p.fail("must be a list of 1 to 10 {condition, steps}", "branches")
    conditions = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "condition" not in item:
            raise p.fail("must be {name?, condition, steps}", f"branches[{index}]")
        nested = Parser(p.block_id, f"{p.path}.branches[{index}]", item)
        conditions.append(nested.condition("condition"))
    return {"conditions": conditions}


def _run_split(step: Step) -> Outcome:
    for index, condition in enumerate(step.block.spec["conditions"]):
        if step.holds(condition):
            return branch(step, f"branches[{index}].steps", f"branch {index} matched")
    return branch(step, "else", "no branch matched")


block_type("split", _parse_split, _run_split, action_type="multi_split", branches=_split_paths)


def _parse_random_split(p: Parser) -> dict[str, Any]:
    _keys(p, {"cohorts"})
    cohorts = p.body.get("cohorts")
    if not isinstance(cohorts, list) or not 2 <= len(cohorts) <= 10:
        raise p.fail("must be a list of 2 to 10 {percent, steps}", "cohorts")
    percents = []
    for index, item in enumerate(cohorts):
        if not isinstance(item, dict):
            raise p.fail("must be {name?, percent, steps}", f"cohorts[{index}]")
        nested = Parser(p.block_id, f"{p.path}.cohorts[{index}]", item)
        percents.append(nested.number("percent", low=0, high=100))
    if abs(sum(p_ or 0 for p_ in percents) - 100) > 1e-6:
        raise p.fail("percents must add up to 100", "cohorts")
    return {"percents": percents}


def _run_random_split(step: Step) -> Outcome:
    index = pick_share(step.fraction(), step.block.spec["percents"])
    return branch(step, f"cohorts[{index}].steps", f"cohort {index}")


block_type(
    "random_split",
    _parse_random_split,
    _run_random_split,
    action_type="random_cohort_branch",
    branches=lambda body: [
        (f"cohorts[{i}].steps", c.get("steps"))
        for i, c in enumerate(body.get("cohorts") or [])
        if isinstance(c, dict)
    ],
)


def _parse_holdout(p: Parser) -> dict[str, Any]:
    _keys(p, {"percent", "steps"})
    return {"percent": p.number("percent", low=0, high=100)}


def _run_holdout(step: Step) -> Outcome:
    if step.fraction() * 100 < step.block.spec["percent"]:
        step.journey.attributes = {**(step.journey.attributes or {}), "holdout": True}
        return go_on(step, "held out", detail={"branch": "holdout"})
    return branch(step, "steps", "not held out")


block_type(
    "holdout",
    _parse_holdout,
    _run_holdout,
    action_type="holdout",
    branches=lambda body: [("steps", body.get("steps"))],
)


# -- A/B test ---------------------------------------------------------------------------------------------

AB_METRICS = ("delivered", "opened", "clicked", "converted")


def variant_block(block_id: str, index: int) -> str:
    """The action key of an A/B test's variant (each variant is a message action of its own)."""
    return f"{block_id}/variant-{index}"


def _parse_ab_test(p: Parser) -> dict[str, Any]:
    _keys(p, {"channel", "variants", "winner"})
    channel = p.body.get("channel", "email")
    if channel not in CHANNELS:
        raise p.fail(f"must be one of {', '.join(CHANNELS)}", "channel")
    variants = p.body.get("variants")
    if not isinstance(variants, list) or not 2 <= len(variants) <= 10:
        raise p.fail("must be a list of 2 to 10 message variants", "variants")
    parsed = []
    for index, item in enumerate(variants):
        if not isinstance(item, dict):
            raise p.fail("must be {weight?, template | content}", f"variants[{index}]")
        nested = Parser(
            p.block_id, f"{p.path}.variants[{index}]", {k: v for k, v in item.items() if k != "weight"}
        )
        weight = Parser(p.block_id, f"{p.path}.variants[{index}]", item).number(
            "weight", required=False, low=0, high=100
        )
        variant = _parse_message(channel)(nested)
        variant["weight"] = 1.0 if weight is None else weight
        parsed.append(variant)
    if sum(v["weight"] for v in parsed) <= 0:
        raise p.fail("weights must not all be 0", "variants")
    winner = p.body.get("winner")
    spec: dict[str, Any] = {"channel": channel, "variants": parsed, "winner": None}
    if winner is not None:
        if not isinstance(winner, dict):
            raise p.fail("must be {metric, after}", "winner")
        nested = Parser(p.block_id, f"{p.path}.winner", winner)
        metric = winner.get("metric", "opened")
        if metric not in AB_METRICS:
            raise nested.fail(f"must be one of {', '.join(AB_METRICS)}", "metric")
        spec["winner"] = {"metric": metric, "after": nested.duration("after")}
    return spec


def _run_ab_test(step: Step) -> Outcome:
    spec = step.block.spec
    actions = [step.action(variant_block(step.block.id, i)) for i in range(len(spec["variants"]))]
    chosen = (step.action() or ActionInfo(0, None, {})).state.get("winner")
    if chosen is None:
        chosen = _decide_winner(step, actions)
    if chosen is None:
        chosen = pick_share(step.fraction(), [v["weight"] for v in spec["variants"]])
        how = "testing"
    else:
        how = "winner"
    outcome = send_message(step, spec["channel"], actions[chosen])
    outcome.text = f"variant {chosen} ({how}): {outcome.text}"
    outcome.detail = {"variant": chosen}
    return outcome


def _decide_winner(step: Step, actions: list[ActionInfo | None]) -> int | None:
    """Once the test has run its course, the variant with the best rate of the winner metric wins."""

    winner = step.block.spec["winner"]
    own = step.action()
    if winner is None or own is None or any(a is None for a in actions):
        return None
    row = step.session.get(CampaignAction, own.id)
    if row is None:
        return None
    started = row.state.get("started_at")
    if started is None:
        row.state = {**row.state, "started_at": step.now}
        return None
    if step.now < started + winner["after"]:
        return None
    column = getattr(Delivery, f"{winner['metric']}_at")
    rates = []
    for index, action in enumerate(actions):
        assert action is not None
        sent, hit = step.session.execute(
            select(func.count(Delivery.sent_at), func.count(column)).where(
                Delivery.workspace_id == step.ws.workspace_id, Delivery.action_id == action.id
            )
        ).one()
        rates.append(((hit / sent) if sent else 0.0, -index))
    best = -max(rates)[1]
    row.state = {**row.state, "winner": best, "decided_at": step.now, "rates": [r for r, _ in rates]}
    return best


block_type("ab_test", _parse_ab_test, _run_ab_test, action_type="ab_test")


# -- exit, attributes, events -----------------------------------------------------------------------------


def _parse_exit(p: Parser) -> dict[str, Any]:
    _keys(p, set())
    return {}


block_type("exit", _parse_exit, lambda step: Outcome("exited", exit="exit block"))


def _parse_attributes(p: Parser) -> dict[str, Any]:
    _keys(p, {"attributes", "unset"})
    attributes = p.mapping("attributes")
    unset = p.body.get("unset") or []
    if not isinstance(unset, list) or not all(isinstance(name, str) and name for name in unset):
        raise p.fail("must be a list of attribute names", "unset")
    if not attributes and not unset:
        raise p.fail("give attributes to set or names to unset", "attributes")
    _liquid(p, attributes, "attributes")
    return {"attributes": attributes, "unset": unset}


def _rendered_attributes(step: Step) -> dict[str, Any]:
    return dict(step.render(step.block.spec["attributes"], "attributes"))


def _run_update_person(step: Step) -> Outcome:

    values = _rendered_attributes(step)
    values.update(dict.fromkeys(step.block.spec["unset"]))
    ident = Identifier("cio_id", step.person.cio_id)
    identify(step.session, step.ws, ident, values, now=step.now)
    step._context = None
    return go_on(step, f"updated {', '.join(sorted(values))}")


block_type("update_person", _parse_attributes, _run_update_person, action_type="attribute_update")


def _run_set_journey_attributes(step: Step) -> Outcome:
    values = _rendered_attributes(step)
    attributes = {**(step.journey.attributes or {}), **values}
    for name in step.block.spec["unset"]:
        attributes.pop(name, None)
    step.journey.attributes = attributes
    step._context = None
    return go_on(step, f"set {', '.join(sorted(values) or step.block.spec['unset'])}")


block_type(
    "set_journey_attributes", _parse_attributes, _run_set_journey_attributes, action_type="journey_attributes"
)


def _parse_send_event(p: Parser) -> dict[str, Any]:
    _keys(p, {"event", "data"})
    name = p.text("event")
    data = p.mapping("data")
    _liquid(p, name, "event")
    _liquid(p, data, "data")
    return {"event": name, "data": data}


def _run_send_event(step: Step) -> Outcome:

    name = str(step.render(step.block.spec["event"], "event"))
    data = step.render(step.block.spec["data"], "data")
    ident = Identifier("cio_id", step.person.cio_id)
    track_person_event(
        step.session, step.ws, ident, EventInput(name=name, data=data), now=step.now, source="campaign"
    )
    return go_on(step, f"sent event {name!r}")


block_type("send_event", _parse_send_event, _run_send_event, action_type="event")


def _parse_update_related(p: Parser) -> dict[str, Any]:
    _keys(p, {"target", "object_type_id", "attributes", "only_trigger_object"})
    target = p.body.get("target", "objects")
    if target not in ("objects", "people"):
        raise p.fail("must be objects or people", "target")
    type_id = p.body.get("object_type_id")
    if not isinstance(type_id, str | int) or isinstance(type_id, bool) or str(type_id) == "":
        raise p.fail("is required (the object type id)", "object_type_id")
    attributes = p.mapping("attributes", required=True)
    _liquid(p, attributes, "attributes")
    only = p.body.get("only_trigger_object", False)
    if not isinstance(only, bool):
        raise p.fail("must be true or false", "only_trigger_object")
    return {
        "target": target,
        "object_type_id": str(type_id),
        "attributes": attributes,
        "only_trigger_object": only,
    }


def _run_update_related(step: Step) -> Outcome:
    """Update the person's related objects of a type, or the people related to those objects."""

    spec = step.block.spec
    values = _rendered_attributes(step)
    query = (
        select(Object)
        .join(Relationship, Relationship.object_pk == Object.id)
        .where(Relationship.person_id == step.person.id, Object.type_id == spec["object_type_id"])
    )
    trigger_object = (step.journey.trigger or {}).get("object") or {}
    if spec["only_trigger_object"] and trigger_object.get("object_id") is not None:
        query = query.where(Object.object_id == str(trigger_object["object_id"]))
    objects = list(step.session.scalars(query))
    limits = step.ws.settings.limits
    if spec["target"] == "objects":
        for obj in objects:
            upsert_object(
                step.session,
                step.ws.workspace_id,
                ObjectRef(obj.type_id, obj.object_id),
                values,
                now=step.now,
                limits=limits,
            )
        return go_on(step, f"updated {len(objects)} related objects")
    people = set(
        step.session.scalars(
            select(Person.cio_id)
            .join(Relationship, Relationship.person_id == Person.id)
            .where(Relationship.object_pk.in_([o.id for o in objects]), Person.id != step.person.id)
        )
    )
    for cio_id in sorted(people):
        identify(step.session, step.ws, Identifier("cio_id", cio_id), values, now=step.now)
    return go_on(step, f"updated {len(people)} related people")


block_type("update_related", _parse_update_related, _run_update_related, action_type="batch_update")


# -- outside calls: the webhook action --------------------------------------------------------------------


def _parse_http_request(p: Parser) -> dict[str, Any]:
    _keys(p, {"method", "url", "headers", "body", "store", "timeout", "on_failure"})
    method = str(p.body.get("method", "POST")).upper()
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        raise p.fail("must be GET, POST, PUT, PATCH or DELETE", "method")
    url = p.text("url")
    headers = p.mapping("headers")
    body = p.body.get("body")
    if body is not None and not isinstance(body, str | dict | list):
        raise p.fail("must be a string or JSON", "body")
    store = p.mapping("store")
    if not all(isinstance(path, str) for path in store.values()):
        raise p.fail('must map journey attribute → response path ("" for the whole response)', "store")
    on_failure = p.body.get("on_failure", "continue")
    if on_failure not in ("continue", "exit"):
        raise p.fail("must be continue or exit", "on_failure")
    timeout = p.duration("timeout", required=False) or 10
    for key, value in (("url", url), ("headers", headers), ("body", body)):
        _liquid(p, value, key)
    return {
        "method": method,
        "url": url,
        "headers": headers,
        "body": body,
        "store": store,
        "timeout": min(timeout, 60),
        "on_failure": on_failure,
    }


def _run_http_request(step: Step) -> Outcome:

    spec = step.block.spec
    try:
        request = {
            "method": spec["method"],
            "url": step.render(spec["url"], "url"),
            "headers": step.render(spec["headers"], "headers"),
            "body": step.render(spec["body"], "body"),
            "timeout": spec["timeout"],
            # A call made again (its worker died) keeps the key it was first made with.
            "idempotency_key": (step.journey.wait or {}).get("idempotency_key")
            or f"journey-{step.journey.id}-{step.journey.steps}",
        }
    except RenderFailed as exc:
        return _http_failed(step, f"render failed: {exc}")
    return Outcome(
        f"calling {request['method']} {request['url']}",
        call=calls.http_call(request),
        wait={"idempotency_key": request["idempotency_key"]},
    )


def _http_failed(step: Step, reason: str) -> Outcome:
    if step.block.spec["on_failure"] == "exit":
        return Outcome(f"failed: {reason}", exit="webhook failed", failed=True)
    return go_on(step, f"failed: {reason}", failed=True)


def _resume_http_request(step: Step, result: dict[str, Any]) -> Outcome:

    if result.get("error"):
        return _http_failed(step, str(result["error"]))
    status = int(result.get("status", 0))
    if not 200 <= status < 300:
        return _http_failed(step, f"HTTP {status}")
    stored = {
        name: calls.pick(result.get("json"), result.get("text"), path)
        for name, path in step.block.spec["store"].items()
    }
    if stored:
        step.journey.attributes = {**(step.journey.attributes or {}), **stored}
    return go_on(step, f"HTTP {status}", detail={"stored": sorted(stored)} if stored else None)


block_type(
    "http_request",
    _parse_http_request,
    _run_http_request,
    action_type="webhook_action",
    resume=_resume_http_request,
)

"""The "Run LLM" workflow block (``type: llm``): prompt a model during a journey and store its answer as
journey or customer attributes.

Each attempt is one trip through the journey engine's outside-call path: the step that starts it checks the
AI toggle and the credits and commits the journey as ``calling``; the model call runs on the background
event loop; the answer is stored in a second transaction, which spends the credits and either sets every
field (success) or starts the next attempt. After the third failed attempt the journey goes on: fields
with a fallback get it, the others keep whatever value they had (never cleared). The attempt count lives
in the journey row, so a worker that dies mid-call costs one attempt, not the action.

Every run leaves one entry in the journey's log: model, attempts, credits, duration, and the fields set or
why it failed.
"""

from __future__ import annotations

from typing import Any

from tidings.ai import credits, llm
from tidings.ai import settings as ai_settings
from tidings.ai.catalogue import ModelSpec, catalogue
from tidings.ai.fields import OutputField, coerce, parse_fields
from tidings.errors import InvalidInput
from tidings.journeys.blocks import Outcome, Step, _liquid, block_type, go_on
from tidings.journeys.workflow import Parser
from tidings.messaging.liquid import RenderFailed
from tidings.models import Workspace
from tidings.people.identifiers import Identifier
from tidings.people.service import identify

KEYS = {"prompt", "model", "output_fields", "conditions"}


def _parse(p: Parser) -> dict[str, Any]:
    unknown = sorted(set(p.body) - KEYS - {"id", "type", "name"})
    if unknown:
        raise p.fail(f"unknown field {unknown[0]!r}; expected {', '.join(sorted(KEYS))}", unknown[0])
    prompt = p.text("prompt")
    _liquid(p, prompt, "prompt")
    model = p.body.get("model")
    if model is not None and not isinstance(model, str):
        raise p.fail("must be a model id from the catalogue (GET /v1/ai/models)", "model")
    try:
        catalogue().get(model)
        fields = parse_fields(p.body.get("output_fields"))
    except InvalidInput as exc:
        raise p.fail(exc.message, exc.field or "output_fields") from None
    return {
        "prompt": prompt,
        "model": model,
        "fields": fields,
        "conditions": p.condition("conditions", required=False),
    }


def _fields(step: Step) -> tuple[OutputField, ...]:
    fields: tuple[OutputField, ...] = step.block.spec["fields"]
    return fields


def _run(step: Step) -> Outcome:
    state = step.journey.wait
    if state and "attempt" in state:
        # The worker making this call died: that attempt is spent, and the action goes on from there.
        state = {**state, "attempt": state["attempt"] + 1, "errors": [*state["errors"], "interrupted"]}
        return _next_attempt(step, state)
    conditions = step.block.spec["conditions"]
    if conditions is not None and not step.holds(conditions):
        return go_on(step, "skipped: conditions not met", detail={"skipped": True})
    return _next_attempt(step, {"attempt": 0, "credits": 0.0, "duration_ms": 0, "errors": []})


def _model(step: Step) -> ModelSpec:
    return catalogue().get(step.block.spec["model"])


def _next_attempt(step: Step, state: dict[str, Any], delay: float = 0.0) -> Outcome:
    """Start the next attempt, or give up when there is none left or none can succeed."""
    session, account_id = step.session, step.ws.account_id
    ai = ai_settings.read(session, account_id)
    if not ai.ai_enabled:
        return _give_up(step, state, "ai_disabled: AI features are turned off for this account")
    try:
        model = _model(step)
    except InvalidInput as exc:
        return _give_up(step, state, f"model_unavailable: {exc.message}")
    state = {**state, "model": model.id}
    if not model.available:
        return _give_up(step, state, f"model_unavailable: no key or endpoint configured for {model.provider}")
    try:
        prompt = step.render(step.block.spec["prompt"], "prompt")
    except RenderFailed as exc:
        # The same data renders the same way: retrying cannot help.
        return _give_up(step, state, f"prompt: {exc.message}")
    errors = list(state["errors"])
    attempt = state["attempt"]
    while attempt < llm.ATTEMPTS:
        if credits.can_spend(session, account_id, model.credits):
            workspace = session.get(Workspace, step.ws.workspace_id)
            business = ai_settings.business_context_of(workspace)
            request = llm.fields_generation(model, ai, business, prompt, _fields(step))
            state = {**state, "attempt": attempt, "errors": errors}
            return Outcome(
                f"calling {model.id} (attempt {attempt + 1} of {llm.ATTEMPTS})",
                call=llm.call(model, request, delay=delay),
                wait=state,
            )
        attempt += 1
        errors.append("no_credits: the account has no AI credits left")
    return _give_up(step, {**state, "attempt": attempt, "errors": errors}, errors[-1])


def _resume(step: Step, result: dict[str, Any]) -> Outcome:
    state = dict(step.journey.wait or {})
    attempt = int(state.get("attempt", 0)) + 1
    state["attempt"] = attempt
    state["duration_ms"] = int(state.get("duration_ms", 0)) + int(result.get("duration_ms") or 0)
    try:
        model = _model(step)
    except InvalidInput as exc:
        return _give_up(step, state, f"model_unavailable: {exc.message}")
    if result.get("answered"):
        credits.spend(
            step.session,
            step.ws.account_id,
            model.credits,
            kind="run",
            model=model.id,
            now=step.now,
            workspace_id=step.ws.workspace_id,
            campaign_id=step.campaign.id,
            journey_id=step.journey.id,
        )
        state["credits"] = round(float(state.get("credits", 0.0)) + model.credits, 3)
    if result.get("ok"):
        values, problems = coerce(_fields(step), result.get("data") or {})
        if not problems:
            _apply(step, values)
            return go_on(
                step, f"set {', '.join(sorted(values)) or 'nothing'}", detail=_activity(state, values)
            )
        error = f"invalid_output: {'; '.join(problems)}"
    else:
        error = f"{result.get('kind', 'error')}: {result.get('message') or result.get('error')}"
    state["errors"] = [*state.get("errors", []), error]
    if attempt < llm.ATTEMPTS:
        delay = llm.backoff(str(result.get("kind")), result.get("retry_after"), attempt)
        return _next_attempt(step, state, delay)
    return _give_up(step, state, error)


def _apply(step: Step, values: dict[str, Any]) -> None:
    fields = {f.name: f for f in _fields(step)}
    journey = {k: v for k, v in values.items() if fields[k].target == "journey"}
    customer = {k: v for k, v in values.items() if fields[k].target == "customer"}
    if journey:
        step.journey.attributes = {**(step.journey.attributes or {}), **journey}
    if customer:
        identify(step.session, step.ws, Identifier("cio_id", step.person.cio_id), customer, now=step.now)
    step._context = None


def _activity(
    state: dict[str, Any], values: dict[str, Any] | None, failure: str | None = None
) -> dict[str, Any]:
    activity: dict[str, Any] = {
        "model": state.get("model"),
        "attempts": state.get("attempt", 0),
        "credits": state.get("credits", 0.0),
        "duration_ms": state.get("duration_ms", 0),
    }
    if failure is None:
        activity["fields"] = values
        if state.get("errors"):
            activity["errors"] = state["errors"]  # what the earlier attempts ran into
    else:
        activity["failure"] = failure
        activity["errors"] = state.get("errors", [])
        activity["fallbacks"] = values or {}
    return activity


def _give_up(step: Step, state: dict[str, Any], reason: str) -> Outcome:
    """The action failed: fallbacks are set, every other field keeps its value, the journey goes on."""
    fallbacks = {f.name: f.fallback for f in _fields(step) if f.has_fallback}
    if fallbacks:
        _apply(step, fallbacks)
    text = f"failed: {reason}" + (f"; fallbacks set for {', '.join(sorted(fallbacks))}" if fallbacks else "")
    return go_on(step, text, failed=True, detail=_activity(state, fallbacks, reason))


block_type("llm", _parse, _run, action_type="llm_action", resume=_resume)

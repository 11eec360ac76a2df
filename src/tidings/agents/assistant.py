"""The built-in assistant and the AI segment builder.

The assistant takes an instruction and runs a tool-calling loop with a catalogue model over the same tools
and governance as the MCP server (surface ``assistant``: the AI toggle, and live data only when the
account allows it and the key may). Every model turn spends the model's credits; every tool call is
audited as ``agent.assistant.tool_call``. The answer comes back with the calls it made. Instructions
belong to conversations (:mod:`tidings.agents.conversations`): a later instruction in the same
conversation reaches the model after the earlier ones, their tool calls and results, and the answers.
``run`` yields the request's events as they happen (what the streaming API sends); ``finish`` waits for
the reply.

The segment builder turns a description into a segment condition document, checked by the segment
grammar before it is returned (a document that does not parse goes back to the model with the error,
within three attempts).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

from tidings.agents import conversations
from tidings.agents.client import ApiClient
from tidings.agents.governance import Policy
from tidings.agents.tools import ApiAuditor, Toolbox
from tidings.agents.toolset import TOOLS
from tidings.ai import authoring, llm, providers
from tidings.ai import settings as ai_settings
from tidings.ai.catalogue import ModelSpec
from tidings.db.database import Database
from tidings.errors import InvalidInput, OutOfCredits, UpstreamFailed
from tidings.segments.conditions import ConditionError, parse
from tidings.workspaces import schema as workspace_schema
from tidings.workspaces.schemas import WorkspaceContext

MAX_STEPS = 20
ASSISTANT_TASK = (
    "You are the assistant of a customer messaging platform (Customer.io-compatible). Use the tools to "
    "answer questions about the workspace and to make the changes asked for. Read before you write; "
    "prefer dry_run for changes you are unsure of; never invent ids (find them with the list and search "
    "tools). When a tool is refused, say why and what would allow it. Answer briefly and plainly."
)
SEGMENT_TASK = (
    "You turn a description of people into a segment condition document. Grammar: an object with exactly "
    "one key: and / or (lists), not (one condition), attribute {field, operator, value | values | days, "
    "inverse?} with operators eq, contains, starts_with, ends_with, gt, gte, lt, lte, between (values "
    "[low, high]), in (values), exists, is_true, is_false, older_than / newer_than / within_next (days); "
    "event {name, filters?: [attribute tests], count?: {operator: at_least|at_most|exactly, value}, "
    "within?: {days}}; segment {id}. Use only attributes and events from the workspace schema given. "
    "Answer with conditions_json (the document as JSON text) and a one-sentence explanation."
)


@dataclass
class Reply:
    answer: str
    calls: list[dict[str, Any]]
    model: str
    credits_used: float
    steps: int
    stopped: str | None
    conversation_id: str

    def view(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "calls": self.calls,
            "model": self.model,
            "credits_used": self.credits_used,
            "steps": self.steps,
            "stopped": self.stopped,
            "conversation_id": self.conversation_id,
        }


@dataclass(frozen=True)
class Event:
    """What a running request has to tell, in order: ``text`` (what a model turn said) and ``tool_call``
    (a call record as in the reply's ``calls``, once the call is done) as they happen, and last ``done``
    (the reply)."""

    name: Literal["text", "tool_call", "done"]
    data: dict[str, Any]


def _prepare(
    session: Session, ws: WorkspaceContext, model_id: Any
) -> tuple[ai_settings.AiSettings, ModelSpec, dict[str, str]]:
    ai, model = authoring.usable_model(session, ws, model_id)
    return ai, model, ai_settings.business_context(session, ws.workspace_id)


async def run(
    db: Database,
    ws: WorkspaceContext,
    client: ApiClient,
    instruction: str,
    *,
    conversation_id: str | None = None,
    model_id: str | None = None,
    max_steps: int = 10,
    now: int,
) -> AsyncGenerator[Event, None]:
    """Run one instruction, in the conversation ``conversation_id`` (its messages go to the model first,
    and with no ``model_id`` its model answers again) or in a new one, yielding its events.

    Whatever fails before the first event (bad input, AI off, an unknown conversation, no credits for the
    first turn, a failed first model call) fails before anything was done, so callers can still answer
    it as an ordinary error. The request's turns are added to the conversation when the loop ends — with
    an answer, at ``max_steps`` or out of credits alike — and not at all when it fails."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise InvalidInput("instruction is required (text)", field="instruction")
    if not 1 <= max_steps <= MAX_STEPS:
        raise InvalidInput(f"max_steps must be 1 to {MAX_STEPS}", field="max_steps")
    history: list[providers.Message] = []
    if conversation_id is not None:
        found = await db.read(lambda s: conversations.find(s, ws, conversation_id))
        history, model_id = found.messages, model_id or found.model
    ai, model, business = await db.read(lambda s: _prepare(s, ws, model_id))
    policy = Policy(
        ws.permissions,
        "assistant",
        ai_enabled=ai.ai_enabled,
        mcp_enabled=ai.mcp_enabled,
        allow_agent_edit_live_data=ai.allow_agent_edit_live_data,
    )
    toolbox = Toolbox(TOOLS, client, policy, ApiAuditor(client, "assistant"))
    specs = [providers.ToolSpec(t.name, t.description, t.schema) for t in toolbox.available()]
    system = llm.instructions(ai, business, ASSISTANT_TASK)
    safety = (ai.safety_thresholds or None) if model.provider == "google" else None
    turns: list[providers.Message] = [{"role": "user", "text": instruction}]
    spent = 0.0
    answer, steps = "", 0
    # Why the loop ended without an answer: max_steps, or no_credits; None once the model answered.
    stopped: str | None = "max_steps"
    for step in range(1, max_steps + 1):
        try:
            turn: providers.Turn = await authoring.paid_call(
                db,
                ws,
                model,
                lambda: providers.converse(model, system, [*history, *turns], specs, safety=safety),
                "assistant",
                now,
            )
        except OutOfCredits:
            if step == 1:
                raise
            answer, stopped = "", "no_credits"
            break
        spent = round(spent + model.credits, 3)
        answer, steps = turn.text or "", step
        if turn.text:
            yield Event("text", {"text": turn.text})
        turns.append({"role": "assistant", "text": turn.text, "tool_calls": turn.tool_calls})
        if not turn.tool_calls:
            stopped = None
            break
        results: list[providers.ToolResult] = []
        for tool_call in turn.tool_calls:
            outcome = await toolbox.call(tool_call.name, tool_call.arguments)
            content = json.dumps(outcome.data if outcome.ok else {"error": outcome.error}, default=str)
            results.append(
                providers.ToolResult(tool_call.id, tool_call.name, content[:50_000], not outcome.ok)
            )
            toolbox.calls[-1]["result"] = outcome.data if outcome.ok else None
            toolbox.calls[-1]["error"] = outcome.error
            yield Event("tool_call", toolbox.calls[-1])
        turns.append({"role": "tool", "results": results})
    kept = await db.write(
        lambda s: conversations.record(s, ws, conversation_id, turns, model=model.id, now=now)
    )
    reply = Reply(answer, toolbox.calls, model.id, spent, steps, stopped, kept)
    yield Event("done", reply.view())


async def finish(events: AsyncIterator[Event]) -> dict[str, Any]:
    """Run a request to its end, for callers that want only the reply."""
    reply: dict[str, Any] = {}
    async for event in events:
        # The last event is always done, with the reply.
        reply = event.data
    return reply


# -- the segment builder ---------------------------------------------------------------------------------

_SEGMENT_SCHEMA = {
    "type": "object",
    "properties": {"conditions_json": {"type": "string"}, "explanation": {"type": "string"}},
    "required": ["conditions_json", "explanation"],
    "additionalProperties": False,
}


async def build_segment(
    db: Database, ws: WorkspaceContext, description: str, *, model_id: str | None = None, now: int
) -> dict[str, Any]:
    if not isinstance(description, str) or not description.strip():
        raise InvalidInput("description is required (text)", field="description")
    ai, model, business = await db.read(lambda s: _prepare(s, ws, model_id))
    known = await db.read(lambda s: workspace_schema.describe(s, ws.workspace_id))
    context = {
        "attributes": [{k: a[k] for k in ("name", "types", "examples")} for a in known["attributes"]],
        "events": [
            {"name": e["name"], "type": e["type"], "data": [d["name"] for d in e["data"]]}
            for e in known["events"]
        ],
    }
    prompt = f"Workspace schema:\n{json.dumps(context)}\n\nDescription: {description.strip()}"
    problems: list[str] = []
    spent = 0.0
    for _attempt in range(llm.ATTEMPTS):
        asked = prompt + (f"\n\nYour previous answer was refused: {problems[-1]}" if problems else "")
        request = llm.generation(model, ai, business, asked, _SEGMENT_SCHEMA, task=SEGMENT_TASK)

        async def call(request: providers.Generation = request) -> providers.Answer:
            return await providers.generate(model, request)

        answer: providers.Answer = await authoring.paid_call(db, ws, model, call, "segment_builder", now)
        spent = round(spent + model.credits, 3)
        try:
            conditions = json.loads(str(answer.data.get("conditions_json", "")))
            parse(conditions, "conditions")
        except ValueError as exc:
            problems.append(f"conditions_json is not JSON: {exc}")
            continue
        except ConditionError as exc:
            problems.append(exc.message)
            continue
        return {
            "conditions": conditions,
            "explanation": answer.data.get("explanation", ""),
            "model": model.id,
            "credits_used": spent,
            "attempts": len(problems) + 1,
        }
    raise UpstreamFailed(
        f"{model.id} did not produce valid conditions in {llm.ATTEMPTS} attempts: {problems[-1]}"
    )

"""The built-in assistant and the AI segment builder.

The assistant takes an instruction and runs a tool-calling loop with a catalogue model over the same tools
and governance as the MCP server (surface ``assistant``: the AI toggle, and live data only when the
account allows it and the key may). Every model turn spends the model's credits; every tool call is
audited as ``agent.assistant.tool_call``. The answer comes back with the calls it made.

The segment builder turns a description into a segment condition document, checked by the segment
grammar before it is returned (a document that does not parse goes back to the model with the error,
within three attempts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

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
    stopped: str | None = None
    log: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "calls": self.calls,
            "model": self.model,
            "credits_used": self.credits_used,
            "steps": self.steps,
            "stopped": self.stopped,
        }


def _prepare(
    session: Session, ws: WorkspaceContext, model_id: Any
) -> tuple[ai_settings.AiSettings, ModelSpec, dict[str, str]]:
    ai, model = authoring.usable_model(session, ws, model_id)
    return ai, model, ai_settings.business_context(session, ws.workspace_id)


async def ask(
    db: Database,
    ws: WorkspaceContext,
    client: ApiClient,
    instruction: str,
    *,
    model_id: str | None = None,
    max_steps: int = 10,
    now: int,
) -> Reply:
    if not isinstance(instruction, str) or not instruction.strip():
        raise InvalidInput("instruction is required (text)", field="instruction")
    if not 1 <= max_steps <= MAX_STEPS:
        raise InvalidInput(f"max_steps must be 1 to {MAX_STEPS}", field="max_steps")
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
    messages: list[providers.Message] = [{"role": "user", "text": instruction}]
    spent = 0.0
    for step in range(1, max_steps + 1):

        async def call() -> providers.Turn:
            return await providers.converse(model, system, messages, specs, safety=safety)

        try:
            turn: providers.Turn = await authoring.paid_call(db, ws, model, call, "assistant", now)
        except OutOfCredits:
            if step == 1:
                raise
            return Reply("", toolbox.calls, model.id, spent, step - 1, stopped="no_credits")
        spent = round(spent + model.credits, 3)
        if not turn.tool_calls:
            return Reply(turn.text or "", toolbox.calls, model.id, spent, step)
        messages.append({"role": "assistant", "text": turn.text, "tool_calls": turn.tool_calls})
        results: list[providers.ToolResult] = []
        for tool_call in turn.tool_calls:
            outcome = await toolbox.call(tool_call.name, tool_call.arguments)
            content = json.dumps(outcome.data if outcome.ok else {"error": outcome.error}, default=str)
            results.append(
                providers.ToolResult(tool_call.id, tool_call.name, content[:50_000], not outcome.ok)
            )
            toolbox.calls[-1]["result"] = outcome.data if outcome.ok else None
            toolbox.calls[-1]["error"] = outcome.error
        messages.append({"role": "tool", "results": results})
    return Reply(turn.text or "", toolbox.calls, model.id, spent, max_steps, stopped="max_steps")


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

"""Authoring helpers for LLM actions: the processed prompt (free), a preview response (spends credits,
changes nothing) and output fields generated from a prompt.

A request names the prompt and, optionally, a sample person (``{"id"|"email"|"cio_id": …}``), sample
trigger data (``{"event": {"name", "data"}}`` or ``{"data": {…}}``) and sample journey attributes; or it
names a saved campaign's LLM block (``campaign_id`` and ``block``) to take prompt, model and fields from.
Database work happens in short transactions around the model call, never across it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from tidings.ai import credits, llm, providers
from tidings.ai import settings as ai_settings
from tidings.ai.catalogue import ModelSpec, catalogue
from tidings.ai.fields import TYPES, OutputField, coerce, parse_field, parse_fields
from tidings.campaigns.service import current_definition
from tidings.db.database import Database
from tidings.errors import Forbidden, InvalidInput, NotFound, OutOfCredits, UpstreamFailed
from tidings.messaging.render import customer_of
from tidings.models import Campaign
from tidings.people.identifiers import IDENTIFIER_TYPES, Identifier, find_person
from tidings.workspaces.schemas import WorkspaceContext

MAX_PROMPT = 50_000
T = TypeVar("T")
GENERATE_TASK = (
    "You help a marketer configure an LLM step of a messaging workflow. Read the prompt they wrote and "
    "propose the output fields the step should produce so later steps can use the answer: short "
    "snake_case names, the best type for each, a one-sentence description, and options for select "
    "types. Answer with a single JSON object matching the schema."
)


@dataclass(frozen=True)
class Sample:
    prompt: str
    model: ModelSpec
    fields: tuple[OutputField, ...]
    context: dict[str, Any]


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{key} is required (text)", field=key)
    if len(value) > MAX_PROMPT:
        raise InvalidInput(f"{key} is longer than {MAX_PROMPT} characters", field=key)
    return value


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{key} must be an object", field=key)
    return value


def _saved_block(session: Session, ws: WorkspaceContext, body: dict[str, Any]) -> dict[str, Any]:
    """Prompt, model and fields of a saved campaign's LLM block, overridden by what the body gives."""
    campaign_id, block_id = body.get("campaign_id"), body.get("block")
    if campaign_id is None:
        return body
    campaign = session.get(Campaign, campaign_id) if isinstance(campaign_id, int) else None
    if campaign is None or campaign.workspace_id != ws.workspace_id:
        raise NotFound(f"no campaign {campaign_id}")
    block = current_definition(session, campaign).workflow.blocks.get(str(block_id))
    if block is None or block.type != "llm":
        raise InvalidInput(f"campaign {campaign_id} has no LLM block {block_id!r}", field="block")
    saved = {
        "prompt": block.spec["prompt"],
        "model": block.spec["model"],
        "output_fields": [f.view() for f in block.spec["fields"]],
    }
    return {**body, **saved, **{k: v for k, v in body.items() if k in ("prompt", "model", "output_fields")}}


def _context(session: Session, ws: WorkspaceContext, body: dict[str, Any]) -> dict[str, Any]:
    person_ref = _object(body, "person")
    customer: dict[str, Any] = {}
    if person_ref:
        if len(person_ref) != 1 or next(iter(person_ref)) not in IDENTIFIER_TYPES:
            raise InvalidInput('person must be {"id"|"email"|"cio_id": value}', field="person")
        kind = next(t for t in IDENTIFIER_TYPES if t in person_ref)
        value = person_ref[kind]
        person = find_person(session, ws.workspace_id, Identifier(kind, str(value)))
        if person is None:
            raise NotFound(f"no person with {kind} {value!r}")
        customer = customer_of(person)
    return llm.prompt_context(
        customer, _object(body, "trigger"), _object(body, "journey"), {"id": body.get("campaign_id")}
    )


def processed_prompt(session: Session, ws: WorkspaceContext, body: dict[str, Any]) -> dict[str, Any]:
    """The prompt rendered for the sample, or each Liquid error with its position. No model call."""
    body = _saved_block(session, ws, body)
    rendered, errors = llm.render_listing_errors(_text(body, "prompt"), _context(session, ws, body))
    return {"prompt": rendered, "errors": errors}


def usable_model(
    session: Session, ws: WorkspaceContext, model_id: Any
) -> tuple[ai_settings.AiSettings, ModelSpec]:
    ai = ai_settings.read(session, ws.account_id)
    if not ai.ai_enabled:
        raise Forbidden(
            "AI features are turned off for this account (ai_enabled is false in the AI settings)"
        )
    if model_id is not None and not isinstance(model_id, str):
        raise InvalidInput("model must be a model id from GET /v1/ai/models", field="model")
    model = catalogue().get(model_id)
    if not model.available:
        raise InvalidInput(
            f"model {model.id}: no key or endpoint is configured for {model.provider}", field="model"
        )
    return ai, model


def _prepare_preview(
    session: Session, ws: WorkspaceContext, body: dict[str, Any]
) -> tuple[providers.Generation, Sample]:
    body = _saved_block(session, ws, body)
    ai, model = usable_model(session, ws, body.get("model"))
    fields = parse_fields(body.get("output_fields"))
    context = _context(session, ws, body)
    rendered, errors = llm.render_listing_errors(_text(body, "prompt"), context)
    if rendered is None:
        raise InvalidInput(
            f"the prompt does not render for this sample: {errors[0]['message']}", field="prompt"
        )
    business = ai_settings.business_context(session, ws.workspace_id)
    return llm.fields_generation(model, ai, business, rendered, fields), Sample(
        rendered, model, fields, context
    )


async def paid_call(
    db: Database,
    ws: WorkspaceContext,
    model: ModelSpec,
    call: Callable[[], Awaitable[T]],
    kind: str,
    now: int,
) -> T:
    """One model call on behalf of an API caller: refused when the credits cannot pay for it, paid for
    when the provider answered (usable or not), a provider failure reported as 502."""
    if not await db.read(lambda s: credits.can_spend(s, ws.account_id, model.credits)):
        raise OutOfCredits(f"the account has fewer AI credits than {model.id} costs ({model.credits})")
    try:
        result = await call()
    except providers.ProviderError as exc:
        if exc.answered:
            await db.write(lambda s: _spend(s, ws, model, kind, now))
        raise UpstreamFailed(f"{model.id}: {exc.kind}: {exc.message}") from None
    await db.write(lambda s: _spend(s, ws, model, kind, now))
    return result


async def _generate(
    db: Database, ws: WorkspaceContext, model: ModelSpec, request: providers.Generation, kind: str, now: int
) -> providers.Answer:
    return await paid_call(db, ws, model, lambda: providers.generate(model, request), kind, now)


def _spend(session: Session, ws: WorkspaceContext, model: ModelSpec, kind: str, now: int) -> None:
    credits.spend(
        session,
        ws.account_id,
        model.credits,
        kind=kind,
        model=model.id,
        now=now,
        workspace_id=ws.workspace_id,
        actor=ws.actor,
    )


async def preview(db: Database, ws: WorkspaceContext, body: dict[str, Any], *, now: int) -> dict[str, Any]:
    """Run the model once for the sample: what it would set, and what it cost. Changes no data."""

    request, sample = await db.read(lambda s: _prepare_preview(s, ws, body))
    answer = await _generate(db, ws, sample.model, request, "preview", now)
    values, problems = coerce(sample.fields, answer.data)
    targets = {f.name: f.target for f in sample.fields}
    return {
        "model": sample.model.id,
        "credits_used": sample.model.credits,
        "attributes": {
            "journey": {k: v for k, v in values.items() if targets[k] == "journey"},
            "customer": {k: v for k, v in values.items() if targets[k] == "customer"},
        },
        "problems": problems,
        "raw": answer.data,
    }


def _fields_schema() -> dict[str, Any]:
    field = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "type": {"type": "string", "enum": list(TYPES)},
            "description": {"type": "string"},
            "required": {"type": "boolean"},
            "options": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        },
        "required": ["name", "type", "description", "required", "options"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"fields": {"type": "array", "items": field}},
        "required": ["fields"],
        "additionalProperties": False,
    }


async def generate_fields(
    db: Database, ws: WorkspaceContext, body: dict[str, Any], *, now: int
) -> dict[str, Any]:
    """Output fields a model proposes for a prompt, checked like saved ones; the author reviews them."""

    def prepare(session: Session) -> tuple[providers.Generation, ModelSpec]:
        prompt = _text(_saved_block(session, ws, body), "prompt")
        ai, model = usable_model(session, ws, body.get("model"))
        business = ai_settings.business_context(session, ws.workspace_id)
        task = f"{GENERATE_TASK}\n\nThe prompt to analyse:\n{prompt}"
        request = llm.generation(model, ai, business, prompt, _fields_schema(), task=GENERATE_TASK)
        return providers.Generation(
            request.system, task, request.schema, "output_fields", request.safety
        ), model

    request, model = await db.read(prepare)
    answer = await _generate(db, ws, model, request, "generate_fields", now)
    proposed: list[dict[str, Any]] = []
    skipped: list[str] = []
    raw = answer.data.get("fields")
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        # Models answer null for what does not apply (options of a text field): leave those out.
        cleaned = {k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item
        try:
            proposed.append(parse_field(cleaned, f"fields[{index}]").view())
        except InvalidInput as exc:
            skipped.append(exc.message)
    return {"model": model.id, "credits_used": model.credits, "output_fields": proposed, "skipped": skipped}

"""What every LLM generation shares: the instructions a model is given, the call itself, and the Liquid
view of a prompt (for the LLM action block and its authoring helpers alike).

The data boundaries of an LLM action follow from here: a model receives only the instructions (task rules,
business context, compliance prompt), the rendered prompt and the output schema. It gets no tools, so it
cannot browse, read files or fetch media; the prompt's Liquid sees the person, the journey's attributes
and the trigger's data only (no other events, objects or relationships); and what it answers can only
set the declared output fields.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tidings.ai import providers
from tidings.ai.catalogue import ModelSpec
from tidings.ai.fields import OutputField, json_schema
from tidings.ai.settings import AiSettings, context_text
from tidings.messaging.liquid import RenderFailed
from tidings.messaging.templates import liquid

ATTEMPTS = 3
# Backoff before a retry, by what went wrong (seconds); a rate limit's Retry-After wins, up to the cap.
# The cap keeps a retry plus the model's timeout inside the journey's lease.
MAX_BACKOFF = 20.0
TASK_RULES = (
    "You are one step of an automated customer-messaging workflow. Do the task in the user's message and "
    "answer with a single JSON object that matches the given schema, with nothing around it. Use only "
    "the information given; you cannot browse the web, open links or see files."
)
MAX_ERRORS_LISTED = 20


def instructions(ai: AiSettings, business: dict[str, str], task: str = TASK_RULES) -> str:
    """The system instructions of every generation: the task's rules, the workspace's business context,
    and the account's compliance prompt (last, so it has the final word)."""
    parts = [task]
    context = context_text(business)
    if context:
        parts.append(f"Business context:\n{context}")
    if ai.compliance_prompt.strip():
        parts.append(f"Compliance requirements (always follow these):\n{ai.compliance_prompt.strip()}")
    return "\n\n".join(parts)


def generation(
    model: ModelSpec,
    ai: AiSettings,
    business: dict[str, str],
    prompt: str,
    schema: dict[str, Any],
    *,
    task: str = TASK_RULES,
) -> providers.Generation:
    return providers.Generation(
        system=instructions(ai, business, task),
        prompt=prompt,
        schema=schema,
        # Safety thresholds are Gemini's settings: other providers never receive them.
        safety=(ai.safety_thresholds or None) if model.provider == "google" else None,
    )


def fields_generation(
    model: ModelSpec, ai: AiSettings, business: dict[str, str], prompt: str, fields: tuple[OutputField, ...]
) -> providers.Generation:
    return generation(model, ai, business, prompt, json_schema(fields))


def backoff(kind: str, retry_after: float | None, attempt: int) -> float:
    """How long to wait before attempt ``attempt + 1`` after a failure of ``kind``."""
    if kind == "rate_limited":
        wanted = retry_after if retry_after is not None else float(2**attempt)
        return min(max(wanted, 0.0), MAX_BACKOFF)
    if kind in ("unavailable", "timeout"):
        return min(float(attempt), MAX_BACKOFF)
    return 0.0


def call(
    model: ModelSpec, request: providers.Generation, *, delay: float = 0.0
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """One model call as the journey engine's async call: its answer, or what went wrong, as a dict."""

    async def run() -> dict[str, Any]:
        if delay > 0:
            await asyncio.sleep(delay)
        return await attempt(model, request)

    return run


async def attempt(model: ModelSpec, request: providers.Generation) -> dict[str, Any]:
    started = time.monotonic()
    try:
        answer = await providers.generate(model, request)
    except providers.ProviderError as exc:
        return {
            "ok": False,
            "kind": exc.kind,
            "message": exc.message,
            "answered": exc.answered,
            "retry_after": exc.retry_after,
            "duration_ms": round((time.monotonic() - started) * 1000),
        }
    return {
        "ok": True,
        "data": answer.data,
        "answered": True,
        "input_tokens": answer.input_tokens,
        "output_tokens": answer.output_tokens,
        "duration_ms": round((time.monotonic() - started) * 1000),
    }


# -- the prompt's Liquid ------------------------------------------------------------------------------------


def prompt_context(
    customer: dict[str, Any],
    trigger: dict[str, Any] | None = None,
    journey: dict[str, Any] | None = None,
    campaign: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Liquid's view for a prompt, shaped as a journey step sees it (tidings.journeys.blocks.Step)."""
    trigger = trigger or {}
    event = trigger.get("event") or {}
    return {
        "customer": customer,
        "trigger": trigger.get("data") or event.get("data") or {},
        "event": event.get("data") or {},
        "event_name": event.get("name"),
        "event_id": event.get("id"),
        "journey": dict(journey or {}),
        "campaign": campaign or {},
        "snippets": {},
    }


_PATH_PART = re.compile(r"""\[\s*(?:"([^"]*)"|'([^']*)'|(\d+))\s*\]|\.?([^.\[\]]+)""")


def _set_path(context: dict[str, Any], variable: str, value: Any) -> bool:
    """Put ``value`` at a Liquid path (``customer.plan`` or ``event['x']``) in ``context``."""
    parts = [next(g for g in m.groups() if g is not None) for m in _PATH_PART.finditer(variable)]
    if not parts:
        return False
    current: Any = context
    for part in parts[:-1]:
        nxt = current.get(part) if isinstance(current, dict) else None
        if not isinstance(nxt, dict):
            if not isinstance(current, dict):
                return False
            nxt = {}
            current[part] = nxt
        current = nxt
    if not isinstance(current, dict) or parts[-1] in current:
        return False
    current[parts[-1]] = value
    return True


def render_listing_errors(prompt: str, context: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    """Render the prompt; on failure, list every Liquid error with its position, not only the first:
    each missing variable is filled with a placeholder and the render tried again."""
    errors: list[dict[str, Any]] = []
    scratch = copy.deepcopy(context)
    rendered: str | None = None
    for _ in range(MAX_ERRORS_LISTED):
        try:
            rendered = liquid.render(prompt, scratch, field="prompt")
            break
        except RenderFailed as exc:
            errors.append(
                {
                    "message": exc.message,
                    "line": exc.line,
                    "column": exc.column,
                    "variable": exc.variable,
                }
            )
            if exc.variable is None or not _set_path(scratch, exc.variable, f"[{exc.variable}]"):
                break
    return (rendered if not errors else None), errors

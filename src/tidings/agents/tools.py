"""Agent tools: how one is described (schema, annotations, the permission it needs, whether a call is
live) and how a call runs: checked against its schema, judged by the policy, made through the API
client, and written to the audit log — refusals and failures included.

Errors come back as text telling the agent how to recover (which argument is wrong, which tool lists
valid ids, which permission or setting is missing, how long to wait).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tidings.agents.client import ApiClient, ApiError, MissingCredentials
from tidings.agents.governance import Policy

Access = Literal["read", "read_pii", "write"]


@dataclass
class ToolContext:
    client: ApiClient
    dry_run: bool = False


Handler = Callable[[ToolContext, dict[str, Any]], Awaitable[Any]]
LiveCheck = Callable[[ToolContext, dict[str, Any]], Awaitable[bool]]


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    access: Access
    run: Handler
    # Whether a call changes live data: a constant, or a check that may read the current state.
    live: bool | LiveCheck = False
    destructive: bool = False
    idempotent: bool = False
    # Reaches outside the workspace (sends messages people receive).
    open_world: bool = False
    # Tidings-only tools (endpoints Customer.io does not have) are left out against Customer.io.
    tidings_only: bool = False

    @property
    def schema(self) -> dict[str, Any]:
        """The input schema the agent sees: every write takes ``dry_run``."""
        if self.access != "write":
            return self.input_schema
        properties = dict(self.input_schema.get("properties", {}))
        properties["dry_run"] = {
            "type": "boolean",
            "description": "Validate and show the exact change without making it (needs only read access).",
            "default": False,
        }
        return {**self.input_schema, "properties": properties}

    def annotations(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "read_only": self.access != "write",
            "destructive": self.destructive,
            "idempotent": self.idempotent or self.access != "write",
            "open_world": self.open_world,
        }


@dataclass(frozen=True)
class Outcome:
    ok: bool
    data: Any = None
    error: str | None = None
    dry_run: bool = False
    live: bool = False


class Auditor(Protocol):
    async def record(
        self, tool: str, arguments: dict[str, Any], outcome: Outcome, duration_ms: int
    ) -> None: ...


# -- masking personal data in the audit log ----------------------------------------------------------------

_EMAIL = re.compile(r"[^\s@\"']+@[^\s@\"']+\.[A-Za-z]{2,}")
# International numbers (+…), or 10 to 15 digits in a row; dates and short ids stay readable.
_PHONE = re.compile(r"\+\d[\d\s().-]{6,}\d|\b\d{10,15}\b")
# Containers whose values are personal data whatever their names.
_PERSONAL = {"attributes", "traits", "data", "message_data", "identifiers", "to", "email", "phone", "filter"}


def mask(value: Any, *, personal: bool = False) -> Any:
    """The arguments as the audit log keeps them: values inside personal containers become ``***``;
    email addresses and phone numbers anywhere are masked."""
    if isinstance(value, dict):
        return {k: mask(v, personal=personal or k in _PERSONAL) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, personal=personal) for v in value]
    if personal and value is not None and not isinstance(value, bool):
        return "***"
    if isinstance(value, str):
        return _PHONE.sub("***", _EMAIL.sub("***@***", value))
    return value


# -- running a call ---------------------------------------------------------------------------------------


def _hint(tool: Tool, exc: ApiError) -> str:
    if exc.status == 401:
        return f"{exc.detail} — the API key is invalid or revoked: configure a valid App API key"
    if exc.status == 403:
        return f"{exc.detail} — the key or the account settings do not allow this"
    if exc.status == 404:
        return f"{exc.detail} — check the id; the list_* and search tools return valid ids"
    if exc.status == 429:
        wait = exc.retry_after or "a few"
        return f"{exc.detail} — rate limited: wait {wait} seconds, then call {tool.name} again"
    if exc.status >= 500:
        return f"{exc.detail} — the server failed; retry later"
    return f"{exc.detail} — fix the arguments and call {tool.name} again"


@dataclass
class Toolbox:
    tools: dict[str, Tool]
    client: ApiClient
    policy: Policy
    auditor: Auditor | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    def available(self) -> list[Tool]:
        return [t for t in self.tools.values() if self.client.backend == "tidings" or not t.tidings_only]

    async def call(self, name: str, arguments: dict[str, Any] | None) -> Outcome:
        started = time.monotonic()
        args = dict(arguments or {})
        outcome = await self._call(name, args)
        if self.auditor is not None and name in self.tools:
            await self.auditor.record(name, args, outcome, round((time.monotonic() - started) * 1000))
        self.calls.append({"tool": name, "arguments": args, "ok": outcome.ok, "dry_run": outcome.dry_run})
        return outcome

    async def _call(self, name: str, args: dict[str, Any]) -> Outcome:
        tool = self.tools.get(name)
        if tool is None:
            return Outcome(False, error=f"unknown tool {name!r}; list the tools to see their names")
        if tool.tidings_only and self.client.backend != "tidings":
            return Outcome(
                False, error=f"{name} needs a Tidings server; Customer.io's APIs have no such endpoint"
            )
        # Imported here: jsonschema is a tenth of a second of every server start without a bytecode
        # cache, and only agents' tool calls use it.
        import jsonschema  # noqa: PLC0415

        try:
            jsonschema.validate(args, tool.schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
            return Outcome(
                False, error=f"invalid arguments at {where}: {exc.message}; see the tool's input schema"
            )
        dry_run = bool(args.pop("dry_run", False)) if tool.access == "write" else False
        context = ToolContext(self.client, dry_run)
        try:
            # Refusals that do not depend on live-ness come first: the live check reads, and a key that
            # may not read must be told what it lacks, not that a read failed.
            refusal = self.policy.refusal(tool.access, live=False, dry_run=dry_run)
            live = tool.live if isinstance(tool.live, bool) else False
            if refusal is None and not isinstance(tool.live, bool):
                try:
                    live = await tool.live(context, args)
                except ApiError as exc:
                    if exc.status != 403:
                        raise
                    live = True  # what cannot be checked is treated as live
            if refusal is None:
                refusal = self.policy.refusal(tool.access, live=live, dry_run=dry_run)
            if refusal is not None:
                return Outcome(False, error=f"refused: {refusal}", dry_run=dry_run, live=live)
            data = await tool.run(context, args)
        except ApiError as exc:
            return Outcome(False, error=_hint(tool, exc), dry_run=dry_run)
        except MissingCredentials as exc:
            return Outcome(False, error=str(exc), dry_run=dry_run)
        if dry_run:
            data = {"dry_run": True, "live": live, "would": data}
        return Outcome(True, data=data, dry_run=dry_run, live=live)


def _audit_entry(
    surface: str, tool: str, arguments: dict[str, Any], outcome: Outcome, duration_ms: int
) -> dict[str, Any]:
    return {
        "action": f"agent.{surface}.tool_call",
        "target": tool,
        "new": {
            "arguments": mask(arguments),
            "dry_run": outcome.dry_run,
            "live": outcome.live,
            "ok": outcome.ok,
            "error": outcome.error,
            "duration_ms": duration_ms,
        },
    }


class ApiAuditor:
    """Audit entries written through the App API (``POST /v1/audit_log``), as the key that made the call."""

    def __init__(self, client: ApiClient, surface: str) -> None:
        self.client = client
        self.surface = surface

    async def record(self, tool: str, arguments: dict[str, Any], outcome: Outcome, duration_ms: int) -> None:
        entry = _audit_entry(self.surface, tool, arguments, outcome, duration_ms)
        await self.client.app("POST", "/v1/audit_log", json=entry)


class FileAuditor:
    """Audit entries appended to a JSON-lines file: for Customer.io's backend, which has no endpoint to
    write them to. Each line is one entry shaped as ``GET /v1/audit_log`` shows them, plus the time, the
    backend's host and the last four characters of the key (never the key)."""

    def __init__(self, path: Path, client: ApiClient, surface: str) -> None:
        self.path = path
        self.surface = surface
        self.host = client.connection.app_url
        self.key_hint = "…" + client.connection.app_key[-4:]

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write per line, in append mode: lines from several processes interleave whole.
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line)

    async def record(self, tool: str, arguments: dict[str, Any], outcome: Outcome, duration_ms: int) -> None:
        entry = _audit_entry(self.surface, tool, arguments, outcome, duration_ms)
        entry |= {"at": int(time.time()), "backend": self.host, "key": self.key_hint}
        await asyncio.to_thread(self._append, json.dumps(entry, default=str) + "\n")

"""The MCP server: Tidings' agent tools, a workspace-schema resource and task prompts, on the official
``mcp`` SDK, over stdio (``tidings mcp``) and streamable HTTP (``/mcp`` on the Tidings server,
authenticated by an App API key).

The low-level SDK server is used because tools are described by hand-written JSON schemas with MCP
annotations; each call goes through :class:`tidings.agents.tools.Toolbox` (schema check, governance,
the API call, the audit entry) and comes back as JSON text plus structured content, or as an error
result whose text tells the agent how to recover.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from mcp import types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

from tidings import __version__
from tidings.agents.client import ApiClient, ApiError, Connection
from tidings.agents.governance import Policy
from tidings.agents.tools import ApiAuditor, Auditor, FileAuditor, Outcome, Toolbox
from tidings.agents.toolset import ID_TYPES, TOOLS

SCHEMA_URI = "tidings://workspace/schema"
PAGE = 100
INSTRUCTIONS = (
    "Tools to read and operate a Tidings (Customer.io-compatible) workspace. Read the "
    f"{SCHEMA_URI} resource before writing filters or segment conditions. Every write takes dry_run: "
    "use it to show the exact change first. Writes that touch live data (people, running campaigns, "
    "segments they use, sends) may be refused by the key's permissions or the account's AI settings."
)

PROMPTS: dict[str, tuple[str, list[types.PromptArgument], Callable[[dict[str, str]], str]]] = {
    "why_no_message": (
        "Find out why a person did not get a message from a campaign",
        [
            types.PromptArgument(name="person", description="The person's id or email", required=True),
            types.PromptArgument(name="campaign", description="The campaign's id or name", required=True),
        ],
        lambda a: (
            f"Find out why {a['person']} did not get a message from campaign {a['campaign']}. Look the "
            "person up (get_person_attributes), check their journeys (get_person_journeys) and the campaign "
            "(get_campaign, its trigger, filters and state), their messages (get_person_messages: drafted, "
            "failed, suppressed?) and whether they are unsubscribed. Explain the cause plainly and suggest "
            "the fix; do not change anything."
        ),
    ),
    "campaign_report": (
        "Summarise how a campaign performed",
        [types.PromptArgument(name="campaign", description="The campaign's id or name", required=True)],
        lambda a: (
            f"Report how campaign {a['campaign']} performed over the last 30 days: use get_campaign and "
            "get_campaign_metrics (period days, steps 30), compare delivery, open, click and conversion "
            "rates, and point out the weakest step."
        ),
    ),
    "build_segment": (
        "Turn a description into a segment, previewed before it is saved",
        [types.PromptArgument(name="description", description="Who should be in the segment", required=True)],
        lambda a: (
            f"Create a segment of: {a['description']}. Read {SCHEMA_URI} for the attributes and events "
            "that exist, write the conditions, call create_segment with dry_run true, show the result, and "
            "only create it for real when asked."
        ),
    ),
}


@dataclass(frozen=True)
class Template:
    """A resource template: reading one of its URIs calls ``tool`` with the URI's parts as arguments, so
    the tool's permission, governance and audit entry apply as if the agent had called it."""

    uri_template: str
    name: str
    title: str
    description: str
    tool: str
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.uri_template))
        object.__setattr__(self, "pattern", re.compile(regex))

    def arguments(self, uri: str) -> dict[str, Any] | None:
        """The tool's arguments for ``uri``, or None when the URI is not one of this template's. Raises
        ``ValueError`` for a part of the wrong type."""
        found = self.pattern.fullmatch(uri)
        if found is None:
            return None
        args: dict[str, Any] = {}
        for name, value in found.groupdict().items():
            text = urllib.parse.unquote(value)
            if name.endswith("_id"):
                if not text.isdigit():
                    raise ValueError(f"{name} must be a number, not {text!r}")
                args[name] = int(text)
            else:
                args[name] = text
        return args


TEMPLATES = [
    Template(
        "tidings://people/{id_type}/{identifier}",
        "person",
        "Person profile",
        f"A person's attributes, identifiers and devices; id_type is one of {', '.join(ID_TYPES)} "
        "(needs the read_pii permission).",
        "get_person_attributes",
    ),
    Template(
        "tidings://segments/{segment_id}",
        "segment",
        "Segment",
        "One segment with its conditions, state and member count.",
        "get_segment",
    ),
    Template(
        "tidings://campaigns/{campaign_id}",
        "campaign",
        "Campaign",
        "One campaign: state, version and (on Tidings) its definition.",
        "get_campaign",
    ),
]
# Completions offer at most this many values (the MCP limit).
COMPLETIONS = 100


async def complete(client: ApiClient, argument: str, typed: str) -> list[str]:
    """Values for a prompt or resource-template argument that start with what was typed: campaign and
    segment ids (and, for a prompt's ``campaign``, names), and the identifier types. People are never
    offered: their identifiers are personal data."""
    if argument == "id_type":
        candidates = list(ID_TYPES)
    elif argument in ("campaign", "campaign_id"):
        campaigns = (await client.app("GET", "/v1/campaigns")).get("campaigns", [])
        candidates = [str(c["id"]) for c in campaigns]
        if argument == "campaign":
            candidates += [str(c["name"]) for c in campaigns if c.get("name")]
    elif argument == "segment_id":
        segments = (await client.app("GET", "/v1/segments")).get("segments", [])
        candidates = [str(s["id"]) for s in segments]
    else:
        return []
    lowered = typed.lower()
    return [value for value in dict.fromkeys(candidates) if value.lower().startswith(lowered)]


@dataclass
class Session:
    """What a connection needs: its toolbox, and the policy re-read every few seconds."""

    toolbox: Toolbox
    policy_read_at: float = 0.0


async def current_policy(client: ApiClient, surface: str = "mcp") -> Policy:
    """The key's permissions and the account's AI settings, from the API (Tidings), or from
    ``TIDINGS_MCP_PERMISSIONS`` against Customer.io (which has no such endpoint)."""
    if client.backend != "tidings":
        granted = os.environ.get("TIDINGS_MCP_PERMISSIONS", "read")
        return Policy(frozenset(p.strip() for p in granted.split(",") if p.strip()), "mcp")
    key = (await client.app("GET", "/v1/api_key"))["api_key"]
    ai = (await client.app("GET", "/v1/ai/settings"))["ai_settings"]
    return Policy(
        frozenset(key["permissions"]),
        "assistant" if surface == "assistant" else "mcp",
        ai_enabled=bool(ai["ai_enabled"]),
        mcp_enabled=bool(ai["mcp_enabled"]),
        allow_agent_edit_live_data=bool(ai["allow_agent_edit_live_data"]),
    )


def _tool_view(name: str) -> types.Tool:
    tool = TOOLS[name]
    notes = tool.annotations()
    return types.Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description
        + (" Needs a Tidings server." if tool.tidings_only else "")
        + (" Touches live data." if tool.live is True else ""),
        input_schema=tool.schema,
        annotations=types.ToolAnnotations(
            title=notes["title"],
            read_only_hint=notes["read_only"],
            destructive_hint=notes["destructive"],
            idempotent_hint=notes["idempotent"],
            open_world_hint=notes["open_world"],
        ),
    )


def _result(payload: Any, *, error: bool) -> types.CallToolResult:
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=payload if isinstance(payload, dict) and not error else None,
        is_error=error,
    )


def build(
    toolbox_for: Callable[[ServerRequestContext], Awaitable[Toolbox]], *, per_request: bool = False
) -> Server:
    """An MCP server whose calls run in the toolbox ``toolbox_for`` gives for the request (made for each
    request, and closed after it, when ``per_request``)."""

    async def done(toolbox: Toolbox) -> None:
        if per_request:
            await toolbox.client.aclose()

    async def admitted(ctx: ServerRequestContext, access: str = "read") -> Toolbox:
        """The request's toolbox, if the account's settings and the key let it in at all."""
        try:
            toolbox = await toolbox_for(ctx)
        except ApiError as exc:
            raise MCPError(
                code=types.INVALID_REQUEST, message=f"the Tidings API refused: {exc.detail}"
            ) from None
        refusal = toolbox.policy.refusal(access, live=False, dry_run=False)
        if refusal is not None:
            await done(toolbox)
            raise MCPError(code=types.INVALID_REQUEST, message=f"refused: {refusal}")
        return toolbox

    async def list_tools(
        ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        # Listing is open to any key (a write-only key may still call writes); the MCP toggle is not.
        toolbox = await admitted(ctx, access="list")
        await done(toolbox)
        names = sorted(t.name for t in toolbox.available())
        start = int(params.cursor) if params and params.cursor and params.cursor.isdigit() else 0
        following = str(start + PAGE) if start + PAGE < len(names) else None
        return types.ListToolsResult(
            tools=[_tool_view(n) for n in names[start : start + PAGE]], next_cursor=following
        )

    async def call_tool(
        ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            toolbox = await toolbox_for(ctx)
        except ApiError as exc:  # the key's permissions or the settings could not be read
            return _result(f"the Tidings API refused: {exc.detail}", error=True)
        try:
            outcome = await toolbox.call(params.name, dict(params.arguments or {}))
        except ApiError as exc:  # the audit log could not be written
            return _result(f"the Tidings API failed: {exc.detail}; retry later", error=True)
        finally:
            await done(toolbox)
        if not outcome.ok:
            return _result(outcome.error or "failed", error=True)
        return _result(outcome.data, error=False)

    async def list_resources(
        ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    uri=SCHEMA_URI,
                    name="workspace-schema",
                    title="Workspace schema",
                    description="Attributes and events seen (types, examples), segments and campaigns: read "
                    "it before writing filters.",
                    mime_type="application/json",
                )
            ]
        )

    async def list_resource_templates(
        ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template=t.uri_template,
                    name=t.name,
                    title=t.title,
                    description=t.description,
                    mime_type="application/json",
                )
                for t in TEMPLATES
            ]
        )

    async def read_resource(
        ctx: ServerRequestContext, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        if uri == SCHEMA_URI:
            return await read_schema(ctx)
        for template in TEMPLATES:
            try:
                arguments = template.arguments(uri)
            except ValueError as exc:
                raise MCPError(code=types.INVALID_PARAMS, message=f"{uri}: {exc}") from None
            if arguments is not None:
                return await read_template(ctx, uri, template, arguments)
        known = ", ".join([SCHEMA_URI, *(t.uri_template for t in TEMPLATES)])
        raise MCPError(code=types.INVALID_PARAMS, message=f"unknown resource {uri}; known: {known}")

    async def read_template(
        ctx: ServerRequestContext, uri: str, template: Template, arguments: dict[str, Any]
    ) -> types.ReadResourceResult:
        toolbox = await admitted(ctx)
        try:
            outcome = await toolbox.call(template.tool, arguments)
        finally:
            await done(toolbox)
        if not outcome.ok:
            raise MCPError(code=types.INVALID_PARAMS, message=f"{uri}: {outcome.error}")
        text = json.dumps(outcome.data, default=str)
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=text)]
        )

    async def read_schema(ctx: ServerRequestContext) -> types.ReadResourceResult:
        toolbox = await admitted(ctx)
        started = time.monotonic()
        try:
            schema = await workspace_schema(toolbox.client, personal="read_pii" in toolbox.policy.permissions)
            if toolbox.auditor is not None:
                took = round((time.monotonic() - started) * 1000)
                await toolbox.auditor.record(SCHEMA_URI, {}, Outcome(True), took)
        finally:
            await done(toolbox)
        return types.ReadResourceResult(
            contents=[
                types.TextResourceContents(
                    uri=SCHEMA_URI, mime_type="application/json", text=json.dumps(schema)
                )
            ]
        )

    async def completion(
        ctx: ServerRequestContext, params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        ref = params.ref
        known = (
            ref.name in PROMPTS
            if isinstance(ref, types.PromptReference)
            else any(t.uri_template == ref.uri for t in TEMPLATES)
        )
        values: list[str] = []
        if known:
            toolbox = await admitted(ctx)
            try:
                values = await complete(toolbox.client, params.argument.name, params.argument.value)
            except ApiError:
                values = []  # nothing to offer beats an error while the user types
            finally:
                await done(toolbox)
        return types.CompleteResult(
            completion=types.Completion(
                values=values[:COMPLETIONS], total=len(values), has_more=len(values) > COMPLETIONS
            )
        )

    async def list_prompts(
        ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(
            prompts=[
                types.Prompt(name=name, description=description, arguments=arguments)
                for name, (description, arguments, _) in PROMPTS.items()
            ]
        )

    async def get_prompt(
        ctx: ServerRequestContext, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        await done(await admitted(ctx, access="list"))
        found = PROMPTS.get(params.name)
        if found is None:
            raise MCPError(
                code=types.INVALID_PARAMS, message=f"unknown prompt {params.name}; list the prompts"
            )
        description, arguments, render = found
        given = dict(params.arguments or {})
        missing = [a.name for a in arguments if a.required and not given.get(a.name)]
        if missing:
            raise MCPError(
                code=types.INVALID_PARAMS, message=f"prompt {params.name} needs {', '.join(missing)}"
            )
        text = render(given)
        return types.GetPromptResult(
            description=description,
            messages=[types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))],
        )

    return Server(
        "tidings",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_completion=completion,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


async def workspace_schema(client: ApiClient, *, personal: bool) -> dict[str, Any]:
    """Attributes and events seen (Tidings), segments and campaigns: what an agent needs to write filters.
    Example values are people's data: without ``personal`` (the read_pii permission) they are left out."""
    schema: dict[str, Any] = {}
    if client.backend == "tidings":
        schema.update(await client.app("GET", "/v1/workspace_schema"))
        if not personal:
            for entry in [
                *schema.get("attributes", []),
                *(d for e in schema.get("events", []) for d in e["data"]),
            ]:
                entry.pop("examples", None)
    segments = await client.app("GET", "/v1/segments")
    schema["segments"] = [
        {k: s.get(k) for k in ("id", "name", "type", "description")} for s in segments.get("segments", [])
    ]
    campaigns = await client.app("GET", "/v1/campaigns")
    schema["campaigns"] = [
        {k: c.get(k) for k in ("id", "name", "state", "type")} for c in campaigns.get("campaigns", [])
    ]
    return schema


# -- stdio -----------------------------------------------------------------------------------------------


def default_audit_file() -> Path:
    """Where calls against Customer.io are audited: ``TIDINGS_MCP_AUDIT_FILE``, else
    ``~/.tidings/mcp-audit.jsonl``."""
    configured = os.environ.get("TIDINGS_MCP_AUDIT_FILE")
    return Path(configured).expanduser() if configured else Path.home() / ".tidings" / "mcp-audit.jsonl"


class StdioToolboxes:
    """One connection, one key (from the environment): the toolbox is made once, its policy refreshed.
    Calls are audited in Tidings' audit log, or, against Customer.io (which has no endpoint for it), in
    a local JSON-lines file."""

    def __init__(self, connection: Connection, *, audit_file: Path | None = None) -> None:
        self.client = ApiClient(connection)
        self.auditor: Auditor = (
            ApiAuditor(self.client, "mcp")
            if connection.backend == "tidings"
            else FileAuditor(audit_file or default_audit_file(), self.client, "mcp")
        )
        self.session: Session | None = None

    async def __call__(self, ctx: ServerRequestContext) -> Toolbox:
        now = time.monotonic()
        if self.session is None:
            policy = await current_policy(self.client)
            self.session = Session(Toolbox(TOOLS, self.client, policy, self.auditor), now)
        elif now - self.session.policy_read_at > 5:
            self.session.toolbox.policy = await current_policy(self.client)
            self.session.policy_read_at = now
        return self.session.toolbox


async def run_stdio(connection: Connection) -> None:
    from mcp.server.stdio import stdio_server  # noqa: PLC0415  (takes over the process's stdio)

    toolboxes = StdioToolboxes(connection)
    server = build(toolboxes)
    try:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        await toolboxes.client.aclose()


# -- streamable HTTP -------------------------------------------------------------------------------------


def http_toolboxes(asgi_app: Any) -> Callable[[ServerRequestContext], Awaitable[Toolbox]]:
    """Per request: the caller's App key (already verified by the endpoint's guard) and, for tools that
    change people, the optional X-Tidings-Site-Id and X-Tidings-Track-Key headers; the tools reach the
    server's public APIs in-process, through its own ASGI app."""

    async def toolbox_for(ctx: ServerRequestContext) -> Toolbox:
        request = ctx.request
        if request is None:
            raise MCPError(code=types.INVALID_REQUEST, message="the HTTP endpoint needs an HTTP request")
        headers = request.headers
        token = headers.get("authorization", "").partition(" ")[2].strip()
        connection = Connection.tidings(
            "http://tidings.internal",
            token,
            site_id=headers.get("x-tidings-site-id"),
            track_key=headers.get("x-tidings-track-key"),
        )
        client = ApiClient(connection, transport=httpx.ASGITransport(app=asgi_app))
        policy = await current_policy(client)
        return Toolbox(TOOLS, client, policy, ApiAuditor(client, "mcp"))

    return toolbox_for

"""The governance matrix over the real MCP endpoint (``/mcp``, the official MCP client): every tool, called
with keys of each permission set, for real and as a dry run, with the account's AI settings each way, is
refused by governance — or not — exactly as the rules in tidings.agents.governance's docstring say; and
every call, refused or not, is in the audit log.

The expectations are written here by hand from those rules (each tool classified as a plain read, a read of
personal data, a write or a write to live data, and a table of who may do what); nothing here asks the
policy code what it would decide. Calls the rules allow may still fail at the API (a made-up id answers
404): only whether governance refused them matters, and that the endpoint got as far as asking it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx2
import jsonschema
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.harness import Api, Server
from tests.mail import ok
from tidings.agents.toolset import TOOLS
from tidings.db import Database
from tidings.workspaces import service as workspaces

Json = dict[str, Any]
Kind = Literal["read", "pii", "write", "live"]
Verdict = Literal["refused", "ran", "broken"]

# -- the rules, by hand ------------------------------------------------------------------------------------

# Each tool as the rules see it: "read" (a read), "pii" (a read returning personal data: profiles, search
# results, message recipients), "write", or "live" (a write touching people, campaigns' running state,
# sends or broadcasts). update_segment and update_campaign depend on what they change (see _cases).
KIND: dict[str, Kind] = {
    "list_segments": "read",
    "get_segment": "read",
    "get_segment_membership": "pii",
    "search_customers": "pii",
    "get_person_attributes": "pii",
    "get_person_activities": "pii",
    "get_person_messages": "pii",
    "get_person_journeys": "pii",
    "list_campaigns": "read",
    "get_campaign": "read",
    "get_campaign_metrics": "read",
    "list_campaign_journeys": "pii",
    "list_transactional_messages": "read",
    "get_messages": "pii",
    "get_delivery": "pii",
    "get_broadcast_triggers": "read",
    "get_webhooks": "read",
    "get_integrations": "read",
    "identify_person": "live",
    "track_event": "live",
    "add_person_to_group": "live",
    "create_alias": "live",
    "delete_person": "live",
    "suppress_person": "live",
    "create_segment": "write",
    "create_campaign": "write",
    "activate_campaign": "live",
    "pause_campaign": "live",
    "resume_campaign": "live",
    "create_transactional_message": "write",
    "update_transactional_message": "live",
    "trigger_broadcast": "live",
    "send_transactional_email": "live",
    "llm_preview": "write",
}
DEPENDS_ON_TARGET = {"update_segment", "update_campaign"}

# The permission sets, in the table's column order.
KEYS: dict[str, tuple[str, ...]] = {
    "read": ("read",),
    "read+pii": ("read", "read_pii"),
    "read+write": ("read", "write"),
    "all": ("read", "read_pii", "write", "write_live"),
    "write": ("write",),
}
Y, N = True, False
# (kind, dry_run, allow_agent_edit_live_data) → allowed for each permission set (columns as in KEYS).
# Reads ignore dry_run (they take none); a dry run of any write needs only read; a live write needs
# write plus write_live or the account setting.
EXPECTED: dict[tuple[Kind, bool, bool], tuple[bool, bool, bool, bool, bool]] = {
    #                          read  +pii  +write  all  write only
    ("read", False, False):   (Y,    Y,    Y,      Y,   N),
    ("read", False, True):    (Y,    Y,    Y,      Y,   N),
    ("pii", False, False):    (N,    Y,    N,      Y,   N),
    ("pii", False, True):     (N,    Y,    N,      Y,   N),
    ("write", False, False):  (N,    N,    Y,      Y,   Y),
    ("write", False, True):   (N,    N,    Y,      Y,   Y),
    ("write", True, False):   (Y,    Y,    Y,      Y,   N),
    ("write", True, True):    (Y,    Y,    Y,      Y,   N),
    ("live", False, False):   (N,    N,    N,      Y,   N),
    ("live", False, True):    (N,    N,    Y,      Y,   Y),
    ("live", True, False):    (Y,    Y,    Y,      Y,   N),
    ("live", True, True):     (Y,    Y,    Y,      Y,   N),
}  # fmt: skip


def allowed(kind: Kind, dry_run: bool, allow_live: bool, key: str) -> bool:
    return EXPECTED[kind, dry_run, allow_live][list(KEYS).index(key)]


# -- arguments that pass each tool's schema ----------------------------------------------------------------

NOBODY = "nobody-gov-xyz"
# Values by property name; everything else gets a sample of its type. Ids are made up (404 at the API),
# people are nobody anyone cares about, and nothing names a real template or model.
SAMPLES: Json = {
    "identifier": NOBODY,
    "user_id": NOBODY,
    "previous_id": "nobody-gov-old",
    "anonymous_id": "nobody-gov-anon",
    "email": "nobody-gov@example.invalid",
    "to": "nobody-gov@example.invalid",
    "identifiers": {"id": NOBODY},
    "filter": {"attribute": {"field": "x", "operator": "exists"}},
    "conditions": {"attribute": {"field": "x", "operator": "exists"}},
    "definition": {"name": "gov-made", "trigger": {"type": "event", "event": "gov-never"}, "steps": []},
    "message": {"name": "gov-made"},
    "name": "gov-made",
    "prompt": "x",
    "object_type_id": "1",
    "object_id": "nobody-gov-object",
    "delivery_id": "nobody-gov-delivery",
}
# Optional properties some tools are given so that an allowed call cannot reach anyone: a template and a
# model that do not exist.
EXTRAS: dict[str, Json] = {
    "send_transactional_email": {"transactional_message_id": 999999},
    "llm_preview": {"model": "gov-no-such-model"},
}


def _of_type(spec: Json) -> Any:
    kind = spec.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    return {"string": "x", "integer": 999999, "number": 1, "boolean": False, "array": [], "object": {}}[kind]


def sample_arguments(name: str, **given: Any) -> Json:
    """The tool's required properties (the first alternative of an anyOf) with sample values."""
    schema = TOOLS[name].input_schema
    required = list(schema.get("required", []))
    if "anyOf" in schema:
        required += schema["anyOf"][0].get("required", [])
    properties = schema["properties"]
    arguments = {key: SAMPLES[key] if key in SAMPLES else _of_type(properties[key]) for key in required}
    arguments |= EXTRAS.get(name, {}) | given
    jsonschema.validate(arguments, TOOLS[name].schema)
    return arguments


# -- the workspace, its keys and the things the live checks look at ----------------------------------------


@dataclass(frozen=True)
class Key:
    secret: str
    actor: str


@dataclass(frozen=True)
class Case:
    """One way to call a tool: its arguments and what the rules make of it."""

    tool: str
    arguments: Json
    kind: Kind
    label: str

    def calls(self) -> list[tuple[bool, Json]]:
        """(dry_run, arguments) of each call: writes are made for real and as a dry run."""
        if self.kind in ("read", "pii"):
            return [(False, self.arguments)]
        return [(False, self.arguments), (True, {**self.arguments, "dry_run": True})]


@dataclass
class World:
    api: Api
    keys: dict[str, Key]
    segments: dict[str, int]
    campaigns: dict[str, int]
    definitions: dict[str, Json]
    cases: list[Case] = field(default_factory=list)


def _create_keys(server: Server, workspace_id: int, sets: dict[str, tuple[str, ...]]) -> dict[str, Key]:
    """App keys with each set of permissions (what ``tidings keys create --permissions`` makes)."""
    db = Database(server.database_url)
    try:
        made = db.run(
            lambda s: {
                label: workspaces.create_key(
                    s, str(workspace_id), "app", name=f"gov-{label}", now=int(time.time()),
                    permissions=permissions,
                )
                for label, permissions in sets.items()
            }
        )  # fmt: skip
    finally:
        db.close()
    return {label: Key(key.secret, f"key:{key.info.id}") for label, key in made.items()}


def _campaign(api: Api, definition: Json, *, activate: bool) -> int:
    made = ok(api.app.post("/v1/campaigns", json=definition))["campaign"]
    if activate:
        ok(api.app.post(f"/v1/campaigns/{made['id']}/activate"))
    campaign_id: int = made["id"]
    return campaign_id


def _build_world(server: Server) -> Iterator[World]:
    api = Api(server, server.new_workspace(f"governance-{uuid.uuid4().hex[:8]}"))
    try:
        keys = _create_keys(server, api.creds.workspace_id, {**KEYS, "toggle": KEYS["all"]})
        segments = {
            use: ok(api.app.post("/v1/segments", json={"segment": {"name": f"gov-{use}"}}))["segment"]["id"]
            for use in ("unused", "draft", "running")
        }
        definitions = {
            state: {
                "name": f"gov-{state}",
                "trigger": {"type": "event", "event": "gov-never-sent"},
                "filters": {"segment": {"id": segments[state]}},
                "steps": [{"id": "wait", "type": "delay", "duration": "1d"}],
            }
            for state in ("draft", "running")
        }
        campaigns = {
            state: _campaign(api, definitions[state], activate=state == "running") for state in definitions
        }
        world = World(api, keys, segments, campaigns, definitions)
        world.cases = _cases(world)
        yield world
    finally:
        api.close()


def _cases(world: World) -> list[Case]:
    cases: list[Case] = []
    for name in TOOLS:
        if name in DEPENDS_ON_TARGET:
            continue
        cases.append(Case(name, sample_arguments(name), KIND[name], name))
    # A segment is live data when an active campaign uses it; a campaign, when it is running.
    segments: list[tuple[str, Kind]] = [("unused", "write"), ("running", "live")]
    for use, kind in segments:
        arguments = sample_arguments("update_segment", segment_id=world.segments[use], description="gov")
        cases.append(Case("update_segment", arguments, kind, f"update_segment[{use}]"))
    campaigns: list[tuple[str, Kind]] = [("draft", "write"), ("running", "live")]
    for state, kind in campaigns:
        arguments = sample_arguments(
            "update_campaign", campaign_id=world.campaigns[state], definition=world.definitions[state]
        )
        cases.append(Case("update_campaign", arguments, kind, f"update_campaign[{state}]"))
    return cases


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    yield from _build_world(server)


def test_the_tables_cover_every_tool() -> None:
    assert set(KIND) | DEPENDS_ON_TARGET == set(TOOLS)
    assert not set(KIND) & DEPENDS_ON_TARGET


# -- calling -----------------------------------------------------------------------------------------------


@asynccontextmanager
async def mcp_session(api: Api, key: str) -> AsyncIterator[ClientSession]:
    headers = {
        "Authorization": f"Bearer {key}",
        "X-Tidings-Site-Id": api.creds.site_id,
        "X-Tidings-Track-Key": api.creds.track_api_key,
    }
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        streamable_http_client(f"{api.server.base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def verdict(result: types.CallToolResult) -> tuple[Verdict, str]:
    """refused (by governance), ran (governance let it through; the API may still have failed), or
    broken (the endpoint failed before governance could judge the call)."""
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    if not result.is_error:
        return "ran", ""
    if block.text.startswith("refused:"):
        return "refused", block.text
    if block.text.startswith(("the Tidings API refused:", "the Tidings API failed:")):
        return "broken", block.text
    return "ran", block.text


@dataclass(frozen=True)
class Made:
    case: str
    tool: str
    dry_run: bool
    verdict: Verdict
    text: str


async def _call_all(session: ClientSession, cases: list[Case]) -> list[Made]:
    made: list[Made] = []
    for case in cases:
        for dry_run, arguments in case.calls():
            result = await session.call_tool(case.tool, arguments)
            outcome, text = verdict(result)
            made.append(Made(case.label, case.tool, dry_run, outcome, text))
    return made


def _settings(api: Api, **changes: bool) -> None:
    ok(api.app.put("/v1/ai/settings", json=changes))


def _restore(api: Api) -> None:
    _settings(api, mcp_enabled=True, allow_agent_edit_live_data=False)


def _audit_mark(api: Api) -> int:
    entries = ok(api.app.get("/v1/audit_log", params={"limit": 1}))["entries"]
    return int(entries[0]["id"]) if entries else 0


def _audited_since(api: Api, mark: int, actor: str) -> list[Json]:
    """This workspace's agent.mcp entries by ``actor`` newer than ``mark`` (the log is the account's)."""
    found: list[Json] = []
    start: str | None = None
    while True:
        params: Json = {"action": "agent.mcp", "limit": 1000} | ({"start": start} if start else {})
        page = ok(api.app.get("/v1/audit_log", params=params))
        fresh = [e for e in page["entries"] if e["id"] > mark]
        found += [e for e in fresh if e["workspace_id"] == api.creds.workspace_id and e["actor"] == actor]
        start = page["next"]
        if not start or len(fresh) < len(page["entries"]):
            return found


def _assert_audited(api: Api, mark: int, key: Key, made: list[Made]) -> None:
    entries = _audited_since(api, mark, key.actor)
    logged = Counter(
        (e["target"], bool(e["new"]["dry_run"]), str(e["new"]["error"] or "").startswith("refused:"))
        for e in entries
    )
    calls = Counter((m.tool, m.dry_run, m.verdict == "refused") for m in made)
    assert len(entries) == len(made), f"{len(made)} calls, {len(entries)} audit entries"
    assert logged == calls


def _describe(wrong: list[str]) -> str:
    return f"{len(wrong)} call(s) judged against the rules:\n  " + "\n  ".join(wrong)


def _matrix(world: World, label: str) -> None:
    api, key = world.api, world.keys[label]
    for state, campaign_id in world.campaigns.items():  # what the live checks will see
        assert ok(api.app.get(f"/v1/campaigns/{campaign_id}"))["campaign"]["state"] == state
    mark = _audit_mark(api)
    made: dict[bool, list[Made]] = {}

    async def body() -> None:
        async with mcp_session(api, key.secret) as session:
            for allow_live in (False, True):
                _settings(api, allow_agent_edit_live_data=allow_live)
                made[allow_live] = await _call_all(session, world.cases)

    try:
        anyio.run(body)
    finally:
        _restore(api)
    kinds = {case.label: case.kind for case in world.cases}
    if "read" not in KEYS[label]:
        # A key that may not read cannot learn whether its target is live: such a change counts as live.
        kinds |= {case.label: "live" for case in world.cases if case.tool in DEPENDS_ON_TARGET}
    wrong: list[str] = []
    for allow_live, calls in made.items():
        for m in calls:
            expected = "ran" if allowed(kinds[m.case], m.dry_run, allow_live, label) else "refused"
            if m.verdict != expected:
                wrong.append(
                    f"{m.case} dry_run={m.dry_run} allow_agent_edit_live_data={allow_live}: "
                    f"expected {expected}, got {m.verdict} {m.text[:160]!r}"
                )
    assert not wrong, _describe(wrong)
    _assert_audited(api, mark, key, [m for calls in made.values() for m in calls])


@pytest.mark.parametrize("label", ["read", "read+pii", "read+write", "all"])
def test_the_governance_matrix(world: World, label: str) -> None:
    _matrix(world, label)


def test_the_governance_matrix_for_a_write_only_key(world: World) -> None:
    _matrix(world, "write")


def test_a_segment_only_a_draft_uses_is_not_live_data(world: World) -> None:
    """Live data is "segments active campaigns use": a draft using a segment does not make it live."""
    api, key = world.api, world.keys["read+write"]
    arguments = sample_arguments("update_segment", segment_id=world.segments["draft"], description="gov")
    used = ok(api.app.get(f"/v1/segments/{world.segments['draft']}/used_by"))["used_by"]
    assert [c["id"] for c in used["campaigns"]] == [world.campaigns["draft"]]

    async def body() -> tuple[Verdict, str]:
        async with mcp_session(api, key.secret) as session:
            return verdict(await session.call_tool("update_segment", arguments))

    outcome, text = anyio.run(body)
    assert outcome == "ran", text


def test_mcp_disabled_refuses_every_tool(world: World) -> None:
    api, key = world.api, world.keys["toggle"]
    mark = _audit_mark(api)
    made: list[Made] = []

    async def body() -> None:
        async with mcp_session(api, key.secret) as session:
            made.extend(await _call_all(session, world.cases))

    _settings(api, mcp_enabled=False, allow_agent_edit_live_data=True)
    try:
        anyio.run(body)
    finally:
        _restore(api)
    assert {m.tool for m in made} == set(TOOLS)
    wrong = [
        f"{m.case} dry_run={m.dry_run}: expected refused, got {m.verdict} {m.text[:160]!r}"
        for m in made
        if m.verdict != "refused" or "mcp_enabled is false" not in m.text
    ]
    assert not wrong, _describe(wrong)
    _assert_audited(api, mark, key, made)


# -- the resource: outside the tools, under the same rules -------------------------------------------------

SCHEMA_URI = "tidings://workspace/schema"


async def _read_schema(api: Api, key: str) -> str:
    async with mcp_session(api, key) as session:
        read = await session.read_resource(SCHEMA_URI)
        block = read.contents[0]
        assert isinstance(block, types.TextResourceContents)
        return block.text


async def _try_read_schema(api: Api, key: str) -> tuple[bool, str]:
    """Whether the resource was served, and its text or the error."""
    try:
        return True, await _read_schema(api, key)
    except MCPError as exc:
        return False, exc.message
    except ExceptionGroup as group:  # raised inside the client's task group
        refused = group.subgroup(MCPError)
        if refused is None:
            raise
        leaf: BaseException = refused
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        assert isinstance(leaf, MCPError)
        return False, leaf.message


def test_mcp_disabled_refuses_the_workspace_schema_resource(world: World) -> None:
    api, key = world.api, world.keys["toggle"]
    _settings(api, mcp_enabled=False)
    try:
        served, text = anyio.run(_try_read_schema, api, key.secret)
    finally:
        _restore(api)
    assert not served, f"{SCHEMA_URI} was read with mcp_enabled false: {text[:200]}"
    assert "mcp_enabled" in text


def test_the_workspace_schema_resource_shows_no_personal_data_without_read_pii(world: World) -> None:
    api = world.api
    person = {"phone": "+1 555 010 4242", "first_name": "Zelda-gov"}
    assert api.track.put("/api/v1/customers/gov-schema-person", json=person).status_code == 200
    shown = anyio.run(_read_schema, api, world.keys["all"].secret)
    assert "Zelda-gov" in shown  # a key with read_pii sees the examples
    text = anyio.run(_read_schema, api, world.keys["read"].secret)
    assert json.loads(text)["attributes"], text  # the schema itself is readable with read
    leaked = [value for value in person.values() if value in text]
    assert not leaked, f"{SCHEMA_URI} shows {leaked} to a key without read_pii"

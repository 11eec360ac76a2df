"""The MCP server through the official MCP client, over streamable HTTP (``/mcp`` on a running server,
authenticated by an App API key) and over stdio (``tidings mcp``): every tool is listed with its schema and
annotations and can be called; writes rehearse with dry_run; refusals tell the agent what would allow
the call; every call lands in the audit log with personal data masked; the resource and the prompts."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.harness import TIDINGS, Api, run_cli
from tests.mail import ok
from tidings.agents.toolset import TOOLS

Json = dict[str, Any]
Connect = Callable[..., Any]


@asynccontextmanager
async def http_session(
    api: Api, key: str | None = None, *, track: bool = True
) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key or api.creds.app_api_key}"}
    if track:
        headers |= {"X-Tidings-Site-Id": api.creds.site_id, "X-Tidings-Track-Key": api.creds.track_api_key}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        streamable_http_client(f"{api.server.base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@asynccontextmanager
async def stdio_session(
    api: Api, key: str | None = None, *, track: bool = True
) -> AsyncIterator[ClientSession]:
    env = {
        **os.environ,
        "TIDINGS_MCP_URL": api.server.base_url,
        "TIDINGS_MCP_APP_KEY": key or api.creds.app_api_key,
    }
    if track:
        env |= {"TIDINGS_MCP_SITE_ID": api.creds.site_id, "TIDINGS_MCP_TRACK_KEY": api.creds.track_api_key}
    params = StdioServerParameters(command=str(TIDINGS), args=["mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@pytest.fixture(params=["http", "stdio"])
def connect(request: pytest.FixtureRequest) -> Connect:
    return http_session if request.param == "http" else stdio_session


def run(coroutine: Callable[[], Any]) -> Any:
    return anyio.run(coroutine)


async def call(session: ClientSession, tool: str, **arguments: Any) -> types.CallToolResult:
    return await session.call_tool(tool, arguments)


def data(result: types.CallToolResult) -> Any:
    assert not result.is_error, result.content
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return json.loads(block.text)


def error(result: types.CallToolResult) -> str:
    assert result.is_error, result.content
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def _key(api: Api, *permissions: str) -> str:
    created = json.loads(
        run_cli(
            api.server.database_url, "keys", "create", str(api.creds.workspace_id), "--kind", "app",
            "--permissions", ",".join(permissions), "--json",
        ).stdout
    )  # fmt: skip
    secret: str = created["secret"]
    return secret


def _audit(api: Api) -> list[Json]:
    """This workspace's agent entries, newest first (the log is the account's)."""
    entries = ok(api.app.get("/v1/audit_log", params={"action": "agent.mcp", "limit": 100}))["entries"]
    return [e for e in entries if e["workspace_id"] == api.creds.workspace_id]


def test_every_tool_is_listed_with_schema_and_annotations(api: Api, connect: Connect) -> None:
    async def body() -> None:
        async with connect(api) as session:
            tools: list[types.Tool] = []
            cursor: str | None = None
            while True:
                page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
                tools += page.tools
                cursor = page.next_cursor
                if cursor is None:
                    break
            listed = {t.name: t for t in tools}
            assert set(listed) == set(TOOLS)
            for name, tool in TOOLS.items():
                shown = listed[name]
                assert shown.input_schema["type"] == "object"
                assert shown.annotations is not None
                assert shown.annotations.read_only_hint == (tool.access != "write")
                assert shown.annotations.destructive_hint == tool.destructive
                assert shown.description
                if tool.access == "write":
                    assert "dry_run" in shown.input_schema["properties"]
            assert listed["suppress_person"].annotations.destructive_hint is True  # type: ignore[union-attr]
            assert listed["send_transactional_email"].annotations.open_world_hint is True  # type: ignore[union-attr]

    run(body)


def test_reads_writes_and_dry_runs_over_the_public_apis(api: Api, connect: Connect) -> None:
    person = f"mcp-{uuid.uuid4().hex[:8]}"

    async def body() -> None:
        async with connect(api) as session:
            made = data(await call(session, "identify_person", user_id=person, traits={"plan": "pro"},
                                   email=f"{person}@example.com"))  # fmt: skip
            assert made["identified"]["identifiers"] == {"id": person}
            profile = data(await call(session, "get_person_attributes", identifier=person))
            assert profile["customer"]["attributes"]["plan"] == "pro"
            data(await call(session, "track_event", identifier=person, name="upgraded", data={"to": "max"}))
            found = data(await call(session, "search_customers", filter={
                "and": [{"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}]}))  # fmt: skip
            assert person in [i["id"] for i in found["identifiers"]]

            rehearsed = data(await call(session, "create_segment", name="Pro", dry_run=True, conditions={
                "attribute": {"field": "plan", "operator": "eq", "value": "pro"}}))  # fmt: skip
            assert rehearsed["dry_run"] is True
            assert rehearsed["would"]["segment"]["name"] == "Pro"
            assert data(await call(session, "list_segments"))["items"] == []
            segment = data(await call(session, "create_segment", name="Pro", conditions={
                "attribute": {"field": "plan", "operator": "eq", "value": "pro"}}))["segment"]  # fmt: skip
            listed = data(await call(session, "list_segments", limit=1))
            assert [s["id"] for s in listed["items"]] == [segment["id"]]
            assert listed["next"] is None

            wrong = error(await call(session, "get_segment", segment_id="seven"))
            assert "invalid arguments at segment_id" in wrong
            missing = error(await call(session, "get_segment", segment_id=999999))
            assert "list_* and search tools return valid ids" in missing

    run(body)
    assert ok(api.attributes(person))["customer"]["attributes"]["plan"] == "pro"


def test_permissions_and_live_data_are_enforced_and_audited(api: Api, connect: Connect) -> None:
    reader = _key(api, "read")
    writer = _key(api, "read", "write")
    person = f"live-{uuid.uuid4().hex[:8]}"
    assert (
        api.track.put(f"/api/v1/customers/{person}", json={"email": f"{person}@example.com"}).status_code
        == 200
    )

    async def body() -> None:
        async with connect(api, reader) as session:
            refused = error(await call(session, "create_segment", name="Nope"))
            assert "lacks the write permission" in refused
            assert "dry_run" in refused
            rehearsal = data(await call(session, "create_segment", name="Maybe", dry_run=True))
            assert rehearsal["dry_run"] is True
            pii = error(await call(session, "get_person_attributes", identifier=person))
            assert "read_pii" in pii
        async with connect(api, writer) as session:
            assert data(await call(session, "create_segment", name="Allowed"))["segment"]["name"] == "Allowed"
            live = error(await call(session, "suppress_person", identifier=person))
            assert "write_live" in live
            assert "allow_agent_edit_live_data" in live
            shown = data(await call(session, "suppress_person", identifier=person, dry_run=True))
            assert shown["live"] is True

    run(body)
    assert api.attributes(person).status_code == 200  # still there
    entries = _audit(api)
    suppress = [e for e in entries if e["target"] == "suppress_person"]
    assert [e["new"]["ok"] for e in suppress] == [True, False]  # newest first: the dry run, the refusal
    assert suppress[1]["new"]["error"].startswith("refused")
    assert all(e["new"]["arguments"]["identifier"] == person for e in suppress)
    made = next(e for e in entries if e["target"] == "create_segment" and e["new"]["ok"])
    assert made["new"]["dry_run"] is False


def test_personal_data_is_masked_in_the_audit_log(api: Api) -> None:
    person = f"mask-{uuid.uuid4().hex[:8]}"

    async def body() -> None:
        async with http_session(api) as session:
            data(await call(session, "identify_person", user_id=person, email="secret.person@example.com",
                            traits={"phone": "+1 555 010 9999", "plan": "pro"}))  # fmt: skip

    run(body)
    entry = _audit(api)[0]
    text = json.dumps(entry)
    assert "secret.person@example.com" not in text
    assert "555 010" not in text
    assert entry["new"]["arguments"]["traits"] == {"phone": "***", "plan": "***"}
    assert entry["actor"].startswith("key:")


def test_the_mcp_toggle_refuses_every_call(api: Api, connect: Connect) -> None:
    ok(api.app.put("/v1/ai/settings", json={"mcp_enabled": False}))
    try:

        async def body() -> None:
            async with connect(api) as session:
                refused = error(await call(session, "list_segments"))
                assert "mcp_enabled is false" in refused

        run(body)
    finally:
        ok(api.app.put("/v1/ai/settings", json={"mcp_enabled": True}))


def test_tools_needing_track_credentials_say_how_to_get_them(api: Api, connect: Connect) -> None:
    async def body() -> None:
        async with connect(api, track=False) as session:
            missing = error(await call(session, "identify_person", user_id="x"))
            assert "Track API credentials" in missing

    run(body)


def test_the_workspace_schema_resource_and_the_prompts(api: Api, connect: Connect) -> None:
    person = f"schema-{uuid.uuid4().hex[:8]}"
    assert api.track.put(f"/api/v1/customers/{person}", json={"plan": "gold", "seats": 4}).status_code == 200
    assert (
        api.track.post(
            f"/api/v1/customers/{person}/events", json={"name": "paid", "data": {"amount": 9}}
        ).status_code
        == 200
    )

    async def body() -> None:
        async with connect(api) as session:
            resources = await session.list_resources()
            assert [str(r.uri) for r in resources.resources] == ["tidings://workspace/schema"]
            read = await session.read_resource("tidings://workspace/schema")
            block = read.contents[0]
            assert isinstance(block, types.TextResourceContents)
            schema = json.loads(block.text)
            attributes = {a["name"]: a for a in schema["attributes"]}
            assert attributes["plan"]["types"] == ["string"]
            assert "gold" in attributes["plan"]["examples"]
            assert attributes["seats"]["types"] == ["number"]
            paid = next(e for e in schema["events"] if e["name"] == "paid")
            assert paid["data"][0]["name"] == "amount"
            prompts = await session.list_prompts()
            assert {p.name for p in prompts.prompts} == {"why_no_message", "campaign_report", "build_segment"}
            prompt = await session.get_prompt("why_no_message", {"person": person, "campaign": "7"})
            content = prompt.messages[0].content
            assert isinstance(content, types.TextContent)
            assert person in content.text
            assert "get_person_journeys" in content.text

    run(body)


def test_resource_templates_read_through_the_tools_governance(api: Api, connect: Connect) -> None:
    person = f"tmpl-{uuid.uuid4().hex[:8]}"
    email = f"{person}@example.com"
    assert (
        api.track.put(f"/api/v1/customers/{person}", json={"email": email, "plan": "gold"}).status_code == 200
    )
    segment = ok(api.app.post("/v1/segments", json={"segment": {"name": f"Gold {person}"}}))["segment"]
    reader = _key(api, "read")

    async def body() -> None:
        async with connect(api) as session:
            listed = await session.list_resource_templates()
            assert {t.uri_template for t in listed.resource_templates} == {
                "tidings://people/{id_type}/{identifier}",
                "tidings://segments/{segment_id}",
                "tidings://campaigns/{campaign_id}",
            }
            read = await session.read_resource(f"tidings://people/email/{email.replace('@', '%40')}")
            block = read.contents[0]
            assert isinstance(block, types.TextResourceContents)
            profile = json.loads(block.text)
            assert profile["customer"]["attributes"]["plan"] == "gold"
            assert profile["customer"]["id"] == person
            found = await session.read_resource(f"tidings://segments/{segment['id']}")
            block = found.contents[0]
            assert isinstance(block, types.TextResourceContents)
            assert json.loads(block.text)["segment"]["name"] == f"Gold {person}"
            with pytest.raises(MCPError, match="segment_id must be a number"):
                await session.read_resource("tidings://segments/gold")
            with pytest.raises(MCPError, match="check the id"):
                await session.read_resource("tidings://campaigns/987654")
            with pytest.raises(MCPError, match="unknown resource"):
                await session.read_resource("tidings://invoices/1")
        # A key without read_pii may read a segment but not a person.
        async with connect(api, reader) as session:
            with pytest.raises(MCPError, match="read_pii"):
                await session.read_resource(f"tidings://people/id/{person}")
            await session.read_resource(f"tidings://segments/{segment['id']}")

    run(body)
    entries = _audit(api)
    reads = [e for e in entries if e["target"] == "get_person_attributes"]
    assert [e["new"]["ok"] for e in reads][:2] == [False, True]
    assert reads[1]["new"]["arguments"] == {"id_type": "email", "identifier": "***@***"}


def test_completions_offer_ids_names_and_identifier_types(api: Api, connect: Connect) -> None:
    tag = uuid.uuid4().hex[:6]
    definition = {
        "name": f"Welcome {tag}",
        "trigger": {"type": "event", "event": "never-sent"},
        "steps": [{"id": "wait", "type": "delay", "duration": "1d"}],
    }
    made = ok(api.app.post("/v1/campaigns", json=definition))["campaign"]
    segment = ok(api.app.post("/v1/segments", json={"segment": {"name": f"S {tag}"}}))["segment"]

    async def body() -> None:
        async with connect(api) as session:
            initialized = session.initialize_result
            assert initialized is not None
            assert initialized.capabilities.completions is not None
            prompt = types.PromptReference(type="ref/prompt", name="campaign_report")
            names = await session.complete(prompt, {"name": "campaign", "value": f"welcome {tag}"[:10]})
            assert f"Welcome {tag}" in names.completion.values
            ids = await session.complete(prompt, {"name": "campaign", "value": str(made["id"])})
            assert str(made["id"]) in ids.completion.values
            people = await session.complete(
                types.PromptReference(type="ref/prompt", name="why_no_message"),
                {"name": "person", "value": ""},
            )
            assert people.completion.values == []
            segments = types.ResourceTemplateReference(
                type="ref/resource", uri="tidings://segments/{segment_id}"
            )
            offered = await session.complete(segments, {"name": "segment_id", "value": ""})
            assert str(segment["id"]) in offered.completion.values
            person = types.ResourceTemplateReference(
                type="ref/resource", uri="tidings://people/{id_type}/{identifier}"
            )
            kinds = await session.complete(person, {"name": "id_type", "value": "e"})
            assert kinds.completion.values == ["email"]

    run(body)


def test_the_http_endpoint_refuses_missing_and_revoked_keys(api: Api) -> None:
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    anonymous = httpx.post(f"{api.server.base_url}/mcp", json=request, headers=headers)
    assert anonymous.status_code == 401
    wrong = httpx.post(
        f"{api.server.base_url}/mcp", json=request, headers={**headers, "Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["errors"][0]["status"] == "401"


def test_every_tool_can_be_called(api: Api, connect: Connect) -> None:
    """Each tool answers over the transport: reads with sample arguments, writes as dry runs (their
    answers are the rehearsed change, or an API error the agent can act on — never a protocol error)."""
    from tests.agents.test_governance import sample_arguments  # noqa: PLC0415  (shared sample values)

    async def body() -> None:
        async with connect(api) as session:
            for name, tool in TOOLS.items():
                arguments = sample_arguments(name)
                if tool.access == "write":
                    arguments["dry_run"] = True
                result = await call(session, name, **arguments)
                block = result.content[0]
                assert isinstance(block, types.TextContent)
                if result.is_error:
                    assert not block.text.startswith("refused"), (name, block.text)
                    assert "—" in block.text or "needs" in block.text, (name, block.text)
                elif tool.access == "write":
                    assert json.loads(block.text)["dry_run"] is True, name

    run(body)

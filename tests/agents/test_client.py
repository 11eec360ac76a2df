"""The agents' API client in-process (no server): where a connection from the environment points, that a dry
run against Customer.io shows the request it would make and makes none, and how the audit log masks
personal data in a call's arguments."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client, types

from tests.harness import TIDINGS
from tidings.agents.client import ApiClient, Connection
from tidings.agents.governance import Policy
from tidings.agents.mcp_server import StdioToolboxes, default_audit_file
from tidings.agents.tools import ApiAuditor, FileAuditor, Toolbox, mask
from tidings.agents.toolset import TOOLS

Json = dict[str, Any]
KEYS = {"TIDINGS_MCP_APP_KEY": "app-key", "TIDINGS_MCP_SITE_ID": "site", "TIDINGS_MCP_TRACK_KEY": "track-key"}

# -- connections from the environment --------------------------------------------------------------------


def test_tidings_is_the_default_backend() -> None:
    connection = Connection.from_environment({"TIDINGS_MCP_URL": "http://tidings.example:9000/", **KEYS})
    assert connection.backend == "tidings"
    assert connection.app_url == connection.track_url == "http://tidings.example:9000"
    assert (connection.app_key, connection.site_id, connection.track_key) == ("app-key", "site", "track-key")
    default = Connection.from_environment({"TIDINGS_MCP_BACKEND": "tidings"})
    assert default.app_url == "http://127.0.0.1:8080"
    assert (default.app_key, default.site_id, default.track_key) == ("", None, None)


@pytest.mark.parametrize(
    ("backend", "app_url", "track_url"),
    [
        ("customerio-us", "https://api.customer.io", "https://track.customer.io"),
        ("customerio", "https://api.customer.io", "https://track.customer.io"),
        ("customerio-eu", "https://api-eu.customer.io", "https://track-eu.customer.io"),
    ],
)
def test_customerio_regions(backend: str, app_url: str, track_url: str) -> None:
    connection = Connection.from_environment(
        {"TIDINGS_MCP_BACKEND": backend, "TIDINGS_MCP_URL": "http://ignored.example", **KEYS}
    )
    assert connection.backend == "customerio"
    assert (connection.app_url, connection.track_url) == (app_url, track_url)
    assert (connection.app_key, connection.site_id, connection.track_key) == ("app-key", "site", "track-key")


def test_empty_track_credentials_count_as_none() -> None:
    connection = Connection.from_environment(
        {"TIDINGS_MCP_BACKEND": "customerio-eu", "TIDINGS_MCP_SITE_ID": "", "TIDINGS_MCP_TRACK_KEY": ""}
    )
    assert (connection.site_id, connection.track_key) == (None, None)
    assert not ApiClient(connection).has_track


@pytest.mark.parametrize(
    "backend",
    [
        "mailchimp",
        "customerio-au",
        "Tidings",
        "",
        "customerio_eu",
    ],
)
def test_an_unknown_backend_is_refused(backend: str) -> None:
    with pytest.raises(ValueError, match="tidings, customerio-us or customerio-eu"):
        Connection.from_environment({"TIDINGS_MCP_BACKEND": backend})


# -- dry runs against Customer.io ---------------------------------------------------------------------------


class Remote:
    """A stand-in for Customer.io's hosted APIs: records requests, and fails the test when it is called
    although it should not be."""

    def __init__(self, *, allow: bool) -> None:
        self.allow = allow
        self.requests: list[httpx.Request] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.allow:
            pytest.fail(f"a dry run reached Customer.io: {request.method} {request.url}")
        return httpx.Response(200, json={"segments": [{"id": 1, "name": "Remote"}]})


def _customerio(region: str, remote: Remote, *, track: bool = True) -> ApiClient:
    credentials = {"site_id": "site", "track_key": "track-key"} if track else {}
    return ApiClient(Connection.customerio(region, "app-key", **credentials), transport=remote.transport())


def test_a_dry_run_against_customerio_returns_the_request_and_sends_nothing() -> None:
    remote = Remote(allow=False)
    client = _customerio("us", remote)

    async def body() -> tuple[Any, Any]:
        try:
            app = await client.app(
                "PUT", "/v1/segments/7", params={"x": 1}, json={"segment": {"name": "N"}}, dry_run=True
            )
            track = await client.track("DELETE", "/api/v1/customers/nobody", dry_run=True)
            return app, track
        finally:
            await client.aclose()

    app, track = anyio.run(body)
    assert app == {
        "method": "PUT",
        "url": "https://api.customer.io/v1/segments/7",
        "params": {"x": 1},
        "body": {"segment": {"name": "N"}},
    }
    assert track == {
        "method": "DELETE",
        "url": "https://track.customer.io/api/v1/customers/nobody",
        "params": {},
        "body": None,
    }
    assert remote.requests == []


def test_a_dry_run_through_the_toolbox_needs_only_read_and_shows_the_request() -> None:
    remote = Remote(allow=False)
    client = _customerio("eu", remote)
    toolbox = Toolbox(TOOLS, client, Policy(frozenset({"read"}), "mcp"))
    conditions = {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}

    async def body() -> list[Any]:
        try:
            return [
                await toolbox.call(
                    "create_segment", {"name": "Pro", "conditions": conditions, "dry_run": True}
                ),
                await toolbox.call("suppress_person", {"identifier": "nobody", "dry_run": True}),
                await toolbox.call("create_segment", {"name": "Pro"}),
            ]
        finally:
            await client.aclose()

    segment, suppress, real = anyio.run(body)
    assert segment.ok, segment.error
    assert segment.data == {
        "dry_run": True,
        "live": False,
        "would": {
            "method": "POST",
            "url": "https://api-eu.customer.io/v1/segments",
            "params": {},
            "body": {"segment": {"name": "Pro", "conditions": conditions}},
        },
    }
    assert suppress.ok, suppress.error
    assert suppress.data == {"dry_run": True, "live": True, "would": {"suppressed": "nobody"}}
    assert not real.ok
    assert real.error.startswith("refused: this API key lacks the write permission")
    assert remote.requests == []
    assert [c["dry_run"] for c in toolbox.calls] == [True, True, False]


def test_tidings_only_tools_and_missing_track_credentials_are_explained_without_a_request() -> None:
    remote = Remote(allow=False)
    client = _customerio("us", remote, track=False)
    toolbox = Toolbox(TOOLS, client, Policy(frozenset({"read", "write", "write_live"}), "mcp"))
    assert "update_segment" not in {t.name for t in toolbox.available()}
    assert "create_segment" in {t.name for t in toolbox.available()}

    async def body() -> list[Any]:
        try:
            return [
                await toolbox.call("update_segment", {"segment_id": 7, "name": "x", "dry_run": True}),
                await toolbox.call("identify_person", {"user_id": "nobody", "dry_run": True}),
            ]
        finally:
            await client.aclose()

    tidings_only, track = anyio.run(body)
    assert "needs a Tidings server" in tidings_only.error
    assert "Track API credentials" in track.error
    assert remote.requests == []


def test_a_real_call_reaches_the_region_with_the_app_key() -> None:
    """The control for the dry-run tests: the stand-in does see requests that are made."""
    remote = Remote(allow=True)
    client = _customerio("eu", remote)

    async def body() -> Any:
        try:
            return await client.app("GET", "/v1/segments", params={"limit": 5, "start": None})
        finally:
            await client.aclose()

    assert anyio.run(body) == {"segments": [{"id": 1, "name": "Remote"}]}
    [request] = remote.requests
    assert str(request.url) == "https://api-eu.customer.io/v1/segments?limit=5"
    assert request.headers["authorization"] == "Bearer app-key"


# -- the audit file (Customer.io has no audit endpoint) ----------------------------------------------------


def test_calls_against_customerio_are_audited_in_a_local_file(tmp_path: Path) -> None:
    remote = Remote(allow=True)
    client = _customerio("us", remote)
    audit = tmp_path / "audit" / "mcp.jsonl"
    auditor = FileAuditor(audit, client, "mcp")
    toolbox = Toolbox(TOOLS, client, Policy(frozenset({"read"}), "mcp"), auditor)

    async def body() -> None:
        try:
            await toolbox.call("list_segments", {"limit": 5})
            await toolbox.call("suppress_person", {"identifier": "ann@example.com", "dry_run": True})
            await toolbox.call("delete_person", {"identifier": "ann@example.com"})
        finally:
            await client.aclose()

    anyio.run(body)
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["target"], e["new"]["ok"], e["new"]["dry_run"]) for e in entries] == [
        ("list_segments", True, False),
        ("suppress_person", True, True),
        ("delete_person", False, False),
    ]
    assert all(e["action"] == "agent.mcp.tool_call" for e in entries)
    assert {e["backend"] for e in entries} == {"https://api.customer.io"}
    assert {e["key"] for e in entries} == {"…-key"}
    assert entries[1]["new"]["arguments"] == {"identifier": "***@***"}
    assert "write permission" in entries[2]["new"]["error"]
    assert "app-key" not in audit.read_text()
    assert len(remote.requests) == 1  # only the read reached "Customer.io"


def test_the_stdio_server_audits_customerio_calls_to_the_configured_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = tmp_path / "cio-audit.jsonl"
    monkeypatch.setenv("TIDINGS_MCP_AUDIT_FILE", str(audit))
    assert default_audit_file() == audit
    customerio = StdioToolboxes(Connection.customerio("eu", "app-key"))
    assert isinstance(customerio.auditor, FileAuditor)
    assert customerio.auditor.path == audit
    tidings = StdioToolboxes(Connection.tidings("http://127.0.0.1:1", "app-key"))
    assert isinstance(tidings.auditor, ApiAuditor)
    monkeypatch.delenv("TIDINGS_MCP_AUDIT_FILE")
    assert default_audit_file() == Path.home() / ".tidings" / "mcp-audit.jsonl"

    # End to end: `tidings mcp` against Customer.io, driven by the official MCP client; a dry run needs
    # no network, so the only effect is the audit line.
    env = {
        **os.environ,
        "TIDINGS_MCP_BACKEND": "customerio-eu",
        "TIDINGS_MCP_APP_KEY": "cio-app-key-1234",
        "TIDINGS_MCP_AUDIT_FILE": str(audit),
    }
    params = StdioServerParameters(command=str(TIDINGS), args=["mcp"], env=env)

    async def body() -> types.CallToolResult:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool("create_segment", {"name": "Pro", "dry_run": True})

    result = anyio.run(body)
    assert not result.is_error, result.content
    [entry] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert entry["target"] == "create_segment"
    assert entry["backend"] == "https://api-eu.customer.io"
    assert entry["key"] == "…1234"
    assert entry["new"]["ok"] is True
    assert entry["new"]["dry_run"] is True


# -- masking -----------------------------------------------------------------------------------------------


def test_emails_and_phone_numbers_are_masked_anywhere() -> None:
    text = "write to jane.doe+news@example.co.uk or call +1 (555) 010-9999 today"
    assert mask(text) == "write to ***@*** or call *** today"
    masked = mask(
        {
            "name": "Call +44 20 7946 0958",
            "description": "owner: bob@example.org",
            "nested": {"deep": ["x", "ann@example.com", {"note": "+61 2 9876 5432"}]},
            "segment_id": 7,
            "dry_run": True,
            "plain": "no personal data here",
        }
    )
    assert masked == {
        "name": "Call ***",
        "description": "owner: ***@***",
        "nested": {"deep": ["x", "***@***", {"note": "***"}]},
        "segment_id": 7,
        "dry_run": True,
        "plain": "no personal data here",
    }


@pytest.mark.parametrize("container", ["attributes", "traits", "data", "message_data", "identifiers"])
def test_values_inside_personal_containers_are_masked(container: str) -> None:
    arguments = {
        "identifier": "person-7",
        container: {
            "plan": "pro",
            "seats": 4,
            "nested": {"city": "Wellington", "tags": ["a", "b"]},
            "vip": True,
            "missing": None,
        },
    }
    assert mask(arguments) == {
        "identifier": "person-7",
        container: {
            "plan": "***",
            "seats": "***",
            "nested": {"city": "***", "tags": ["***", "***"]},
            "vip": True,
            "missing": None,
        },
    }


def test_personal_fields_are_masked_whatever_their_values() -> None:
    masked = mask(
        {
            "to": "jane@example.com",
            "email": "jane@example.com",
            "phone": "5550109999",
            "filter": {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}},
            "per_user_data": [{"id": "p1", "data": {"coupon": "X1"}}],
        }
    )
    assert masked == {
        "to": "***",
        "email": "***",
        "phone": "***",
        "filter": {"attribute": {"field": "***", "operator": "***", "value": "***"}},
        "per_user_data": [{"id": "p1", "data": {"coupon": "***"}}],
    }

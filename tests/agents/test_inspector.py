"""The MCP Inspector's CLI (npm ``@modelcontextprotocol/inspector``, pinned in tests/node/package-lock.json)
against Tidings' MCP server, over stdio (``tidings mcp``, configured by environment) and over streamable
HTTP (``/mcp`` with the App key as a Bearer header): it lists the tools and calls them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import TIDINGS, Api
from tests.mail import ok

Json = dict[str, Any]
NODE_DIR = Path(__file__).resolve().parents[1] / "node"
INSPECTOR = NODE_DIR / "node_modules" / ".bin" / "mcp-inspector"
# Exit codes of the Inspector's CLI.
TOOL_IS_ERROR = 5
AUTH_REQUIRED = 3


def _require_inspector() -> None:
    if shutil.which("node") is None:
        missing = "node is not on PATH"
    elif not INSPECTOR.exists():
        missing = f"the MCP Inspector is not installed: run `npm ci` in {NODE_DIR}"
    else:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing} and CI=true: the MCP Inspector tests may not be skipped")
    pytest.skip(missing)


def inspect(target: list[str], *method: str, home: Path) -> tuple[int, Json]:
    """Run the Inspector's CLI (JSON output) with a home of its own (it keeps a catalog in
    ~/.mcp-inspector); its exit code and the JSON it printed (the result, or the error envelope)."""
    _require_inspector()
    completed = subprocess.run(
        [str(INSPECTOR), "--cli", "--format", "json", "-q", *target, *method],
        cwd=NODE_DIR,
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    printed = completed.stdout.strip() or completed.stderr.strip()
    try:
        payload: Json = json.loads(printed)
    except ValueError:
        pytest.fail(f"the Inspector exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed.returncode, payload


def stdio(api: Api) -> list[str]:
    """``tidings mcp`` as the Inspector's stdio target; its environment goes through -e (the Inspector
    passes the server only a few variables of its own)."""
    env = {
        "TIDINGS_MCP_URL": api.server.base_url,
        "TIDINGS_MCP_APP_KEY": api.creds.app_api_key,
        "TIDINGS_MCP_SITE_ID": api.creds.site_id,
        "TIDINGS_MCP_TRACK_KEY": api.creds.track_api_key,
    }
    return [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")] + [str(TIDINGS), "mcp"]


def http(api: Api, key: str | None = None) -> list[str]:
    return [
        f"{api.server.base_url}/mcp",
        "--header", f"Authorization: Bearer {key or api.creds.app_api_key}",
        "--header", f"X-Tidings-Site-Id: {api.creds.site_id}",
        "--header", f"X-Tidings-Track-Key: {api.creds.track_api_key}",
        "--stored-auth-only",  # never start an interactive OAuth login
    ]  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Path:
    _require_inspector()
    return tmp_path / "home"


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_the_inspector_lists_the_tools_and_calls_them(api: Api, home: Path, transport: str) -> None:
    target = stdio(api) if transport == "stdio" else http(api)
    segment = ok(api.app.post("/v1/segments", json={"segment": {"name": f"Inspected {transport}"}}))

    code, listed = inspect(target, "--method", "tools/list", home=home)
    assert code == 0, listed
    tools = {tool["name"]: tool for tool in listed["result"]["tools"]}
    assert {"list_segments", "suppress_person", "get_person_journeys"} <= set(tools)
    assert tools["suppress_person"]["annotations"]["destructiveHint"] is True
    assert tools["list_segments"]["annotations"]["readOnlyHint"] is True
    assert "dry_run" in tools["suppress_person"]["inputSchema"]["properties"]

    code, called = inspect(
        target, "--method", "tools/call", "--tool-name", "list_segments", "--tool-arg", "limit=10", home=home
    )
    assert code == 0, called
    result = called["result"]
    assert result["isError"] is False
    page = result["structuredContent"]
    assert set(page) == {"items", "next"}
    assert [s["id"] for s in page["items"]] == [segment["segment"]["id"]]
    assert page["next"] is None
    assert json.loads(result["content"][0]["text"]) == page

    # A tool error comes back as a result the agent can read (and the Inspector's exit code says so).
    code, failed = inspect(
        target, "--method", "tools/call", "--tool-name", "get_segment",
        "--tool-args-json", '{"segment_id": 999999}', home=home,
    )  # fmt: skip
    assert code == TOOL_IS_ERROR, failed
    assert failed["result"]["isError"] is True
    assert "list_* and search tools return valid ids" in failed["result"]["content"][0]["text"]


def test_the_inspector_is_refused_without_a_valid_key(home: Path, api: Api) -> None:
    code, refused = inspect(http(api, "not-a-key"), "--method", "tools/list", home=home)
    assert code == AUTH_REQUIRED, refused
    assert refused["error"]["code"] == "auth_required"

"""The CLI contract: serve's first start, workspaces and keys, as other tools rely on them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.harness import Server, run_cli, start_server, stop_server


def test_first_start_creates_a_default_workspace_and_prints_working_credentials(tmp_path: Path) -> None:
    running = start_server(f"sqlite:///{tmp_path / 'fresh.db'}", "sqlite", tmp_path)
    try:
        log = running.log()
        assert f"Tidings on {running.base_url}" in log
        assert f"{running.base_url}/docs" in log
        site_id = re.search(r"site_id=(\w+)", log)
        api_key = re.search(r"api_key=(trk_\w+)", log)
        app_key = re.search(r"Bearer (app_\w+)", log)
        assert site_id
        assert api_key
        assert app_key
        identify = httpx.put(
            f"{running.base_url}/api/v1/customers/first",
            json={"a": 1},
            auth=(site_id.group(1), api_key.group(1)),
        )
        assert identify.status_code == 200
        read = httpx.get(
            f"{running.base_url}/v1/customers/first/attributes",
            headers={"Authorization": f"Bearer {app_key.group(1)}"},
        )
        assert read.json()["customer"]["attributes"]["a"] == "1"
    finally:
        stop_server(running)
    restarted = start_server(running.database_url, "sqlite", tmp_path)
    try:
        assert "Workspace Default" not in restarted.log()
    finally:
        stop_server(restarted)


def test_workspace_create_json_and_list(server: Server) -> None:
    created = json.loads(run_cli(server.database_url, "workspace", "create", "Acme", "--json").stdout)
    assert set(created) == {
        "workspace_id",
        "site_id",
        "track_api_key",
        "app_api_key",
        "pipelines_write_key",
        "webhook_signing_key",
    }
    response = httpx.put(
        f"{server.base_url}/api/v1/customers/cli",
        json={},
        auth=(created["site_id"], created["track_api_key"]),
    )
    assert response.status_code == 200
    listed = json.loads(run_cli(server.database_url, "workspace", "list", "--json").stdout)
    mine = next(w for w in listed if w["id"] == created["workspace_id"])
    assert mine["name"] == "Acme"
    assert mine["people"] == 1
    workspaces = httpx.get(
        f"{server.base_url}/v1/workspaces", headers={"Authorization": f"Bearer {created['app_api_key']}"}
    ).json()["workspaces"]
    assert [(w["id"], w["people"]) for w in workspaces] == [(created["workspace_id"], 1)]


def test_keys_create_list_rotate_and_revoke(server: Server) -> None:
    workspace = json.loads(run_cli(server.database_url, "workspace", "create", "Keys", "--json").stdout)
    ref = str(workspace["workspace_id"])
    extra = json.loads(
        run_cli(server.database_url, "keys", "create", ref, "--kind", "app", "--name", "ci", "--json").stdout
    )
    assert extra["secret"].startswith("app_")
    listed = json.loads(run_cli(server.database_url, "keys", "list", ref, "--json").stdout)
    assert {k["kind"] for k in listed} == {"track", "app", "pipelines", "webhook_signing"}
    assert all("secret" not in k for k in listed)

    def workspaces_status(key: str) -> int:
        return httpx.get(
            f"{server.base_url}/v1/workspaces", headers={"Authorization": f"Bearer {key}"}
        ).status_code

    assert workspaces_status(extra["secret"]) == 200
    rotated = json.loads(run_cli(server.database_url, "keys", "rotate", str(extra["id"]), "--json").stdout)
    assert workspaces_status(extra["secret"]) == 401
    assert workspaces_status(rotated["secret"]) == 200
    run_cli(server.database_url, "keys", "revoke", str(rotated["id"]))
    assert workspaces_status(rotated["secret"]) == 401
    assert workspaces_status(workspace["app_api_key"]) == 200
    bad_kind = run_cli(server.database_url, "keys", "create", ref, "--kind", "root", check=False)
    assert bad_kind.returncode == 2
    assert "key kind must be one of" in bad_kind.stderr
    missing = run_cli(server.database_url, "keys", "list", "no-such-workspace", check=False)
    assert missing.returncode == 2

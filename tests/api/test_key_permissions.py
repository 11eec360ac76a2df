"""App API keys carry permissions (read, read_pii, write, write_live): a key without read cannot read, a
key without write cannot change anything, searches are reads; keys made by `tidings workspace create`
have every permission, and rotation keeps them."""

from __future__ import annotations

import json

import httpx

from tests.harness import Api, run_cli


def _key(api: Api, permissions: str) -> httpx.Client:
    created = json.loads(
        run_cli(
            api.server.database_url,
            "keys",
            "create",
            str(api.creds.workspace_id),
            "--kind",
            "app",
            "--permissions",
            permissions,
            "--json",
        ).stdout
    )
    assert created["permissions"] == [
        p for p in ("read", "read_pii", "write", "write_live") if p in permissions
    ]
    return httpx.Client(
        base_url=api.server.base_url, headers={"Authorization": f"Bearer {created['secret']}"}, timeout=30
    )


def test_a_read_key_reads_and_searches_but_changes_nothing(api: Api) -> None:
    with _key(api, "read") as reader:
        assert reader.get("/v1/segments").status_code == 200
        search = reader.post(
            "/v1/customers", json={"filter": {"and": [{"attribute": {"field": "a", "operator": "exists"}}]}}
        )
        assert search.status_code == 200, search.text
        refused = reader.post("/v1/segments", json={"segment": {"name": "Nope"}})
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["detail"] == "this API key does not have the write permission"
    assert api.app.get("/v1/segments").json()["segments"] == []


def test_a_write_only_key_cannot_read(api: Api) -> None:
    with _key(api, "write") as writer:
        assert writer.post("/v1/segments", json={"segment": {"name": "Made"}}).status_code == 200
        assert writer.get("/v1/segments").status_code == 403


def test_workspace_keys_have_every_permission_and_rotation_keeps_them(api: Api) -> None:
    listed = json.loads(
        run_cli(api.server.database_url, "keys", "list", str(api.creds.workspace_id), "--json").stdout
    )
    app_key = next(k for k in listed if k["kind"] == "app")
    assert app_key["permissions"] == ["read", "read_pii", "write", "write_live"]
    assert app_key["role"] == "admin"
    limited = json.loads(
        run_cli(
            api.server.database_url, "keys", "create", str(api.creds.workspace_id), "--kind", "app",
            "--permissions", "read,write", "--json",
        ).stdout
    )  # fmt: skip
    rotated = json.loads(
        run_cli(api.server.database_url, "keys", "rotate", str(limited["id"]), "--json").stdout
    )
    assert rotated["permissions"] == ["read", "write"]
    assert rotated["role"] == "member"
    bad = run_cli(
        api.server.database_url, "keys", "create", str(api.creds.workspace_id), "--kind", "app",
        "--permissions", "read,delete", check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "unknown permission 'delete'" in bad.stdout + bad.stderr


def test_a_dry_run_shows_the_change_and_makes_none(api: Api) -> None:
    with _key(api, "read") as reader:
        rehearsed = reader.post(
            "/v1/segments", json={"segment": {"name": "Maybe"}}, params={"dry_run": "true"}
        )
        assert rehearsed.status_code == 200, rehearsed.text
        assert rehearsed.headers["X-Tidings-Dry-Run"] == "true"
        assert rehearsed.json()["segment"]["name"] == "Maybe"
        # Invalid input is refused as it would be for real.
        invalid = reader.post("/v1/segments", json={"segment": {}}, headers={"X-Tidings-Dry-Run": "true"})
        assert invalid.status_code == 400
    assert api.app.get("/v1/segments").json()["segments"] == []
    made = api.app.post("/v1/segments", json={"segment": {"name": "Real"}})
    assert "X-Tidings-Dry-Run" not in made.headers
    segment_id = made.json()["segment"]["id"]
    deleted = api.app.delete(f"/v1/segments/{segment_id}", headers={"X-Tidings-Dry-Run": "true"})
    assert deleted.status_code in (200, 204)
    assert api.app.get(f"/v1/segments/{segment_id}").status_code == 200
    person = api.track.put(
        "/api/v1/customers/dry-1", json={"email": "dry@example.com"}, params={"dry_run": "1"}
    )
    assert person.status_code == 200
    assert api.app.get("/v1/customers/dry-1/attributes").status_code == 404

"""Account AI settings, workspace business context, the model catalogue, AI credits and the audit log:
over the App API and through the ``tidings ai`` / ``tidings audit`` commands, on both databases.

Every workspace of a server belongs to its one account, so AI settings and credits are shared by all tests
on that server: tests that change settings restore the defaults (the ``settings`` fixture), and credit
checks compare a balance before and after rather than assuming one.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ai.conftest import KEY
from tests.harness import TIDINGS, Api, run_cli

Json = dict[str, Any]

CATEGORIES = ("harassment", "hate_speech", "sexually_explicit", "dangerous_content")
DEFAULTS: Json = {
    "ai_enabled": True,
    "allow_agent_edit_live_data": False,
    "safety": dict.fromkeys(CATEGORIES),
    "compliance_prompt": "",
    "mcp_enabled": True,
}


@pytest.fixture
def settings(api: Api) -> Iterator[Api]:
    """The workspace's clients; afterwards the account's settings are back at the defaults (with the admin
    key, the only one allowed to reset allow_agent_edit_live_data), whatever the test did."""
    try:
        yield api
    finally:
        restored = api.app.put("/v1/ai/settings", json=DEFAULTS)
        assert restored.status_code == 200, restored.text


def ok(response: httpx.Response) -> Json:
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def refused(response: httpx.Response, status: int) -> str:
    """The App API error envelope's detail, checking its status and shape."""
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert error["status"] == str(status)
    detail: str = error["detail"]
    return detail


def current(api: Api) -> Json:
    found: Json = ok(api.app.get("/v1/ai/settings"))["ai_settings"]
    return found


def audit_log(api: Api, action: str, limit: int = 10) -> list[Json]:
    entries: list[Json] = ok(api.app.get("/v1/audit_log", params={"action": action, "limit": limit}))[
        "entries"
    ]
    return entries


def balance(api: Api) -> float:
    found: float = ok(api.app.get("/v1/ai/credits"))["credits"]["balance"]
    return found


def cli(api: Api, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``tidings`` against the database of the server ``api`` talks to."""
    return run_cli(api.server.database_url, *args, check=check)


def cli_json(api: Api, *args: str) -> Any:
    return json.loads(cli(api, *args, "--json").stdout)


def app_key_id(api: Api) -> int:
    """The id of the workspace's admin App API key, as the audit log names it (``key:<id>``)."""
    keys = cli_json(api, "keys", "list", api.creds.site_id)
    (key,) = [k for k in keys if k["kind"] == "app" and k["role"] == "admin" and k["revoked_at"] is None]
    key_id: int = key["id"]
    return key_id


def member_client(api: Api) -> tuple[int, httpx.Client]:
    """A new member-role App API key of the workspace, and a client using it."""
    created = cli_json(
        api, "keys", "create", api.creds.site_id, "--kind", "app", "--role", "member", "--name", "member"
    )
    assert created["role"] == "member"
    client = httpx.Client(
        base_url=api.server.base_url, headers={"Authorization": f"Bearer {created['secret']}"}, timeout=30
    )
    return created["id"], client


# -- settings over HTTP -----------------------------------------------------------------------------------


def test_settings_have_their_defaults_and_shape(settings: Api) -> None:
    found = current(settings)
    assert found == DEFAULTS
    assert list(found["safety"]) == list(CATEGORIES)


def test_a_put_changes_only_what_it_names(settings: Api) -> None:
    changed = ok(
        settings.app.put(
            "/v1/ai/settings",
            json={
                "compliance_prompt": "Never promise refunds.",
                "safety": {"harassment": "block_low_and_above"},
            },
        )
    )["ai_settings"]
    assert changed == {
        **DEFAULTS,
        "compliance_prompt": "Never promise refunds.",
        "safety": {**DEFAULTS["safety"], "harassment": "block_low_and_above"},
    }
    # Safety categories merge: naming one keeps the others; null hands one back to the provider default.
    # The body may also come wrapped as {"ai_settings": {...}}, the shape GET returns.
    merged = ok(
        settings.app.put(
            "/v1/ai/settings",
            json={
                "ai_settings": {"safety": {"hate_speech": "off", "harassment": None}, "mcp_enabled": False}
            },
        )
    )["ai_settings"]
    assert merged["safety"] == {**DEFAULTS["safety"], "hate_speech": "off"}
    assert merged["mcp_enabled"] is False
    assert merged["compliance_prompt"] == "Never promise refunds."
    assert current(settings) == merged


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"ai_enabled": "yes"}, "ai_enabled"),
        ({"mcp_enabled": 1}, "mcp_enabled"),
        ({"safety": {"violence": "off"}}, "violence"),
        ({"safety": {"harassment": "block_everything"}}, "safety.harassment"),
        ({"safety": "off"}, "safety"),
        ({"compliance_prompt": 5}, "compliance_prompt"),
        ({"compliance_prompt": "x" * 10_001}, "compliance_prompt"),
        ({"colour": "blue"}, "colour"),
        # One bad value refuses the whole body: the valid change beside it is not applied either.
        ({"compliance_prompt": "half applied?", "ai_enabled": "no"}, "ai_enabled"),
    ],
)
def test_invalid_settings_are_refused_and_change_nothing(settings: Api, body: Json, named: str) -> None:
    before_log = audit_log(settings, "ai_settings", limit=1)
    detail = refused(settings.app.put("/v1/ai/settings", json=body), 400)
    assert named in detail
    assert current(settings) == DEFAULTS
    assert audit_log(settings, "ai_settings", limit=1) == before_log


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/ai/settings", {"ai_settings": "off"}),
        ("/v1/ai/settings", {"ai_settings": None}),
        ("/v1/ai/settings", []),
        ("/v1/ai/business_context", {"business_context": "Acme"}),
        ("/v1/ai/business_context", "Acme"),
    ],
)
def test_a_body_must_hold_an_object(settings: Api, path: str, body: Any) -> None:
    refused(settings.app.put(path, json=body), 400)
    assert current(settings) == DEFAULTS


def test_only_admins_allow_agents_to_edit_live_data(settings: Api) -> None:
    admin_id = app_key_id(settings)
    member_id, member = member_client(settings)
    with member:
        detail = refused(member.put("/v1/ai/settings", json={"allow_agent_edit_live_data": True}), 403)
        assert "allow_agent_edit_live_data" in detail
        # Refused as a whole: the member's other change in the same body is not applied.
        refused(
            member.put(
                "/v1/ai/settings", json={"allow_agent_edit_live_data": True, "compliance_prompt": "sneaky"}
            ),
            403,
        )
        assert current(settings) == DEFAULTS
        # Members may change everything else, and read the settings.
        ok(member.put("/v1/ai/settings", json={"compliance_prompt": "Be kind."}))
        assert ok(member.get("/v1/ai/settings"))["ai_settings"]["compliance_prompt"] == "Be kind."
    changed = ok(settings.app.put("/v1/ai/settings", json={"allow_agent_edit_live_data": True}))
    assert changed["ai_settings"]["allow_agent_edit_live_data"] is True
    # Newest first: the admin's change, then the member's; refused attempts left no trace.
    latest, previous = audit_log(settings, "ai_settings", limit=2)
    assert latest["id"] > previous["id"]
    assert (latest["actor"], latest["action"], latest["target"], latest["old"], latest["new"]) == (
        f"key:{admin_id}",
        "ai_settings.update",
        "allow_agent_edit_live_data",
        False,
        True,
    )
    assert (previous["actor"], previous["target"], previous["old"], previous["new"]) == (
        f"key:{member_id}",
        "compliance_prompt",
        "",
        "Be kind.",
    )


def test_every_settings_change_is_audited_newest_first(settings: Api) -> None:
    app = settings.app
    ok(app.put("/v1/ai/settings", json={"ai_enabled": False, "safety": {"hate_speech": "block_only_high"}}))
    ok(app.put("/v1/ai/settings", json={"compliance_prompt": "A"}))
    ok(app.put("/v1/ai/settings", json={"compliance_prompt": "B"}))
    # Setting a value it already has is no change, and is not logged.
    ok(app.put("/v1/ai/settings", json={"compliance_prompt": "B", "ai_enabled": False}))
    entries = audit_log(settings, "ai_settings", limit=4)
    changes = [(e["target"], e["old"], e["new"]) for e in entries]
    assert changes[:2] == [("compliance_prompt", "A", "B"), ("compliance_prompt", "", "A")]
    # One PUT changing two settings writes an entry for each (in no promised order between them).
    assert sorted(changes[2:], key=lambda change: change[0]) == [
        ("ai_enabled", True, False),
        ("safety", DEFAULTS["safety"], {**DEFAULTS["safety"], "hate_speech": "block_only_high"}),
    ]
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    assert {e["action"] for e in entries} == {"ai_settings.update"}
    assert len({e["actor"] for e in entries}) == 1
    assert all(isinstance(e["at"], int) for e in entries)
    # Pages follow the cursor.
    first = ok(app.get("/v1/audit_log", params={"action": "ai_settings", "limit": 1}))
    second = ok(
        app.get("/v1/audit_log", params={"action": "ai_settings", "limit": 1, "start": first["next"]})
    )
    assert [first["entries"][0]["id"], second["entries"][0]["id"]] == ids[:2]


# -- settings through the CLI -----------------------------------------------------------------------------


def test_cli_changes_settings_audited_as_cli(settings: Api) -> None:
    shown = cli_json(
        settings,
        "ai",
        "settings",
        "--workspace",
        settings.creds.site_id,
        "--set",
        "compliance_prompt=Never promise refunds.",
        "--set",
        "safety.harassment=block_low_and_above",
        "--set",
        "mcp_enabled=false",
    )
    expected = {
        **DEFAULTS,
        "compliance_prompt": "Never promise refunds.",
        "safety": {**DEFAULTS["safety"], "harassment": "block_low_and_above"},
        "mcp_enabled": False,
    }
    assert shown == expected
    assert current(settings) == expected
    over_http = audit_log(settings, "ai_settings", limit=3)
    assert {e["actor"] for e in over_http} == {"cli"}
    assert {e["target"] for e in over_http} == {"compliance_prompt", "safety", "mcp_enabled"}
    # `tidings audit` shows the same entries as the App API.
    from_cli = cli_json(
        settings, "audit", "--workspace", settings.creds.site_id, "--action", "ai_settings", "--limit", "3"
    )
    assert from_cli["entries"] == over_http
    # A refused change exits 2 with the service's reason on stderr, and changes nothing.
    failed = cli(settings, "ai", "settings", "--set", "safety.violence=off", check=False)
    assert failed.returncode == 2
    assert "violence" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert current(settings) == expected


# -- business context -------------------------------------------------------------------------------------


@pytest.fixture
def other_api(api: Api) -> Iterator[Api]:
    """A second workspace on the server ``api`` talks to (so of the same account)."""
    other = Api(api.server, api.server.new_workspace())
    yield other
    other.close()


def test_business_context_is_per_workspace_and_audited(api: Api, other_api: Api) -> None:
    empty = {"company": "", "product": "", "audience": ""}
    assert ok(api.app.get("/v1/ai/business_context"))["business_context"] == empty
    acme = ok(api.app.put("/v1/ai/business_context", json={"company": "Acme"}))["business_context"]
    assert acme == {**empty, "company": "Acme"}
    globex = ok(
        other_api.app.put(
            "/v1/ai/business_context",
            json={"business_context": {"company": "Globex", "audience": "developers"}},
        )
    )["business_context"]
    assert globex == {"company": "Globex", "product": "", "audience": "developers"}
    assert ok(api.app.get("/v1/ai/business_context"))["business_context"] == acme
    assert ok(other_api.app.get("/v1/ai/business_context"))["business_context"] == globex

    latest, previous = audit_log(api, "business_context", limit=2)
    assert (latest["target"], latest["workspace_id"], latest["old"], latest["new"]) == (
        f"workspace:{other_api.creds.workspace_id}",
        other_api.creds.workspace_id,
        empty,
        globex,
    )
    assert (previous["target"], previous["new"]) == (f"workspace:{api.creds.workspace_id}", acme)
    assert latest["actor"].startswith("key:")

    assert "colour" in refused(api.app.put("/v1/ai/business_context", json={"colour": "red"}), 400)
    assert "product" in refused(api.app.put("/v1/ai/business_context", json={"product": 3}), 400)

    # The CLI changes one part and keeps the rest; an empty value clears a part.
    workspace = str(api.creds.workspace_id)
    changed = cli_json(api, "ai", "context", workspace, "--product", "Rockets", "--audience", "")
    assert changed == {"company": "Acme", "product": "Rockets", "audience": ""}
    assert ok(api.app.get("/v1/ai/business_context"))["business_context"] == changed
    (by_cli,) = audit_log(api, "business_context", limit=1)
    assert (by_cli["actor"], by_cli["old"], by_cli["new"]) == ("cli", acme, changed)
    assert cli_json(api, "ai", "context", workspace) == changed


# -- models -----------------------------------------------------------------------------------------------


def _check_models(models: list[Json]) -> None:
    assert models
    assert len({m["id"] for m in models}) == len(models)
    for model in models:
        assert model["provider"] in {"anthropic", "google", "openai"}
        assert model["class"] in {"quick", "reasoning"}
        assert isinstance(model["credits"], int | float)
        assert model["credits"] >= 0
        assert isinstance(model["available"], bool)
        assert not {"api_key", "base_url"} & set(model)


def test_models_list_the_catalogue_without_keys(api: Api) -> None:
    response = api.app.get("/v1/ai/models")
    models = ok(response)["models"]
    _check_models(models)
    # This package's server has a key for every provider (tests/ai/conftest.py): all its models are
    # available, and the key is nowhere in the answer.
    assert all(m["available"] for m in models)
    assert KEY not in response.text


def test_cli_lists_models_and_never_their_keys() -> None:
    # The catalogue needs no database; a provider key in the environment makes that provider's models
    # available, and must not appear in what is printed.
    secret = "sk-ant-test-secret-4d1c"
    environment = {**os.environ, "TIDINGS_ANTHROPIC_API_KEY": secret}
    environment.pop("TIDINGS_AI_MODELS", None)
    shown = subprocess.run(
        [str(TIDINGS), "ai", "models", "--json"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert secret not in shown.stdout
    models = json.loads(shown.stdout)
    _check_models(models)
    assert all(m["available"] for m in models if m["provider"] == "anthropic")


# -- credits ----------------------------------------------------------------------------------------------


def test_admins_add_credits_and_the_ledger_shows_them(api: Api) -> None:
    summary = ok(api.app.get("/v1/ai/credits"))["credits"]
    assert set(summary) == {"balance", "used", "since", "by_kind", "by_model"}
    before = summary["balance"]
    added = ok(api.app.post("/v1/ai/credits", json={"credits": 2.5, "note": "test top-up"}))["credits"]
    assert round(added["balance"] - before, 3) == 2.5
    (entry,) = ok(api.app.get("/v1/ai/credits/ledger", params={"limit": 1}))["entries"]
    assert entry["kind"] == "grant"
    assert entry["credits"] == 2.5
    assert entry["balance"] == added["balance"]
    assert entry["note"] == "test top-up"
    assert entry["actor"] == f"key:{app_key_id(api)}"

    for bad in (0, -5, "x", True, None, 10_000_001):
        detail = refused(api.app.post("/v1/ai/credits", json={"credits": bad}), 400)
        assert "credits" in detail
    _, member = member_client(api)
    with member:
        refused(member.post("/v1/ai/credits", json={"credits": 1}), 403)
        # Members may still see the balance.
        assert ok(member.get("/v1/ai/credits"))["credits"]["balance"] == added["balance"]
    assert balance(api) == added["balance"]


def test_cli_adds_credits_and_shows_the_ledger(api: Api) -> None:
    before = balance(api)
    site = api.creds.site_id
    added = cli_json(api, "ai", "credits", "--workspace", site, "--add", "5", "--note", "from the CLI")
    assert round(added["balance"] - before, 3) == 5
    assert balance(api) == added["balance"]
    ledger = cli_json(api, "ai", "ledger", "--workspace", site, "--limit", "1")
    (entry,) = ledger["entries"]
    assert (entry["kind"], entry["credits"], entry["actor"], entry["note"]) == (
        "grant",
        5,
        "cli",
        "from the CLI",
    )
    assert ledger["next"]
    failed = cli(api, "ai", "credits", "--add", "0", check=False)
    assert failed.returncode == 2
    assert "credits" in failed.stderr
    assert balance(api) == added["balance"]


def test_credit_grants_are_audited(api: Api) -> None:
    before = balance(api)
    ok(api.app.post("/v1/ai/credits", json={"credits": 1.5}))
    cli(api, "ai", "credits", "--add", "2")
    by_cli, by_key = audit_log(api, "ai_credits", limit=2)
    assert (by_key["action"], by_key["actor"][:4]) == ("ai_credits.grant", "key:")
    assert round(by_key["new"] - by_key["old"], 3) == 1.5
    assert round(by_key["old"], 3) == round(before, 3)
    assert (by_cli["action"], by_cli["actor"], round(by_cli["new"] - by_cli["old"], 3)) == (
        "ai_credits.grant",
        "cli",
        2,
    )
    from_cli = cli_json(api, "audit", "--action", "ai_credits.grant", "--limit", "2")
    assert from_cli["entries"] == [by_cli, by_key]

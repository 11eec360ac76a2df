"""``/v1/reporting_webhooks``: create, read, change, delete; validation in the App API error envelope;
workspaces see only their own webhooks."""

from __future__ import annotations

import httpx

from tests.harness import Api
from tests.webhooks.conftest import app_error, create_webhook, ok, webhook

ENDPOINT = "https://hooks.example.com/cio"


def test_create_answers_the_bare_webhook_with_defaults_and_status(api: Api) -> None:
    created = create_webhook(api, ENDPOINT, ["email_opened", "customer_unsubscribed"], name="Reporting")
    assert created == {
        "id": created["id"],
        "name": "Reporting",
        "endpoint": ENDPOINT,
        "events": ["email_opened", "customer_unsubscribed"],
        "disabled": False,
        "full_resolution": False,
        "with_content": False,
        "status": {
            "failing_since": None,
            "last_status": None,
            "last_error": None,
            "last_success_at": None,
            "pending": 0,
        },
    }
    assert isinstance(created["id"], int)
    assert webhook(api, created["id"]) == created
    listed = ok(api.app.get("/v1/reporting_webhooks"))
    assert listed == {"reporting_webhooks": [created]}


def test_put_replaces_the_fields_given_and_keeps_the_others(api: Api) -> None:
    created = create_webhook(api, ENDPOINT, ["email_sent"], with_content=True)
    changed = ok(
        api.app.put(
            f"/v1/reporting_webhooks/{created['id']}",
            json={"events": ["email_sent", "email_bounced", "email_sent"], "disabled": True},
        )
    )
    assert changed["events"] == ["email_sent", "email_bounced"]
    assert changed["disabled"] is True
    assert changed["with_content"] is True
    assert changed["name"] == created["name"]
    assert changed["endpoint"] == ENDPOINT
    # A GET answer sent back as it is (id and status included) changes nothing.
    assert ok(api.app.put(f"/v1/reporting_webhooks/{created['id']}", json=changed)) == changed
    assert webhook(api, created["id"]) == changed


def test_delete_removes_it(api: Api) -> None:
    first = create_webhook(api, ENDPOINT, ["email_sent"], name="one")
    second = create_webhook(api, f"{ENDPOINT}/2", ["email_sent"], name="two")
    assert ok(api.app.delete(f"/v1/reporting_webhooks/{first['id']}")) == {}
    app_error(api.app.get(f"/v1/reporting_webhooks/{first['id']}"), 404)
    app_error(api.app.delete(f"/v1/reporting_webhooks/{first['id']}"), 404)
    remaining = ok(api.app.get("/v1/reporting_webhooks"))["reporting_webhooks"]
    assert [hook["id"] for hook in remaining] == [second["id"]]


def test_validation_errors_use_the_app_envelope(api: Api) -> None:
    base = {"name": "hook", "endpoint": ENDPOINT, "events": ["email_sent"]}

    def create(**changes: object) -> httpx.Response:
        body = {**base, **changes}
        return api.app.post("/v1/reporting_webhooks", json={k: v for k, v in body.items() if v is not ...})

    assert "name" in app_error(create(name=...), 400)
    assert "name" in app_error(create(name="  "), 400)
    assert "endpoint" in app_error(create(endpoint=...), 400)
    for endpoint in (
        "ftp://example.com/x",
        "not a url",
        "example.com/hook",
        "http://",
        "https://x.test:99999/",
    ):
        assert "endpoint" in app_error(create(endpoint=endpoint), 400), endpoint
    assert "email_teleported" in app_error(create(events=["email_sent", "email_teleported"]), 400)
    assert "events" in app_error(create(events="email_sent"), 400)
    assert "events" in app_error(create(events=...), 400)
    assert "disabled" in app_error(create(disabled="yes"), 400)
    app_error(api.app.post("/v1/reporting_webhooks", json=["not", "an", "object"]), 400)
    app_error(
        api.app.post("/v1/reporting_webhooks", content=b"{", headers={"content-type": "application/json"}),
        400,
    )
    created = create_webhook(api, ENDPOINT, ["email_sent"])
    assert "email_teleported" in app_error(
        api.app.put(f"/v1/reporting_webhooks/{created['id']}", json={"events": ["email_teleported"]}), 400
    )
    app_error(api.app.put(f"/v1/reporting_webhooks/{created['id']}", json={"endpoint": "gopher://x"}), 400)
    assert webhook(api, created["id"])["events"] == ["email_sent"]
    assert ok(api.app.get("/v1/reporting_webhooks"))["reporting_webhooks"] == [created]


def test_unknown_ids_are_404(api: Api) -> None:
    for webhook_id in ("999999999", "0", "99999999999999999999999"):
        app_error(api.app.get(f"/v1/reporting_webhooks/{webhook_id}"), 404)
        app_error(api.app.put(f"/v1/reporting_webhooks/{webhook_id}", json={"name": "x"}), 404)
        app_error(api.app.delete(f"/v1/reporting_webhooks/{webhook_id}"), 404)


def test_credentials_are_required(api: Api) -> None:
    anonymous = httpx.get(f"{api.server.base_url}/v1/reporting_webhooks")
    app_error(anonymous, 401)
    track_key = httpx.get(
        f"{api.server.base_url}/v1/reporting_webhooks",
        headers={"Authorization": f"Bearer {api.creds.track_api_key}"},
    )
    app_error(track_key, 401)


def test_workspaces_see_only_their_own_webhooks(api: Api, other_api: Api) -> None:
    mine = create_webhook(api, ENDPOINT, ["email_sent"])
    theirs = create_webhook(other_api, ENDPOINT, ["email_opened"])
    assert [hook["id"] for hook in ok(api.app.get("/v1/reporting_webhooks"))["reporting_webhooks"]] == [
        mine["id"]
    ]
    app_error(other_api.app.get(f"/v1/reporting_webhooks/{mine['id']}"), 404)
    app_error(other_api.app.put(f"/v1/reporting_webhooks/{mine['id']}", json={"disabled": True}), 404)
    app_error(other_api.app.delete(f"/v1/reporting_webhooks/{mine['id']}"), 404)
    assert webhook(api, mine["id"]) == mine
    assert webhook(other_api, theirs["id"]) == theirs

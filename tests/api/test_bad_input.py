"""Bad input gets a clear error in the endpoint's envelope, never a 500, and loses nothing accepted."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.harness import Api, run_cli

V1_BODY_ENDPOINTS = [
    ("PUT", "/api/v1/customers/keep"),
    ("POST", "/api/v1/customers/keep/events"),
    ("POST", "/api/v1/events"),
    ("PUT", "/api/v1/customers/keep/devices"),
    ("POST", "/api/v1/merge_customers"),
    ("POST", "/api/v1/metrics"),
    ("POST", "/api/v1/push/events"),
    ("POST", "/api/v1/forms/f1/submit"),
]


@pytest.fixture
def kept(api: Api) -> Api:
    api.track.put("/api/v1/customers/keep", json={"email": "keep@example.com", "plan": "pro"})
    api.track.post("/api/v1/customers/keep/events", json={"name": "accepted"})
    return api


def assert_kept(api: Api) -> None:
    customer = api.attributes("keep").json()["customer"]
    assert customer["attributes"]["plan"] == "pro"
    assert customer["identifiers"]["email"] == "keep@example.com"
    assert [a["name"] for a in api.activities("keep", type="event")] == ["accepted"]


def v1_errors(response: object) -> list[str]:
    body = response.json()  # type: ignore[attr-defined]
    meta = body["meta"]
    return list(meta["errors"]) if "errors" in meta else [meta["error"]]


@pytest.mark.parametrize(("method", "path"), V1_BODY_ENDPOINTS)
def test_malformed_json_is_400_in_the_v1_envelope(kept: Api, method: str, path: str) -> None:
    response = kept.track.request(
        method, path, content=b'{"name": "broken', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "malformed JSON" in v1_errors(response)[0]
    assert_kept(kept)


@pytest.mark.parametrize(("method", "path"), V1_BODY_ENDPOINTS)
def test_a_body_that_is_not_an_object_is_400(kept: Api, method: str, path: str) -> None:
    response = kept.track.request(method, path, json=[1, 2, 3])
    assert response.status_code == 400
    assert v1_errors(response)
    assert_kept(kept)


def test_oversized_bodies_are_413(kept: Api) -> None:
    response = kept.track.put("/api/v1/customers/keep", json={"blob": "x" * 1_100_000})
    assert response.status_code == 413
    assert "larger than" in v1_errors(response)[0]
    assert_kept(kept)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"plan": "x" * 1001}, "longer than 1000 bytes"),
        ({"n" * 151: 1}, "longer than 150 bytes"),
        ({f"a{i}": i for i in range(301)}, "too many attributes"),
        ({"created_at": "yesterday"}, "unix timestamp"),
        ({"id": {"nested": True}, "email": "keep@example.com"}, "must be a string"),
        ({"cio_subscription_preferences": ["topic_1"]}, "must be an object"),
        ({"cio_relationships": {"action": "befriend"}}, "cio_relationships.action"),
        ({"cio_relationships": {"relationships": [{"identifiers": {"object_id": "a"}}]}}, "object_type_id"),
    ],
)
def test_invalid_identify_bodies_are_refused_whole(kept: Api, body: dict[str, object], message: str) -> None:
    response = kept.track.put("/api/v1/customers/keep", json={"plan": "changed", **body})
    assert response.status_code == 400
    assert message in v1_errors(response)[0]
    assert_kept(kept)


def test_ids_longer_than_150_bytes_are_refused(kept: Api) -> None:
    response = kept.track.put(f"/api/v1/customers/{'i' * 151}", json={})
    assert response.status_code == 400
    assert "150 bytes" in v1_errors(response)[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "name is required"),
        ({"name": "   "}, "name is required"),
        ({"name": "e" * 101}, "longer than 100 bytes"),
        ({"name": "big", "data": {"blob": "x" * 100_001}}, "more than 100000"),
        ({"name": "t", "timestamp": "noon"}, "unix timestamp"),
        ({"name": "t", "data": [1]}, "data must be an object"),
        ({"name": "t", "type": "click"}, "type must be"),
        ({"name": "t", "id": 7}, "id must be"),
    ],
)
def test_invalid_events_are_400(kept: Api, body: dict[str, object], message: str) -> None:
    response = kept.track.post("/api/v1/customers/keep/events", json=body)
    assert response.status_code == 400
    assert message in v1_errors(response)[0]
    assert_kept(kept)


def test_unknown_people_on_the_app_api_are_404_in_its_envelope(api: Api) -> None:
    response = api.attributes("nobody")
    assert response.status_code == 404
    error = response.json()["errors"][0]
    assert error["status"] == "404"
    assert "nobody" in error["detail"]
    wrong_type = api.attributes("nobody", id_type="phone")
    assert wrong_type.status_code == 400
    assert wrong_type.json()["errors"][0]["status"] == "400"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Basic",
        "Basic !!!not-base64!!!",
        "Bearer abc",
        "Basic " + base64.b64encode(b"site-only").decode(),
    ],
)
def test_bad_track_credentials_are_401(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.put(f"{api.server.base_url}/api/v1/customers/x", json={}, headers=headers)
    assert response.status_code == 401
    assert v1_errors(response)


def test_bad_app_credentials_are_401_in_the_app_envelope(api: Api) -> None:
    response = api.app.get(
        "/v1/customers", params={"email": "a@b.c"}, headers={"Authorization": "Bearer nope"}
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["status"] == "401"
    track_key_on_app = api.app.get(
        "/v1/workspaces", headers={"Authorization": f"Bearer {api.creds.track_api_key}"}
    )
    assert track_key_on_app.status_code == 401


def test_limits_are_configurable_per_workspace(api: Api, other_api: Api) -> None:
    long_value = "v" * 1500
    assert api.track.put("/api/v1/customers/big", json={"note": long_value}).status_code == 400
    run_cli(
        api.server.database_url,
        "workspace",
        "configure",
        str(api.creds.workspace_id),
        "--set",
        "limits.max_attribute_value_bytes=2000",
    )
    assert api.track.put("/api/v1/customers/big", json={"note": long_value}).status_code == 200
    assert api.attributes("big").json()["customer"]["attributes"]["note"] == long_value
    assert other_api.track.put("/api/v1/customers/big", json={"note": long_value}).status_code == 400
    unknown = run_cli(
        api.server.database_url,
        "workspace",
        "configure",
        str(api.creds.workspace_id),
        "--set",
        "limits.nope=1",
        check=False,
    )
    assert unknown.returncode != 0
    assert "unknown setting" in unknown.stderr


def test_rate_limits_answer_429_with_retry_after_when_turned_on(api: Api, other_api: Api) -> None:
    for _ in range(5):
        assert api.track.put("/api/v1/customers/rl", json={}).status_code == 200
    run_cli(
        api.server.database_url,
        "workspace",
        "configure",
        str(api.creds.workspace_id),
        "--set",
        "rate_limits.track=2",
    )
    statuses = [api.track.put("/api/v1/customers/rl", json={"n": i}).status_code for i in range(6)]
    assert statuses.count(429) >= 3
    limited = api.track.put("/api/v1/customers/rl", json={})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["errors"][0]["status"] == "429"
    assert "rate limited" in limited.json()["errors"][0]["detail"]
    # Other surfaces and other workspaces keep their own budgets.
    assert api.attributes("rl").status_code == 200
    assert other_api.track.put("/api/v1/customers/rl", json={}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("PUT", "/api/v1/customers/keep", {"note": "nul\u0000byte"}, "NUL character"),
        ("PUT", "/api/v1/customers/keep", {"created_at": 10**15}, "out of range"),
        ("POST", "/api/v1/customers/keep/events", {"name": "late", "timestamp": 2**63}, "out of range"),
        (
            "PUT",
            "/api/v1/customers/keep/devices",
            {"device": {"id": "t" * 1001, "platform": "ios"}},
            "1000 bytes",
        ),
        ("POST", "/api/v1/metrics", {"delivery_id": "d" * 191, "metric": "opened"}, "190 bytes"),
    ],
)
def test_values_no_store_can_hold_are_400_on_every_backend(
    kept: Api, method: str, path: str, body: dict[str, object], message: str
) -> None:
    response = kept.track.request(method, path, json=body)
    assert response.status_code == 400
    assert message in v1_errors(response)[0]
    assert_kept(kept)

"""Track API v1 semantics over HTTP, read back through the App API."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.harness import Api


def test_identify_creates_and_updates_a_person(api: Api) -> None:
    response = api.track.put("/api/v1/customers/42", json={"email": "Ana@Example.com", "plan": "pro", "n": 3})
    assert response.status_code == 200
    assert response.content == b"{}\n"
    api.track.put("/api/v1/customers/42", json={"plan": "team", "n": None})
    customer = api.attributes("42").json()["customer"]
    assert customer["identifiers"]["email"] == "Ana@Example.com"
    assert customer["attributes"]["plan"] == "team"
    assert "n" not in customer["attributes"]
    assert customer["timestamps"]["plan"] > 0
    by_email = api.app.get("/v1/customers", params={"email": "ana@example.com"}).json()
    assert by_email["results"] == [
        {"id": "42", "email": "Ana@Example.com", "cio_id": customer["identifiers"]["cio_id"]}
    ]


def test_email_path_with_body_id_changes_the_id(api: Api) -> None:
    api.track.put("/api/v1/customers/old", json={"email": "ch@example.com"})
    api.track.put("/api/v1/customers/ch%40example.com", json={"id": "new"})
    assert api.attributes("new").status_code == 200
    assert api.attributes("old").status_code == 404


def test_conflicting_identifiers_log_an_attribute_update_failure(api: Api) -> None:
    api.track.put("/api/v1/customers/a", json={"email": "a@example.com"})
    api.track.put("/api/v1/customers/b", json={"email": "b@example.com"})
    response = api.track.put("/api/v1/customers/a", json={"email": "b@example.com"})
    assert response.status_code == 200
    assert api.attributes("a").json()["customer"]["identifiers"]["email"] == "a@example.com"
    assert any(a["type"] == "failed_attribute_change" for a in api.activities("a"))


def test_update_only_never_creates(api: Api) -> None:
    assert api.track.put("/api/v1/customers/ghost", json={"_update": True, "x": 1}).status_code == 200
    assert api.attributes("ghost").status_code == 404


def test_timestamp_orders_attribute_updates(api: Api) -> None:
    api.track.put("/api/v1/customers/t", json={"plan": "new", "_timestamp": 2000})
    api.track.put("/api/v1/customers/t", json={"plan": "old", "_timestamp": 1000})
    assert api.attributes("t").json()["customer"]["attributes"]["plan"] == "new"


def test_unsubscribed_accepts_customerio_truthiness(api: Api) -> None:
    api.track.put("/api/v1/customers/u", json={"unsubscribed": "TRUE"})
    assert api.attributes("u").json()["customer"]["unsubscribed"] is True
    api.track.put("/api/v1/customers/u", json={"unsubscribed": "yes"})
    assert api.attributes("u").json()["customer"]["unsubscribed"] is False


def test_events_dedup_by_id_and_appear_as_activities(api: Api) -> None:
    body = {"name": "purchase", "id": "01HZY3V6M9J5R8QK2T4W6X8Y0Z", "data": {"price": 9}}
    for _ in range(2):
        assert api.track.post("/api/v1/customers/e1/events", json=body).status_code == 200
    events = [a for a in api.activities("e1") if a["type"] == "event"]
    assert len(events) == 1
    assert events[0]["name"] == "purchase"
    assert events[0]["data"]["price"] == 9


def test_identifier_with_an_escaped_slash(api: Api) -> None:
    assert api.track.put("/api/v1/customers/a%2Fb", json={"k": "v"}).status_code == 200
    assert api.attributes("a%2Fb").json()["customer"]["id"] == "a/b"


def test_anonymous_events_merge_into_the_identified_person(api: Api) -> None:
    api.track.post("/api/v1/events", json={"name": "viewed", "anonymous_id": "anon-1", "data": {"p": 1}})
    api.track.put("/api/v1/customers/m1", json={"anonymous_id": "anon-1"})
    merged = [a for a in api.activities("m1") if a["type"] == "event"]
    assert [a["name"] for a in merged] == ["viewed"]
    assert merged[0]["data"]["merged"] is True


def test_suppressed_identifier_stays_refused(api: Api) -> None:
    api.track.put("/api/v1/customers/s1", json={"email": "s1@example.com"})
    assert api.track.post("/api/v1/customers/s1/suppress").status_code == 200
    assert api.attributes("s1").status_code == 404
    refused = api.track.put("/api/v1/customers/s1", json={"a": 1})
    assert refused.status_code == 400
    assert "suppressed" in refused.json()["meta"]["errors"][0]
    refused_email = api.track.put("/api/v1/customers/other", json={"email": "s1@example.com"})
    assert refused_email.status_code == 400
    assert api.track.post("/api/v1/customers/s1/unsuppress").status_code == 200
    assert api.track.put("/api/v1/customers/s1", json={"a": 1}).status_code == 200


def test_bad_credentials_are_401_and_url_safe_basic_is_accepted(api: Api) -> None:
    bad = api.track.put("/api/v1/customers/x", json={}, auth=(api.creds.site_id, "nope"))
    assert bad.status_code == 401
    token = base64.urlsafe_b64encode(f"{api.creds.site_id}:{api.creds.track_api_key}".encode()).decode()
    good = api.track.put("/api/v1/customers/x", json={}, headers={"Authorization": f"Basic {token}"})
    assert good.status_code == 200


def test_merge_moves_data_and_deletes_the_secondary(api: Api) -> None:
    api.track.put("/api/v1/customers/p", json={"email": "p@example.com", "tier": "gold"})
    api.track.put("/api/v1/customers/s", json={"email": "s@example.com", "city": "Oslo", "tier": "silver"})
    api.track.post("/api/v1/customers/s/events", json={"name": "signup", "timestamp": int(time.time()) - 60})
    api.track.put("/api/v1/customers/s/devices", json={"device": {"id": "tok-s", "platform": "ios"}})
    merged = api.track.post(
        "/api/v1/merge_customers", json={"primary": {"id": "p"}, "secondary": {"email": "s@example.com"}}
    )
    assert merged.status_code == 200
    customer = api.attributes("p").json()["customer"]
    assert customer["attributes"]["tier"] == "gold"
    assert customer["attributes"]["city"] == "Oslo"
    assert [d["id"] for d in customer["devices"]] == ["tok-s"]
    assert api.attributes("s").status_code == 404
    assert any(a["name"] == "signup" for a in api.activities("p"))
    bad = api.track.post(
        "/api/v1/merge_customers", json={"primary": {"id": "p", "email": "x"}, "secondary": {}}
    )
    assert bad.status_code == 400
    assert "error" in bad.json()["meta"]


def test_workspaces_are_isolated(api: Api, other_api: Api) -> None:
    api.track.put("/api/v1/customers/iso", json={"secret": "mine"})
    assert other_api.attributes("iso").status_code == 404
    other_api.track.put("/api/v1/customers/iso", json={"secret": "theirs"})
    assert api.attributes("iso").json()["customer"]["attributes"]["secret"] == "mine"
    cross = api.track.put(
        "/api/v1/customers/iso", json={"secret": "x"}, auth=(api.creds.site_id, other_api.creds.track_api_key)
    )
    assert cross.status_code == 401


def test_concurrent_events_create_each_new_person_once(api: Api) -> None:
    """Events arriving together are applied together (one group in the writer): every person they name
    for the first time is created once, whatever the spelling of their email, and the refusals of the
    one-at-a-time path still hold."""
    api.track.put("/api/v1/customers/gone", json={})
    assert api.track.post("/api/v1/customers/gone/suppress").status_code == 200
    lone_unknown_cio = api.track.post("/api/v1/customers/cio_nobody/events", json={"name": "e"}).status_code
    paths = [f"/api/v1/customers/new{i}/events" for i in range(6) for _ in range(3)]
    paths += ["/api/v1/customers/Mixed@Example.com/events", "/api/v1/customers/mixed@example.com/events"] * 2
    paths += ["/api/v1/customers/cio_nobody/events", "/api/v1/customers/gone/events"]

    def post(path: str) -> int:
        with httpx.Client(base_url=api.server.base_url, auth=api.track.auth) as client:
            return client.post(path, json={"name": "arrived"}).status_code

    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        statuses = dict(zip(paths, pool.map(post, paths), strict=True))
    assert statuses.pop("/api/v1/customers/gone/events") == 400
    assert statuses.pop("/api/v1/customers/cio_nobody/events") == lone_unknown_cio
    assert set(statuses.values()) == {200}
    for identifier, id_type, events in [
        *((f"new{i}", "id", 3) for i in range(6)),
        ("mixed@example.com", "email", 4),
    ]:
        activities = api.activities(identifier, id_type)
        created = [a for a in activities if a["type"] == "attribute_change" and a["data"].get("created")]
        assert len(created) == 1, identifier
        assert len([a for a in activities if a["type"] == "event" and a["name"] == "arrived"]) == events
    assert api.attributes("gone").status_code == 404


def test_concurrent_identifies_update_each_person_as_alone(api: Api) -> None:
    """Identifies arriving together are applied together where they cannot interfere (one call per
    person); calls naming a person twice, conflicting identifiers and suppressed ones keep the effects of
    the one-at-a-time path."""
    for i in range(6):
        api.track.put(f"/api/v1/customers/up{i}", json={"email": f"up{i}@example.com", "n": 0})
    api.track.put("/api/v1/customers/banned", json={"email": "banned@example.com"})
    assert api.track.post("/api/v1/customers/banned/suppress").status_code == 200
    calls = [(f"/api/v1/customers/up{i}", {"n": i, "plan": "pro"}) for i in range(1, 4)]
    calls += [
        ("/api/v1/customers/up0", {"via": "id"}),
        ("/api/v1/customers/up0@example.com", {"via_email": True}),
        ("/api/v1/customers/up4", {"email": "up5@example.com", "stolen": True}),
        ("/api/v1/customers/up5", {"email": "banned@example.com"}),
    ]

    def put(call: tuple[str, dict[str, object]]) -> int:
        with httpx.Client(base_url=api.server.base_url, auth=api.track.auth) as client:
            return client.put(call[0], json=call[1]).status_code

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        statuses = list(pool.map(put, calls))
    assert statuses == [200] * 6 + [400]
    for i in range(1, 4):
        customer = api.attributes(f"up{i}").json()["customer"]
        assert (customer["attributes"]["n"], customer["attributes"]["plan"]) == (str(i), "pro")
        changes = [a for a in api.activities(f"up{i}") if a["type"] == "attribute_change"]
        assert sorted(changes[0]["data"]["changes"]) == ["n", "plan"]  # the newest, this update's
    both = api.attributes("up0").json()["customer"]["attributes"]
    assert (both["via"], both["via_email"]) == ("id", "true")
    # up5's email stays with up5: up4 records the conflict and keeps its own.
    assert api.attributes("up4").json()["customer"]["attributes"]["email"] == "up4@example.com"
    assert "stolen" not in api.attributes("up4").json()["customer"]["attributes"]
    assert any(a["type"] == "failed_attribute_change" for a in api.activities("up4"))
    assert api.attributes("up5").json()["customer"]["attributes"]["email"] == "up5@example.com"

"""Pipelines API (Segment-spec calls) over HTTP, read back through the App API."""

from __future__ import annotations

import gzip
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson

from tests.harness import Api, run_cli

STRICT = {"X-Strict-Mode": "1"}


def send(api: Api, call: str, body: dict[str, Any]) -> None:
    """Send in strict mode, so anything the server refuses fails the test."""
    response = api.pipelines.post(f"/v1/{call}", json=body, headers=STRICT)
    assert response.status_code == 200, response.text
    assert response.content == b"{}\n"


def strict(api: Api, call: str, body: Any) -> httpx.Response:
    return api.pipelines.post(f"/v1/{call}", json=body, headers=STRICT)


def lenient(api: Api, call: str, body: Any) -> httpx.Response:
    return api.pipelines.post(f"/v1/{call}", json=body)


def attributes(api: Api, identifier: str, id_type: str = "id") -> dict[str, Any]:
    response = api.attributes(identifier, id_type)
    assert response.status_code == 200, response.text
    customer: dict[str, Any] = response.json()["customer"]
    return customer


def events_of(api: Api, identifier: str, type_: str = "event") -> list[dict[str, Any]]:
    return api.activities(identifier, type=type_)


def warnings_logged(api: Api) -> int:
    return api.server.log().count("pipelines /v1/")


# -- identify ----------------------------------------------------------------------------------------


def test_identify_sets_traits_email_created_at_and_unsubscribed(api: Api) -> None:
    send(
        api,
        "identify",
        {
            "userId": "p1",
            "traits": {
                "email": "Ana@Example.com",
                "plan": "pro",
                "seats": 3,
                "createdAt": "2020-09-13T12:26:40.000Z",
                "unsubscribed": "TRUE",
                "id": "ignored",
            },
        },
    )
    customer = attributes(api, "p1")
    assert customer["identifiers"]["email"] == "Ana@Example.com"
    assert customer["attributes"]["plan"] == "pro"
    assert customer["attributes"]["seats"] == "3"
    assert customer["attributes"]["created_at"] == "1600000000"
    assert customer["unsubscribed"] is True
    assert "createdAt" not in customer["attributes"]
    assert customer["id"] == "p1"


def test_identify_accepts_a_numeric_user_id_and_unix_created_at(api: Api) -> None:
    send(api, "identify", {"userId": 42, "traits": {"created_at": 1600000000}})
    assert attributes(api, "42")["attributes"]["created_at"] == "1600000000"


def test_timestamp_orders_attribute_updates(api: Api) -> None:
    send(api, "identify", {"userId": "t", "traits": {"plan": "new"}, "timestamp": "2024-05-02T00:00:00Z"})
    send(api, "identify", {"userId": "t", "traits": {"plan": "old"}, "timestamp": "2024-05-01T00:00:00Z"})
    customer = attributes(api, "t")
    assert customer["attributes"]["plan"] == "new"
    assert customer["timestamps"]["plan"] == 1714608000


def test_subscription_preferences_as_object_and_dot_notation(api: Api) -> None:
    send(
        api,
        "identify",
        {
            "userId": "sp",
            "traits": {
                "cio_subscription_preferences": {"topics": {"topic_1": True}, "channels": {"sms": False}}
            },
        },
    )
    send(api, "identify", {"userId": "sp", "traits": {"cio_subscription_preferences.topics.topic_2": False}})
    preferences = orjson.loads(attributes(api, "sp")["attributes"]["cio_subscription_preferences"])
    assert preferences == {"topics": {"topic_1": True, "topic_2": False}, "channels": {"sms": False}}
    bad = strict(api, "identify", {"userId": "sp", "traits": {"cio_subscription_preferences": "all"}})
    assert bad.status_code == 400


def test_identify_by_email_trait_without_a_user_id(api: Api) -> None:
    send(api, "identify", {"traits": {"email": "only@example.com", "plan": "free"}})
    customer = attributes(api, "only@example.com", "email")
    assert customer["id"] is None
    assert customer["attributes"]["plan"] == "free"


def test_identify_refuses_a_suppressed_person_only_in_strict_mode(api: Api) -> None:
    send(api, "identify", {"userId": "sup"})
    send(api, "track", {"userId": "sup", "event": "User Suppressed"})
    assert lenient(api, "identify", {"userId": "sup"}).status_code == 200
    refused = strict(api, "identify", {"userId": "sup"})
    assert refused.status_code == 400
    assert refused.json()["code"] == "suppressed"
    assert api.attributes("sup").status_code == 404


# -- anonymous visitors --------------------------------------------------------------------------------


def test_anonymous_activity_merges_into_the_identified_person(api: Api) -> None:
    send(api, "track", {"anonymousId": "anon-1", "event": "viewed_plan", "properties": {"plan": "pro"}})
    send(api, "page", {"anonymousId": "anon-1", "name": "Pricing"})
    send(api, "identify", {"anonymousId": "anon-1", "traits": {"favorite": "blue", "plan": "free"}})
    assert api.attributes("m1").status_code == 404

    send(api, "identify", {"userId": "m1", "anonymousId": "anon-1", "traits": {"plan": "pro"}})
    customer = attributes(api, "m1")
    assert customer["attributes"]["favorite"] == "blue"
    assert customer["attributes"]["plan"] == "pro"
    merged = events_of(api, "m1")
    assert [(a["name"], a["data"]["plan"], a["data"]["merged"]) for a in merged] == [
        ("viewed_plan", "pro", True)
    ]
    assert [a["name"] for a in events_of(api, "m1", "page")] == ["Pricing"]

    # Once linked, the anonymous id names the person.
    send(api, "track", {"anonymousId": "anon-1", "event": "after_login"})
    send(api, "identify", {"anonymousId": "anon-1", "traits": {"color": "red"}})
    assert events_of(api, "m1")[0]["name"] == "after_login"
    assert attributes(api, "m1")["attributes"]["color"] == "red"


# -- track, page, screen -------------------------------------------------------------------------------


def test_track_records_an_event_with_its_properties_and_timestamp(api: Api) -> None:
    send(
        api,
        "track",
        {
            "userId": "e1",
            "event": "purchase",
            "properties": {"price": 9.5, "items": ["a", "b"]},
            "timestamp": "2024-01-02T03:04:05.678+00:00",
        },
    )
    [event] = events_of(api, "e1")
    assert event["name"] == "purchase"
    assert event["timestamp"] == 1704164645
    assert event["data"]["price"] == 9.5
    assert event["data"]["items"] == ["a", "b"]
    rows = api.server.sql("SELECT source, type FROM events WHERE workspace_id = :w", w=api.creds.workspace_id)
    assert rows == [("pipelines", "event")]


def test_original_timestamp_is_used_without_timestamp(api: Api) -> None:
    send(api, "track", {"userId": "ot", "event": "e", "originalTimestamp": "2024-01-01T00:00:00"})
    assert events_of(api, "ot")[0]["timestamp"] == 1704067200


def test_page_and_screen_views(api: Api) -> None:
    send(api, "page", {"userId": "pv", "name": "Pricing", "properties": {"url": "https://x.test/pricing"}})
    send(api, "page", {"userId": "pv", "properties": {"path": "/docs", "url": "https://x.test/docs"}})
    send(api, "page", {"userId": "pv", "context": {"page": {"url": "https://x.test/"}}})
    send(api, "page", {"userId": "pv", "name": "Blog", "category": "content"})
    send(api, "screen", {"userId": "pv", "name": "Settings", "properties": {"tab": "push"}})
    pages = events_of(api, "pv", "page")
    assert [a["name"] for a in pages] == ["Blog", "https://x.test/", "/docs", "Pricing"]
    assert pages[0]["data"]["category"] == "content"
    assert pages[3]["data"]["url"] == "https://x.test/pricing"
    [screen] = events_of(api, "pv", "screen")
    assert (screen["name"], screen["data"]) == (
        "Settings",
        {"event_id": screen["data"]["event_id"], "tab": "push"},
    )
    unnamed = strict(api, "screen", {"userId": "pv"})
    assert unnamed.status_code == 400
    assert unnamed.json() == {"code": "invalid_input", "message": "name is required"}


# -- semantic events -----------------------------------------------------------------------------------


def test_user_deleted(api: Api) -> None:
    send(api, "identify", {"userId": "gone", "traits": {"plan": "pro"}})
    send(api, "track", {"userId": "gone", "event": "User Deleted"})
    assert api.attributes("gone").status_code == 404


def test_user_suppressed_and_unsuppressed(api: Api) -> None:
    send(api, "identify", {"userId": "s1", "traits": {"email": "s1@example.com"}})
    send(api, "track", {"userId": "s1", "event": "User Suppressed"})
    assert api.attributes("s1").status_code == 404
    assert strict(api, "track", {"userId": "s1", "event": "ping"}).status_code == 400
    send(api, "track", {"userId": "s1", "event": "User Unsuppressed"})
    send(api, "identify", {"userId": "s1", "traits": {"email": "s1@example.com"}})
    assert attributes(api, "s1")["identifiers"]["email"] == "s1@example.com"


def test_device_created_updated_and_deleted(api: Api) -> None:
    send(
        api,
        "track",
        {
            "userId": "d1",
            "event": "Device Created or Updated",
            "context": {"device": {"token": "tok-ios", "type": "ios", "model": "iPhone"}},
            "properties": {"app_version": "1.2", "push_enabled": True},
        },
    )
    # The JavaScript snippet sends the device in the properties.
    send(
        api,
        "track",
        {
            "userId": "d1",
            "event": "Device Created or Updated",
            "properties": {"device": {"token": "tok-web", "type": "android"}},
        },
    )
    send(
        api,
        "track",
        {
            "userId": "d1",
            "event": "Device Created or Updated",
            "context": {"device": {"token": "tok-ios", "type": "ios"}},
            "properties": {"app_version": "1.3"},
        },
    )
    devices = {d["id"]: d for d in attributes(api, "d1")["devices"]}
    assert devices["tok-ios"]["platform"] == "ios"
    assert devices["tok-ios"]["attributes"] == {"app_version": "1.3", "push_enabled": "true"}
    assert devices["tok-web"]["platform"] == "android"
    assert [a["type"] for a in api.activities("d1", type="device_change")] == ["device_change"] * 3

    send(
        api, "track", {"userId": "d1", "event": "Device Deleted", "context": {"device": {"token": "tok-ios"}}}
    )
    assert [d["id"] for d in attributes(api, "d1")["devices"]] == ["tok-web"]


def test_device_events_need_a_token_a_platform_and_a_person(api: Api) -> None:
    no_token = strict(
        api,
        "track",
        {"userId": "d2", "event": "Device Created or Updated", "context": {"device": {"type": "ios"}}},
    )
    assert no_token.status_code == 400
    assert no_token.json()["message"] == "context.device.token is required"
    no_type = strict(
        api,
        "track",
        {"userId": "d2", "event": "Device Created or Updated", "context": {"device": {"token": "t"}}},
    )
    assert no_type.status_code == 400
    nobody = strict(
        api,
        "track",
        {
            "anonymousId": "never-linked",
            "event": "Device Created or Updated",
            "context": {"device": {"token": "t", "type": "ios"}},
        },
    )
    assert nobody.status_code == 400
    assert api.attributes("d2").status_code == 404


def test_relationship_deleted_and_object_deleted(api: Api) -> None:
    send(api, "group", {"userId": "r1", "groupId": "acme", "traits": {"name": "Acme"}})
    send(api, "group", {"userId": "r1", "groupId": "beta", "traits": {"object_type_id": "2"}})
    send(api, "track", {"userId": "r1", "event": "Relationship Deleted", "properties": {"objectId": "acme"}})
    related = api.app.get("/v1/customers/r1/relationships").json()["cio_relationships"]
    assert [r["identifiers"]["object_id"] for r in related] == ["beta"]
    assert api.app.get("/v1/objects/1/acme/attributes").status_code == 200

    send(
        api,
        "track",
        {
            "anonymousId": "x",
            "event": "Object Deleted",
            "properties": {"objectId": "beta", "objectTypeId": 2},
        },
    )
    assert api.app.get("/v1/objects/2/beta/attributes").status_code == 404
    assert api.app.get("/v1/customers/r1/relationships").json()["cio_relationships"] == []
    missing = strict(api, "track", {"userId": "r1", "event": "Relationship Deleted", "properties": {}})
    assert missing.status_code == 400
    assert missing.json()["message"] == "properties.objectId is required"


def test_report_delivery_event(api: Api) -> None:
    send(
        api,
        "track",
        {
            "event": "Report Delivery Event",
            "properties": {
                "deliveryId": "RMehBAAAAXE7r",
                "metric": "clicked",
                "href": "https://x.test",
                "recipient": "a@x.test",
            },
            "timestamp": "2024-01-01T00:00:00Z",
        },
    )
    bad = strict(
        api,
        "track",
        {
            "event": "Report Delivery Event",
            "properties": {"deliveryId": "RMehBAAAAXE7r", "metric": "teleported"},
        },
    )
    assert bad.status_code == 400
    rows = api.server.sql(
        "SELECT delivery_id, metric, href, recipient, timestamp, source FROM delivery_metric_reports"
        " WHERE workspace_id = :w",
        w=api.creds.workspace_id,
    )
    assert rows == [("RMehBAAAAXE7r", "clicked", "https://x.test", "a@x.test", 1704067200, "pipelines")]


# -- group ---------------------------------------------------------------------------------------------


def test_group_creates_an_object_and_relates_the_person(api: Api) -> None:
    send(
        api,
        "group",
        {
            "userId": "g1",
            "groupId": "acme",
            "traits": {
                "name": "Acme",
                "employees": 329,
                "object_type_id": "2",
                "relationshipAttributes": {"role": "admin"},
            },
        },
    )
    obj = api.app.get("/v1/objects/2/acme/attributes").json()["object"]
    assert obj["attributes"] == {"name": "Acme", "employees": "329"}
    [relation] = api.app.get("/v1/customers/g1/relationships").json()["cio_relationships"]
    assert relation["identifiers"]["object_type_id"] == "2"
    assert relation["identifiers"]["object_id"] == "acme"
    assert relation["relationship_attributes"] == {"role": "admin"}

    # objectTypeId (the curl example's spelling) and the default type 1.
    send(api, "group", {"userId": "g1", "groupId": "beta", "traits": {"objectTypeId": 3}})
    send(api, "group", {"userId": "g1", "groupId": "gamma"})
    types = {
        r["identifiers"]["object_id"]: r["identifiers"]["object_type_id"]
        for r in api.app.get("/v1/customers/g1/relationships").json()["cio_relationships"]
    }
    assert types == {"acme": "2", "beta": "3", "gamma": "1"}
    bad_type = strict(api, "group", {"userId": "g1", "groupId": "x", "traits": {"object_type_id": "company"}})
    assert bad_type.status_code == 400
    assert strict(api, "group", {"userId": "g1"}).json()["message"] == "groupId is required"


def test_group_from_an_anonymous_visitor(api: Api) -> None:
    # Not linked yet: the object is created or updated, and the relationship waits for identification.
    send(
        api,
        "group",
        {
            "anonymousId": "ga",
            "groupId": "solo",
            "traits": {"plan": "team", "relationshipAttributes": {"r": "x"}},
        },
    )
    assert api.app.get("/v1/objects/1/solo/attributes").json()["object"]["attributes"] == {"plan": "team"}
    send(api, "identify", {"userId": "g2", "anonymousId": "ga"})
    related = api.app.get("/v1/customers/g2/relationships").json()["cio_relationships"]
    assert [(r["identifiers"]["object_id"], r["relationship_attributes"]) for r in related] == [
        ("solo", {"r": "x"})
    ]
    send(api, "group", {"anonymousId": "ga", "groupId": "solo2"})
    related = api.app.get("/v1/customers/g2/relationships").json()["cio_relationships"]
    assert [r["identifiers"]["object_id"] for r in related] == ["solo", "solo2"]


# -- alias ---------------------------------------------------------------------------------------------


def test_alias_links_an_anonymous_id_and_merges_its_events(api: Api) -> None:
    send(api, "track", {"anonymousId": "anon-a", "event": "browsed"})
    send(api, "alias", {"previousId": "anon-a", "userId": "a1"})
    assert [a["name"] for a in events_of(api, "a1")] == ["browsed"]
    send(api, "track", {"anonymousId": "anon-a", "event": "later"})
    assert [a["name"] for a in events_of(api, "a1")] == ["later", "browsed"]


def test_alias_renames_a_person_whose_new_id_is_free(api: Api) -> None:
    send(api, "identify", {"userId": "old-id", "traits": {"plan": "pro"}})
    send(api, "track", {"userId": "old-id", "event": "kept"})
    cio_id = attributes(api, "old-id")["identifiers"]["cio_id"]
    send(api, "alias", {"previousId": "old-id", "userId": "new-id"})
    customer = attributes(api, "new-id")
    assert customer["identifiers"]["cio_id"] == cio_id
    assert customer["attributes"]["plan"] == "pro"
    assert [a["name"] for a in events_of(api, "new-id")] == ["kept"]
    assert api.attributes("old-id").status_code == 404


def test_alias_merges_into_an_existing_user(api: Api) -> None:
    send(api, "identify", {"userId": "dup", "traits": {"only_old": "x", "plan": "free"}})
    send(api, "identify", {"userId": "main", "traits": {"plan": "pro"}})
    send(api, "alias", {"previousId": "dup", "userId": "main"})
    customer = attributes(api, "main")
    assert customer["attributes"]["only_old"] == "x"
    assert customer["attributes"]["plan"] == "pro"
    assert api.attributes("dup").status_code == 404
    assert any(a["type"] == "merged_customer" for a in api.activities("main"))


def test_alias_needs_both_ids(api: Api) -> None:
    assert strict(api, "alias", {"previousId": "x"}).json()["message"] == "userId is required"
    assert strict(api, "alias", {"userId": "x"}).json()["message"] == "previousId is required"


# -- messageId dedup -------------------------------------------------------------------------------------


def test_a_repeated_message_id_is_acknowledged_and_skipped(api: Api, other_api: Api) -> None:
    body = {"userId": "dd", "event": "once", "messageId": "msg-1"}
    send(api, "track", body)
    send(api, "track", body)
    send(
        api, "batch", {"batch": [{**body, "type": "track"}, {**body, "type": "track", "messageId": "msg-2"}]}
    )
    assert len(events_of(api, "dd")) == 2
    # The dedup key belongs to the workspace.
    send(other_api, "track", body)
    assert len(events_of(other_api, "dd")) == 1


def test_a_run_of_events_in_a_batch_is_deduplicated_and_recorded_once(api: Api) -> None:
    """Consecutive track/page/screen calls with a userId are applied as a set; messageIds repeated in
    the run, or seen before, are skipped; other calls in between keep their place."""
    send(api, "track", {"userId": "runner", "event": "earlier", "messageId": "run-seen"})
    long_id = "r" * 300
    items = [
        {"type": "track", "userId": "runner", "event": "buy", "messageId": "run-1", "properties": {"n": 1}},
        {"type": "track", "userId": "runner", "event": "buy", "messageId": "run-1", "properties": {"n": 2}},
        {"type": "track", "userId": "runner", "event": "again", "messageId": "run-seen"},
        {"type": "page", "userId": "runner", "properties": {"path": "/pricing"}, "messageId": "run-2"},
        {"type": "identify", "userId": "walker", "traits": {"plan": "free"}, "messageId": "run-3"},
        {"type": "screen", "userId": "walker", "name": "home", "messageId": long_id},
        {"type": "screen", "userId": "walker", "name": "home", "messageId": long_id},
        {
            "type": "track",
            "userId": "walker",
            "event": "Device Created or Updated",
            "context": {"device": {"token": "tok-run", "type": "ios"}},
        },
        {"type": "track", "userId": "walker", "event": "buy"},
        {"type": "track", "anonymousId": "anon-run", "event": "browse"},
    ]
    send(api, "batch", {"batch": items})
    # Newest first.
    assert [(a["name"], a["data"].get("n")) for a in events_of(api, "runner")] == [
        ("buy", 1),
        ("earlier", None),
    ]
    assert [a["name"] for a in events_of(api, "runner", "page")] == ["/pricing"]
    assert attributes(api, "walker")["attributes"]["plan"] == "free"
    assert [a["name"] for a in events_of(api, "walker", "screen")] == ["home"]
    assert [a["name"] for a in events_of(api, "walker")] == ["buy"]
    assert [d["id"] for d in attributes(api, "walker")["devices"]] == ["tok-run"]
    # Sent again, the whole batch changes nothing except the call without a messageId.
    send(api, "batch", {"batch": items})
    assert len(events_of(api, "runner")) == 2
    assert [a["name"] for a in events_of(api, "walker")] == ["buy", "buy"]
    assert [a["name"] for a in events_of(api, "walker", "screen")] == ["home"]


def test_a_dropped_message_does_not_burn_its_message_id(api: Api) -> None:
    assert lenient(api, "track", {"userId": "retry", "messageId": "msg-r"}).status_code == 200
    assert api.attributes("retry").status_code == 404
    send(api, "track", {"userId": "retry", "event": "fixed", "messageId": "msg-r"})
    assert [a["name"] for a in events_of(api, "retry")] == ["fixed"]


def test_a_very_long_message_id_still_deduplicates(api: Api) -> None:
    body = {"userId": "long", "event": "once", "messageId": "m" * 500}
    send(api, "track", body)
    send(api, "track", body)
    assert len(events_of(api, "long")) == 1


# -- bodies, limits and strict mode ------------------------------------------------------------------------


def test_gzip_bodies(api: Api) -> None:
    headers = {**STRICT, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    single = gzip.compress(orjson.dumps({"userId": "gz", "traits": {"zipped": True}}))
    assert api.pipelines.post("/v1/identify", content=single, headers=headers).status_code == 200
    batch = gzip.compress(orjson.dumps({"batch": [{"type": "track", "userId": "gz", "event": "zipped"}]}))
    assert api.pipelines.post("/v1/batch", content=batch, headers=headers).status_code == 200
    assert attributes(api, "gz")["attributes"]["zipped"] == "true"
    assert [a["name"] for a in events_of(api, "gz")] == ["zipped"]
    broken = api.pipelines.post("/v1/identify", content=b"not gzip", headers=headers)
    assert broken.status_code == 400


def test_bad_credentials(api: Api) -> None:
    body = {"userId": "intruder", "traits": {"x": 1}}
    for auth in (("cdp_wrong", ""), (api.creds.track_api_key, "")):
        before = warnings_logged(api)
        lax = httpx.post(f"{api.server.base_url}/v1/identify", json=body, auth=auth)
        assert (lax.status_code, lax.content) == (200, b"{}\n")
        assert warnings_logged(api) == before + 1
        refused = httpx.post(f"{api.server.base_url}/v1/identify", json=body, auth=auth, headers=STRICT)
        assert refused.status_code == 401
        assert refused.json()["code"] == "unauthorized"
    missing = httpx.post(f"{api.server.base_url}/v1/track", json=body, headers=STRICT)
    assert missing.status_code == 401
    assert api.attributes("intruder").status_code == 404


def test_malformed_json(api: Api) -> None:
    raw = b'{"userId": "mj", "traits": '
    headers = {"Content-Type": "application/json"}
    before = warnings_logged(api)
    assert api.pipelines.post("/v1/identify", content=raw, headers=headers).content == b"{}\n"
    assert warnings_logged(api) == before + 1
    refused = api.pipelines.post("/v1/identify", content=raw, headers={**headers, **STRICT})
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_input"
    assert "malformed JSON" in refused.json()["message"]
    assert strict(api, "identify", [1, 2]).status_code == 400
    assert strict(api, "batch", {"batch": {"type": "track"}}).status_code == 400
    assert api.attributes("mj").status_code == 404


def test_calls_without_a_person(api: Api) -> None:
    for call, body in [
        ("identify", {"traits": {"plan": "x"}}),
        ("track", {"event": "orphan"}),
        ("page", {"name": "Home"}),
        ("screen", {"name": "Home"}),
    ]:
        assert lenient(api, call, body).content == b"{}\n"
        refused = strict(api, call, body)
        assert refused.status_code == 400, call
        assert "userId" in refused.json()["message"]
    assert api.server.sql(
        "SELECT count(*) FROM events WHERE workspace_id = :w", w=api.creds.workspace_id
    ) == [(0,)]


def test_invalid_fields_are_400_in_strict_mode(api: Api) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("track", {"userId": "v"}, "event is required"),
        (
            "track",
            {"userId": "v", "event": "e", "timestamp": "yesterday"},
            "timestamp must be an ISO-8601 date-time",
        ),
        ("track", {"userId": "v", "event": "e", "properties": [1]}, "properties must be an object"),
        ("track", {"userId": {"id": 1}, "event": "e"}, "userId must be a string"),
        ("track", {"userId": "v" * 151, "event": "e"}, "userId is longer than 150 bytes"),
        (
            "track",
            {"userId": "v", "event": "e", "timestamp": "9999-01-01T00:00:00Z"},
            "timestamp is out of range",
        ),
        ("identify", {"userId": "v", "traits": "plan"}, "traits must be an object"),
        (
            "identify",
            {"userId": "v", "traits": {"createdAt": "soon"}},
            "traits.createdAt must be an ISO-8601 date-time",
        ),
    ]
    for call, body, message in cases:
        refused = strict(api, call, body)
        assert (refused.status_code, refused.json()) == (400, {"code": "invalid_input", "message": message})
        assert lenient(api, call, body).status_code == 200
    assert api.attributes("v").status_code == 404


def test_oversized_requests(api: Api) -> None:
    big = {"userId": "big", "event": "huge", "properties": {"blob": "x" * 33_000}}
    before = warnings_logged(api)
    assert lenient(api, "track", big).content == b"{}\n"
    assert warnings_logged(api) == before + 1
    refused = strict(api, "track", big)
    assert refused.status_code == 413
    assert refused.json()["code"] == "payload_too_large"
    assert api.attributes("big").status_code == 404

    items = [
        {"type": "track", "userId": "big", "event": f"e{i}", "properties": {"blob": "x" * 30_000}}
        for i in range(17)
    ]
    assert strict(api, "batch", {"batch": items}).status_code == 413
    assert lenient(api, "batch", {"batch": items}).status_code == 200
    assert api.attributes("big").status_code == 404


def test_an_oversized_batch_item_is_dropped_alone(api: Api) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "bi", "event": "small"},
            {"type": "track", "userId": "bi", "event": "huge", "properties": {"blob": "x" * 33_000}},
        ]
    }
    refused = strict(api, "batch", batch)
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("1 of 2 messages dropped: batch[1]: message is ")
    assert [a["name"] for a in events_of(api, "bi")] == ["small"]


# -- batch -----------------------------------------------------------------------------------------------


def test_a_batch_with_every_call(api: Api) -> None:
    send(
        api,
        "batch",
        {
            "batch": [
                {"type": "identify", "userId": "b1", "traits": {"plan": "pro"}},
                {"type": "track", "userId": "b1", "event": "bought"},
                {"type": "page", "userId": "b1", "name": "Home"},
                {"type": "screen", "userId": "b1", "name": "Feed"},
                {"type": "group", "userId": "b1", "groupId": "team"},
                {"type": "identify", "userId": "b0", "traits": {"old": True}},
                {"type": "alias", "previousId": "b0", "userId": "b2"},
            ]
        },
    )
    assert attributes(api, "b1")["attributes"]["plan"] == "pro"
    assert {a["type"]: a["name"] for a in api.activities("b1") if a["name"]} == {
        "event": "bought",
        "page": "Home",
        "screen": "Feed",
    }
    assert len(api.app.get("/v1/customers/b1/relationships").json()["cio_relationships"]) == 1
    assert attributes(api, "b2")["attributes"]["old"] == "true"
    send(api, "batch", {"batch": []})


def test_a_mixed_batch_keeps_the_good_items(api: Api) -> None:
    batch = {
        "context": {"device": {"token": "shared-tok", "type": "android"}},
        "batch": [
            {"type": "identify", "userId": "mx", "traits": {"plan": "pro"}},
            {"type": "track", "userId": "mx"},
            {"type": "track", "userId": "mx", "event": "Device Created or Updated"},
            {"type": "teleport", "userId": "mx"},
            "not a message",
            {"type": "Track", "userId": "mx", "event": "kept", "timestamp": "2024-01-01T00:00:00Z"},
        ],
    }
    refused = strict(api, "batch", batch)
    assert refused.status_code == 400
    message = refused.json()["message"]
    assert message.startswith("3 of 6 messages dropped: batch[1]: event is required; batch[3]: type must be")
    assert "batch[4]: a message must be a JSON object" in message

    customer = attributes(api, "mx")
    assert customer["attributes"]["plan"] == "pro"
    # The batch's context reached the item that had none.
    assert [d["id"] for d in customer["devices"]] == ["shared-tok"]
    assert [(a["name"], a["timestamp"]) for a in events_of(api, "mx")] == [("kept", 1704067200)]

    before = warnings_logged(api)
    assert lenient(api, "batch", batch).content == b"{}\n"
    assert warnings_logged(api) == before + 1


def test_an_item_context_wins_over_the_batch_context(api: Api) -> None:
    send(
        api,
        "batch",
        {
            "context": {"device": {"token": "shared", "type": "android"}},
            "batch": [
                {
                    "type": "track",
                    "userId": "ctx",
                    "event": "Device Created or Updated",
                    "context": {"device": {"token": "own", "type": "ios"}},
                }
            ],
        },
    )
    assert [(d["id"], d["platform"]) for d in attributes(api, "ctx")["devices"]] == [("own", "ios")]


def test_batch_events_keep_their_order_and_time(api: Api) -> None:
    now = int(time.time())
    send(
        api,
        "batch",
        {"batch": [{"type": "track", "userId": "order", "event": f"e{i}"} for i in range(5)]},
    )
    events = events_of(api, "order")
    assert [a["name"] for a in events] == ["e4", "e3", "e2", "e1", "e0"]
    assert all(abs(a["timestamp"] - now) < 60 for a in events)


def test_concurrent_twins_are_applied_once(api: Api) -> None:
    body = {"userId": "twin", "event": "once", "messageId": "msg-twin"}

    def post(_: int) -> int:
        with httpx.Client(base_url=api.server.base_url, auth=(api.creds.pipelines_write_key, "")) as client:
            return client.post("/v1/track", json=body, headers=STRICT).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(post, range(24)))
    assert statuses == [200] * 24
    assert len(events_of(api, "twin")) == 1


def test_workspace_limits_and_rate_limits(api: Api) -> None:
    run_cli(
        api.server.database_url,
        "workspace",
        "configure",
        str(api.creds.workspace_id),
        "--set",
        "limits.max_entity_request_bytes=200",
        "--set",
        "limits.max_batch_item_bytes=100",
    )
    padded = {"userId": "wl", "event": "e", "properties": {"pad": "x" * 200}}
    assert strict(api, "track", padded).status_code == 413
    item = {"type": "track", "userId": "wl", "event": "e", "properties": {"pad": "x" * 100}}
    assert strict(api, "batch", {"batch": [item]}).status_code == 400
    send(api, "track", {"userId": "wl", "event": "small"})

    run_cli(
        api.server.database_url,
        "workspace",
        "configure",
        str(api.creds.workspace_id),
        "--set",
        "rate_limits.pipelines=2",
    )
    # A rate limit is no verdict on the data, so it is a 429 even without strict mode.
    statuses = [lenient(api, "track", {"userId": "wl", "event": f"r{i}"}).status_code for i in range(8)]
    assert statuses.count(429) >= 4
    assert set(statuses) == {200, 429}

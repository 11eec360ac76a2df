"""Track API v1: devices, relationships, preferences, forms, metrics, unsubscribe, cio_ identifiers."""

from __future__ import annotations

import time

import httpx

from tests.harness import Api


def test_devices_in_both_body_styles_and_deletion(api: Api) -> None:
    python_style = {"device": {"id": "tok-py", "platform": "ios", "app_version": "1.2", "push_enabled": True}}
    node_style = {
        "device": {
            "id": "tok-node",
            "platform": "android",
            "last_used": 1700000000,
            "attributes": {"device_os": "14"},
        }
    }
    assert api.track.put("/api/v1/customers/d1/devices", json=python_style).status_code == 200
    assert api.track.put("/api/v1/customers/d1/devices", json=node_style).status_code == 200
    devices = {d["id"]: d for d in api.attributes("d1").json()["customer"]["devices"]}
    assert devices["tok-py"]["attributes"] == {"app_version": "1.2", "push_enabled": "true"}
    assert devices["tok-node"]["last_used"] == 1700000000
    assert devices["tok-node"]["attributes"] == {"device_os": "14"}
    assert api.track.delete("/api/v1/customers/d1/devices/tok-py").status_code == 200
    assert [d["id"] for d in api.attributes("d1").json()["customer"]["devices"]] == ["tok-node"]
    bad = api.track.put("/api/v1/customers/d1/devices", json={"device": {"id": "x", "platform": "palm"}})
    assert bad.status_code == 400
    assert bad.json()["meta"]["errors"]


def test_a_device_token_moves_to_its_new_owner(api: Api) -> None:
    api.track.put("/api/v1/customers/first/devices", json={"device": {"id": "shared", "platform": "ios"}})
    api.track.put("/api/v1/customers/second/devices", json={"device": {"id": "shared", "platform": "ios"}})
    assert api.attributes("first").json()["customer"]["devices"] == []
    assert [d["id"] for d in api.attributes("second").json()["customer"]["devices"]] == ["shared"]


def test_relationships_are_added_with_attributes_and_deleted(api: Api) -> None:
    add = {
        "cio_relationships": {
            "action": "add_relationships",
            "relationships": [
                {
                    "identifiers": {"object_type_id": "1", "object_id": "acme"},
                    "relationship_attributes": {"role": "admin"},
                }
            ],
        }
    }
    assert api.track.put("/api/v1/customers/r1", json=add).status_code == 200
    related = api.app.get("/v1/customers/r1/relationships").json()["cio_relationships"]
    assert related[0]["identifiers"]["object_id"] == "acme"
    assert related[0]["relationship_attributes"] == {"role": "admin"}
    assert api.app.get("/v1/objects/1/acme/attributes").status_code == 200
    types = api.app.get("/v1/object_types").json()["types"]
    assert [t["id"] for t in types] == [1]
    people = api.app.get("/v1/objects/1/acme/relationships").json()["cio_relationships"]
    assert people[0]["identifiers"]["id"] == "r1"
    remove = {
        "cio_relationships": {
            "action": "delete_relationships",
            "relationships": [{"identifiers": {"object_type_id": "1", "object_id": "acme"}}],
        }
    }
    api.track.put("/api/v1/customers/r1", json=remove)
    assert api.app.get("/v1/customers/r1/relationships").json()["cio_relationships"] == []


def test_subscription_preferences_merge(api: Api) -> None:
    api.track.put(
        "/api/v1/customers/sp", json={"cio_subscription_preferences": {"topics": {"topic_1": True}}}
    )
    api.track.put(
        "/api/v1/customers/sp", json={"cio_subscription_preferences": {"topics": {"topic_2": False}}}
    )
    prefs = api.attributes("sp").json()["customer"]["attributes"]["cio_subscription_preferences"]
    assert '"topic_1":true' in prefs
    assert '"topic_2":false' in prefs


def test_cio_id_paths_update_existing_people_and_drop_unknown_ones(api: Api) -> None:
    api.track.put("/api/v1/customers/c1", json={"email": "c1@example.com"})
    cio_id = api.attributes("c1").json()["customer"]["identifiers"]["cio_id"]
    assert api.track.put(f"/api/v1/customers/cio_{cio_id}", json={"id": "c1-renamed"}).status_code == 200
    assert api.attributes("c1-renamed").json()["customer"]["identifiers"]["cio_id"] == cio_id
    assert api.track.put("/api/v1/customers/cio_nobody", json={"x": 1}).status_code == 200
    assert api.attributes("nobody", id_type="cio_id").status_code == 404


def test_created_at_and_backdated_events_outside_the_trigger_window(api: Api) -> None:
    api.track.put("/api/v1/customers/old", json={"created_at": 1600000000})
    assert api.attributes("old").json()["customer"]["attributes"]["created_at"] == "1600000000"
    old = int(time.time()) - 4 * 86400
    api.track.post("/api/v1/customers/old/events", json={"name": "backfilled", "timestamp": old})
    api.track.post("/api/v1/customers/old/events", json={"name": "fresh"})
    rows = api.server.sql(
        "SELECT name, can_trigger FROM events WHERE workspace_id = :w ORDER BY name", w=api.creds.workspace_id
    )
    assert [(r[0], bool(r[1])) for r in rows] == [("backfilled", False), ("fresh", True)]


def test_page_and_screen_views(api: Api) -> None:
    api.track.post("/api/v1/customers/pv/events", json={"name": "/pricing", "type": "page"})
    api.track.post("/api/v1/customers/pv/events", json={"name": "Home", "type": "screen"})
    kinds = {a["type"]: a["name"] for a in api.activities("pv") if a["type"] in ("page", "screen")}
    assert kinds == {"page": "/pricing", "screen": "Home"}


def test_invite_events_need_no_person(api: Api) -> None:
    body = {"name": "invite", "data": {"recipient": "friend@example.com"}}
    assert api.track.post("/api/v1/events", json=body).status_code == 200
    rows = api.server.sql(
        "SELECT type, person_id FROM events WHERE workspace_id = :w", w=api.creds.workspace_id
    )
    assert rows == [("invite", None)]


def test_forms_identify_and_answer_204(api: Api) -> None:
    body = {"data": {"email": "lead@example.com", "first_name": "Lee", "form_name": "Newsletter"}}
    response = api.track.post("/api/v1/forms/newsletter/submit", json=body)
    assert response.status_code == 204
    assert response.content == b""
    person = api.app.get("/v1/customers", params={"email": "lead@example.com"}).json()["results"]
    assert len(person) == 1
    attributes = api.attributes("lead@example.com", id_type="email").json()["customer"]["attributes"]
    assert attributes["first_name"] == "Lee"
    assert "form_name" not in attributes
    bad = api.track.post(
        "/api/v1/forms/newsletter/submit", json={"data": {"email": "x@example.com", "age": 3}}
    )
    assert bad.status_code == 400
    both = api.track.post("/api/v1/forms/f/submit", json={"data": {"email": "a@example.com", "id": "a"}})
    assert both.status_code == 400


def test_metrics_and_push_events_are_validated_and_stored(api: Api) -> None:
    ok = api.track.post(
        "/api/v1/metrics",
        json={"delivery_id": "RMehBAAAAXE7r", "metric": "clicked", "href": "https://x.test"},
    )
    assert ok.status_code == 200
    push = api.track.post(
        "/api/v1/push/events", json={"delivery_id": "RMehBAAAAXE7r", "event": "opened", "device_id": "tok"}
    )
    assert push.status_code == 200
    bad = api.track.post("/api/v1/metrics", json={"delivery_id": "x", "metric": "teleported"})
    assert bad.status_code == 400
    rows = api.server.sql(
        "SELECT metric, source, href, device_token FROM delivery_metric_reports"
        " WHERE workspace_id = :w ORDER BY id",
        w=api.creds.workspace_id,
    )
    assert rows == [
        ("clicked", "track_metrics", "https://x.test", None),
        ("opened", "push_events", None, "tok"),
    ]


def test_unsubscribe_by_delivery_needs_no_credentials(api: Api) -> None:
    api.track.put("/api/v1/customers/un", json={"email": "un@example.com"})
    cio_id = api.attributes("un").json()["customer"]["identifiers"]["cio_id"]
    person_id = api.server.sql("SELECT id FROM people WHERE cio_id = :c", c=cio_id)[0][0]
    # Deliveries are made by the messaging layer; here one is laid down directly to receive the click.
    api.server.execute(
        "INSERT INTO deliveries (id, workspace_id, person_id, channel, recipient, created_at) "
        "VALUES ('dlv_0123456789', :w, :p, 'email', 'un@example.com', 1)",
        w=api.creds.workspace_id,
        p=person_id,
    )
    anonymous = httpx.post(f"{api.server.base_url}/unsubscribe/dlv_0123456789", json={"unsubscribe": True})
    assert anonymous.status_code == 200
    assert api.attributes("un").json()["customer"]["unsubscribed"] is True
    assert any(
        a["type"] == "unsubscribed" and a["delivery_id"] == "dlv_0123456789" for a in api.activities("un")
    )
    assert api.track.post("/unsubscribe/!!", json={"unsubscribe": True}).status_code == 400
    assert api.track.post("/unsubscribe/dlv_unknown000", json={"unsubscribe": True}).status_code == 400


def test_region_reports_the_workspace(api: Api) -> None:
    body = api.track.get("/api/v1/accounts/region").json()
    assert body == {"url": api.server.base_url, "region": "us", "environment_id": api.creds.workspace_id}


def test_manual_segment_membership_by_id_type(api: Api) -> None:
    segment = api.app.post("/v1/segments", json={"segment": {"name": "VIP", "description": "manual"}}).json()
    segment_id = segment["segment"]["id"]
    for person in ("v1", "v2"):
        api.track.put(f"/api/v1/customers/{person}", json={"email": f"{person}@example.com"})
    added = api.track.post(
        f"/api/v1/segments/{segment_id}/add_customers", json={"ids": ["v1", "v2", "nobody"]}
    )
    assert added.status_code == 200
    assert api.app.get(f"/v1/segments/{segment_id}/customer_count").json() == {"count": 2}
    removed = api.track.post(
        f"/api/v1/segments/{segment_id}/remove_customers",
        params={"id_type": "email"},
        json={"ids": ["v1@example.com"]},
    )
    assert removed.status_code == 200
    assert api.app.get(f"/v1/segments/{segment_id}/customer_count").json() == {"count": 1}
    too_many = api.track.post(f"/api/v1/segments/{segment_id}/add_customers", json={"ids": ["x"] * 1001})
    assert too_many.status_code == 400
    empty = api.track.post(f"/api/v1/segments/{segment_id}/add_customers", json={"ids": []})
    assert empty.status_code == 400
    unknown = api.track.post("/api/v1/segments/999999/add_customers", json={"ids": ["v1"]})
    assert unknown.status_code == 400


def test_email_path_naming_someone_elses_email_is_an_attribute_update_failure(api: Api) -> None:
    api.track.put("/api/v1/customers/a%40example.com", json={})
    api.track.put("/api/v1/customers/b%40example.com", json={})
    clash = api.track.put("/api/v1/customers/a%40example.com", json={"email": "b@example.com"})
    assert clash.status_code == 200
    assert api.attributes("a@example.com", id_type="email").status_code == 200
    failures = api.activities("a@example.com", id_type="email", type="failed_attribute_change")
    assert len(failures) == 1
    moved = api.track.put("/api/v1/customers/a%40example.com", json={"email": "c@example.com"})
    assert moved.status_code == 200
    assert api.attributes("c@example.com", id_type="email").status_code == 200


def test_nul_in_a_path_identifier_is_400(api: Api) -> None:
    response = api.track.put("/api/v1/customers/a%00b", json={})
    assert response.status_code == 400
    assert "NUL" in response.json()["meta"]["errors"][0]


def test_metrics_need_no_credentials_for_tidings_deliveries(api: Api) -> None:
    api.track.put("/api/v1/customers/m", json={"email": "m@example.com"})
    person_id = api.server.sql(
        "SELECT id FROM people WHERE workspace_id = :w AND customer_id = 'm'", w=api.creds.workspace_id
    )[0][0]
    api.server.execute(
        "INSERT INTO deliveries (id, workspace_id, person_id, channel, recipient, created_at) "
        "VALUES (:d, :w, :p, 'push', 'tok', 1)",
        d=f"dlv_metrics_{api.creds.workspace_id}",
        w=api.creds.workspace_id,
        p=person_id,
    )
    base = api.server.base_url
    delivery = f"dlv_metrics_{api.creds.workspace_id}"
    assert (
        httpx.post(f"{base}/api/v1/metrics", json={"delivery_id": delivery, "metric": "opened"}).status_code
        == 200
    )
    push = httpx.post(f"{base}/api/v1/push/events", json={"delivery_id": delivery, "event": "delivered"})
    assert push.status_code == 200
    rows = api.server.sql(
        "SELECT metric FROM delivery_metric_reports WHERE workspace_id = :w ORDER BY id",
        w=api.creds.workspace_id,
    )
    assert [r[0] for r in rows] == ["opened", "delivered"]
    unknown = httpx.post(
        f"{base}/api/v1/metrics", json={"delivery_id": "dlv_nobody_knows", "metric": "opened"}
    )
    assert unknown.status_code == 400
    assert "send Track credentials" in unknown.json()["meta"]["errors"][0]


def test_one_click_unsubscribe_needs_no_json(api: Api) -> None:
    api.track.put("/api/v1/customers/oc", json={"email": "oc@example.com"})
    person_id = api.server.sql(
        "SELECT id FROM people WHERE workspace_id = :w AND customer_id = 'oc'", w=api.creds.workspace_id
    )[0][0]
    delivery = f"dlv_oneclick_{api.creds.workspace_id}"
    api.server.execute(
        "INSERT INTO deliveries (id, workspace_id, person_id, channel, recipient, created_at) "
        "VALUES (:d, :w, :p, 'email', 'oc@example.com', 1)",
        d=delivery,
        w=api.creds.workspace_id,
        p=person_id,
    )
    response = httpx.post(
        f"{api.server.base_url}/unsubscribe/{delivery}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert api.attributes("oc").json()["customer"]["unsubscribed"] is True

"""App API reads and manual segments."""

from __future__ import annotations

from tests.harness import Api


def test_bulk_attributes_skip_unknown_people(api: Api) -> None:
    api.track.put("/api/v1/customers/b1", json={"email": "b1@example.com", "score": 7})
    api.track.put("/api/v1/customers/b2", json={"flag": True})
    response = api.app.post("/v1/customers/attributes", json={"ids": ["b1", "missing", "b2"]})
    assert response.status_code == 200
    customers = [c["customer"] for c in response.json()["customers"]]
    assert [c["id"] for c in customers] == ["b1", "b2"]
    assert customers[0]["attributes"]["score"] == "7"
    assert customers[1]["attributes"]["flag"] == "true"
    by_email = api.app.post(
        "/v1/customers/attributes", params={"id_type": "email"}, json={"ids": ["b1@example.com"]}
    )
    assert [c["customer"]["id"] for c in by_email.json()["customers"]] == ["b1"]
    assert api.app.post("/v1/customers/attributes", json={"ids": []}).status_code == 400
    assert api.app.post("/v1/customers/attributes", json={"ids": ["x"] * 101}).status_code == 400


def test_attributes_by_each_id_type(api: Api) -> None:
    api.track.put("/api/v1/customers/t1", json={"email": "t1@example.com"})
    cio_id = api.attributes("t1").json()["customer"]["identifiers"]["cio_id"]
    assert api.attributes("t1@example.com", id_type="email").json()["customer"]["id"] == "t1"
    assert api.attributes(cio_id, id_type="cio_id").json()["customer"]["id"] == "t1"
    assert api.attributes("t1@example.com").status_code == 404


def test_activities_paginate_newest_first_and_filter(api: Api) -> None:
    for index in range(5):
        api.track.post("/api/v1/customers/act/events", json={"name": f"e{index}"})
    first = api.app.get("/v1/customers/act/activities", params={"type": "event", "limit": 2}).json()
    assert [a["name"] for a in first["activities"]] == ["e4", "e3"]
    second = api.app.get(
        "/v1/customers/act/activities", params={"type": "event", "limit": 2, "start": first["next"]}
    ).json()
    assert [a["name"] for a in second["activities"]] == ["e2", "e1"]
    named = api.activities("act", name="e0")
    assert [a["name"] for a in named] == ["e0"]
    assert all(a["customer_identifiers"]["id"] == "act" for a in first["activities"])
    bad_cursor = api.app.get("/v1/customers/act/activities", params={"start": "not-a-cursor"})
    assert bad_cursor.status_code == 400


def test_manual_segments_lifecycle(api: Api) -> None:
    created = api.app.post(
        "/v1/segments", json={"segment": {"name": "Beta testers", "description": "hand-picked"}}
    )
    assert created.status_code == 200
    segment = created.json()["segment"]
    assert segment["type"] == "manual"
    assert segment["name"] == "Beta testers"
    assert segment["deduplicate_id"] == f"{segment['id']}:{segment['updated_at']}"
    fetched = api.app.get(f"/v1/segments/{segment['id']}").json()["segment"]
    assert fetched["description"] == "hand-picked"
    assert [s["id"] for s in api.app.get("/v1/segments").json()["segments"]] == [segment["id"]]
    assert api.app.delete(f"/v1/segments/{segment['id']}").status_code == 200
    gone = api.app.get(f"/v1/segments/{segment['id']}")
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["status"] == "404"
    invalid = api.app.post("/v1/segments", json={"segment": {"description": "no name"}})
    assert invalid.status_code == 400
    assert "segment.name" in invalid.json()["errors"][0]["detail"]


def test_segments_of_one_workspace_are_invisible_to_another(api: Api, other_api: Api) -> None:
    segment_id = api.app.post("/v1/segments", json={"segment": {"name": "Mine"}}).json()["segment"]["id"]
    assert other_api.app.get(f"/v1/segments/{segment_id}").status_code == 404
    assert other_api.app.delete(f"/v1/segments/{segment_id}").status_code == 404
    other_api.track.put("/api/v1/customers/intruder", json={})
    sneaky = other_api.track.post(f"/api/v1/segments/{segment_id}/add_customers", json={"ids": ["intruder"]})
    assert sneaky.status_code == 400
    assert api.app.get(f"/v1/segments/{segment_id}/customer_count").json() == {"count": 0}


def test_openapi_document_and_docs_are_published(api: Api) -> None:
    document = api.app.get("/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/api/v1/customers/{identifier}",
        "/api/v1/merge_customers",
        "/unsubscribe/{delivery_id}",
        "/v1/customers/{identifier}/attributes",
        "/v1/segments",
    ):
        assert path in paths
    identify = paths["/api/v1/customers/{identifier}"]["put"]
    assert "requestBody" in identify
    assert "<html" in api.app.get("/docs").text.lower()


def test_keys_of_one_workspace_cannot_touch_another_on_any_surface(api: Api, other_api: Api) -> None:
    other_api.track.put("/api/v1/customers/target", json={"owner": "other"})
    # Track v2 with this workspace's keys writes only here, even for the same identifier.
    entity = {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": "target"},
        "attributes": {"owner": "me"},
    }
    assert api.track.post("/api/v2/entity", json=entity).status_code == 200
    # Pipelines with this workspace's write key, likewise.
    strict = {"X-Strict-Mode": "1"}
    pipeline = {"userId": "target", "traits": {"via": "pipelines"}}
    assert api.pipelines.post("/v1/identify", json=pipeline, headers=strict).status_code == 200
    theirs = other_api.attributes("target").json()["customer"]["attributes"]
    assert theirs["owner"] == "other"
    assert "via" not in theirs
    assert api.attributes("target").json()["customer"]["attributes"]["via"] == "pipelines"
    # Deleting through one workspace leaves the other's person alone.
    assert api.track.delete("/api/v1/customers/target").status_code == 200
    assert other_api.attributes("target").status_code == 200
    # A key of the other workspace paired with this site id is refused on every surface.
    mixed = (api.creds.site_id, other_api.creds.track_api_key)
    assert api.track.post("/api/v2/entity", json=entity, auth=mixed).status_code == 401
    assert api.app.get("/v1/customers/target/attributes").status_code == 404
    activities = other_api.activities("target")
    assert all(a["customer_identifiers"]["id"] == "target" for a in activities)
    assert not any(a["data"].get("changes", {}).get("owner", {}).get("to") == "me" for a in activities)

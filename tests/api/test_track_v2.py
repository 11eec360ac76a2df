"""Track API v2 (``/api/v2/entity`` and ``/api/v2/batch``) over HTTP, read back through the App API."""

from __future__ import annotations

import gzip
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import Api

Entity = dict[str, Any]


def person(ident: dict[str, str], action: str, **extra: Any) -> Entity:
    return {"type": "person", "identifiers": ident, "action": action, **extra}


def obj(type_id: str, object_id: str, action: str, **extra: Any) -> Entity:
    identifiers = {"object_type_id": type_id, "object_id": object_id}
    return {"type": "object", "identifiers": identifiers, "action": action, **extra}


def send(api: Api, entity: Any) -> httpx.Response:
    return api.track.post("/api/v2/entity", json=entity)


def accepted(api: Api, entity: Entity) -> None:
    response = send(api, entity)
    assert response.status_code == 200, response.text
    assert response.content == b"{}\n"


def refused(response: httpx.Response, field: str, status: int = 400) -> dict[str, str]:
    assert response.status_code == status, response.text
    errors: list[dict[str, str]] = response.json()["errors"]
    assert len(errors) == 1
    assert errors[0]["field"] == field
    assert errors[0]["reason"]
    assert errors[0]["message"]
    return errors[0]


def customer(api: Api, identifier: str, id_type: str = "id") -> dict[str, Any]:
    response = api.attributes(identifier, id_type)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["customer"]
    return found


def person_relationships(api: Api, identifier: str) -> list[dict[str, Any]]:
    response = api.app.get(f"/v1/customers/{identifier}/relationships")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["cio_relationships"]
    return rows


def object_people(api: Api, type_id: str, object_id: str) -> list[dict[str, Any]]:
    response = api.app.get(f"/v1/objects/{type_id}/{object_id}/relationships")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["cio_relationships"]
    return rows


def object_attributes(api: Api, type_id: str, object_id: str) -> dict[str, Any]:
    response = api.app.get(f"/v1/objects/{type_id}/{object_id}/attributes")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["object"]
    return found


# -- people ------------------------------------------------------------------------------------------


def test_identify_creates_and_updates_a_person(api: Api) -> None:
    accepted(api, person({"id": "42"}, "identify", attributes={"email": "ana@example.com", "plan": "pro"}))
    accepted(api, person({"email": "ANA@example.com"}, "identify", attributes={"plan": "team", "seats": 3}))
    found = customer(api, "42")
    assert found["identifiers"]["email"] == "ana@example.com"
    assert found["attributes"]["plan"] == "team"
    assert found["attributes"]["seats"] == "3"
    accepted(api, person({"id": "42"}, "identify", attributes={"seats": None}))
    assert "seats" not in customer(api, "42")["attributes"]


def test_identify_with_update_only_never_creates(api: Api) -> None:
    accepted(api, person({"id": "ghost"}, "identify", attributes={"_update": True, "x": 1}))
    assert api.attributes("ghost").status_code == 404
    accepted(api, person({"id": "real"}, "identify"))
    accepted(api, person({"id": "real"}, "identify", attributes={"_update": True, "x": 1}))
    assert customer(api, "real")["attributes"]["x"] == "1"


def test_identify_timestamp_orders_updates(api: Api) -> None:
    accepted(api, person({"id": "t"}, "identify", timestamp=2000, attributes={"plan": "new"}))
    accepted(api, person({"id": "t"}, "identify", timestamp=1000, attributes={"plan": "old"}))
    found = customer(api, "t")
    assert found["attributes"]["plan"] == "new"
    assert found["timestamps"]["plan"] == 2000


def test_identify_by_cio_id_updates_and_never_creates(api: Api) -> None:
    accepted(api, person({"id": "c1"}, "identify"))
    cio_id = customer(api, "c1")["identifiers"]["cio_id"]
    accepted(api, person({"cio_id": cio_id}, "identify", attributes={"id": "c1-renamed", "tier": "gold"}))
    renamed = customer(api, "c1-renamed")
    assert renamed["identifiers"]["cio_id"] == cio_id
    assert renamed["attributes"]["tier"] == "gold"
    accepted(api, person({"cio_id": "nobody"}, "identify", attributes={"x": 1}))
    assert api.attributes("nobody", id_type="cio_id").status_code == 404


def test_identify_sets_subscription_preferences(api: Api) -> None:
    prefs = {"topics": {"topic_1": True, "topic_2": False}}
    accepted(api, person({"id": "sp"}, "identify", attributes={"cio_subscription_preferences": prefs}))
    stored = orjson.loads(customer(api, "sp")["attributes"]["cio_subscription_preferences"])
    assert stored == prefs


def test_identify_relates_the_objects_in_cio_relationships(api: Api) -> None:
    relationships = [
        {
            "identifiers": {"object_type_id": "1", "object_id": "acme"},
            "relationship_attributes": {"role": "admin"},
        },
        {"identifiers": {"object_type_id": "2", "object_id": "course-9"}},
    ]
    accepted(api, person({"id": "r1"}, "identify", cio_relationships=relationships))
    related = {row["identifiers"]["object_id"]: row for row in person_relationships(api, "r1")}
    assert set(related) == {"acme", "course-9"}
    assert related["acme"]["relationship_attributes"] == {"role": "admin"}
    assert [row["identifiers"]["id"] for row in object_people(api, "1", "acme")] == ["r1"]


def test_delete_removes_the_person(api: Api) -> None:
    accepted(api, person({"id": "gone"}, "identify", attributes={"a": 1}))
    accepted(api, person({"id": "gone"}, "delete"))
    assert api.attributes("gone").status_code == 404
    accepted(api, person({"id": "never-existed"}, "delete"))


@pytest.mark.parametrize("action", ["event", "page", "screen"])
def test_events_pages_and_screens_carry_their_attributes(api: Api, action: str) -> None:
    when = int(time.time()) - 60
    event = person(
        {"id": "ev"},
        action,
        name="viewed",
        id="01HZY3V6M9J5R8QK2T4W6X8Y0Z",
        timestamp=when,
        attributes={"path": "/pricing", "price": 9},
    )
    accepted(api, event)
    accepted(api, event)
    rows = [a for a in api.activities("ev") if a["type"] == action]
    assert len(rows) == 1, "an event id is a dedup key"
    assert rows[0]["name"] == "viewed"
    assert rows[0]["timestamp"] == when
    assert rows[0]["data"]["path"] == "/pricing"
    assert rows[0]["data"]["price"] == 9


def test_an_event_needs_a_name(api: Api) -> None:
    refused(send(api, person({"id": "ev"}, "event", attributes={"a": 1})), "name")
    refused(send(api, person({"id": "ev"}, "event", name="x", attributes=[1])), "attributes")
    assert api.attributes("ev").status_code == 404


def test_person_add_and_delete_relationships(api: Api) -> None:
    acme = {"object_type_id": "1", "object_id": "acme"}
    add = person(
        {"id": "rel"},
        "add_relationships",
        cio_relationships=[{"identifiers": acme, "relationship_attributes": {"role": "admin", "seat": 1}}],
    )
    accepted(api, add)
    rows = person_relationships(api, "rel")
    assert [row["identifiers"]["object_id"] for row in rows] == ["acme"]
    assert rows[0]["relationship_attributes"] == {"role": "admin", "seat": 1}
    update = person(
        {"id": "rel"},
        "add_relationships",
        cio_relationships=[{"identifiers": acme, "relationship_attributes": {"seat": None, "role": ""}}],
    )
    accepted(api, update)
    assert person_relationships(api, "rel")[0]["relationship_attributes"] == {}
    accepted(api, person({"id": "rel"}, "delete_relationships", cio_relationships=[{"identifiers": acme}]))
    assert person_relationships(api, "rel") == []
    assert object_attributes(api, "1", "acme")["identifiers"]["object_id"] == "acme"
    types = [a["type"] for a in api.activities("rel")]
    assert "add_relationship" in types
    assert "delete_relationship" in types


def test_person_relationships_need_a_list(api: Api) -> None:
    refused(send(api, person({"id": "rel"}, "add_relationships")), "cio_relationships")
    bad_ref = [{"identifiers": {"object_id": "acme"}}]
    refused(
        send(api, person({"id": "rel"}, "add_relationships", cio_relationships=bad_ref)),
        "cio_relationships[0].identifiers",
    )
    assert api.attributes("rel").status_code == 404


def test_add_and_delete_device_by_token(api: Api) -> None:
    device = {
        "token": "tok-1",
        "platform": "ios",
        "last_used": 1700000000,
        "attributes": {"device_os": "17", "push_enabled": "true"},
    }
    accepted(api, person({"id": "dev"}, "add_device", device=device))
    accepted(api, person({"id": "dev"}, "add_device", device={"token": "tok-2", "platform": "android"}))
    devices = {d["id"]: d for d in customer(api, "dev")["devices"]}
    assert set(devices) == {"tok-1", "tok-2"}
    assert devices["tok-1"]["platform"] == "ios"
    assert devices["tok-1"]["last_used"] == 1700000000
    assert devices["tok-1"]["attributes"] == {"device_os": "17", "push_enabled": "true"}
    accepted(api, person({"id": "dev"}, "delete_device", device={"token": "tok-1"}))
    assert [d["id"] for d in customer(api, "dev")["devices"]] == ["tok-2"]


def test_devices_are_validated(api: Api) -> None:
    refused(
        send(api, person({"id": "dev"}, "add_device", device={"id": "v1-style", "platform": "ios"})),
        "device.token",
    )
    refused(
        send(api, person({"id": "dev"}, "add_device", device={"token": "t", "platform": "palm"})),
        "device.platform",
    )
    refused(send(api, person({"id": "dev"}, "add_device")), "device")
    refused(send(api, person({"id": "dev"}, "delete_device", device={})), "device.token")
    assert api.attributes("dev").status_code == 404


def test_merge_moves_data_into_the_primary(api: Api) -> None:
    accepted(api, person({"id": "p"}, "identify", attributes={"email": "p@example.com", "tier": "gold"}))
    accepted(api, person({"id": "s"}, "identify", attributes={"city": "Oslo", "tier": "silver"}))
    accepted(api, person({"id": "s"}, "add_device", device={"token": "tok-s", "platform": "ios"}))
    accepted(
        api,
        {
            "type": "person",
            "action": "merge",
            "primary": {"email": "p@example.com"},
            "secondary": {"id": "s"},
        },
    )
    merged = customer(api, "p")
    assert merged["attributes"]["tier"] == "gold"
    assert merged["attributes"]["city"] == "Oslo"
    assert [d["id"] for d in merged["devices"]] == ["tok-s"]
    assert api.attributes("s").status_code == 404
    refused(send(api, {"type": "person", "action": "merge", "primary": {"id": "p"}}), "secondary")
    refused(
        send(
            api,
            {
                "type": "person",
                "action": "merge",
                "primary": {"id": "p", "email": "x"},
                "secondary": {"id": "q"},
            },
        ),
        "primary",
    )


def test_suppress_refuses_the_identifier_until_unsuppressed(api: Api) -> None:
    accepted(api, person({"id": "sup"}, "identify", attributes={"email": "sup@example.com"}))
    accepted(api, person({"id": "sup"}, "suppress"))
    assert api.attributes("sup").status_code == 404
    error = refused(send(api, person({"email": "sup@example.com"}, "identify")), "")
    assert error["reason"] == "suppressed"
    accepted(api, person({"email": "sup@example.com"}, "unsuppress"))
    accepted(api, person({"id": "sup"}, "identify", attributes={"back": True}))
    assert customer(api, "sup")["attributes"]["back"] == "true"


# -- objects -----------------------------------------------------------------------------------------


def test_object_identify_creates_and_updates(api: Api) -> None:
    accepted(api, obj("1", "acme", "identify", attributes={"name": "Acme", "seats": 50}))
    accepted(api, obj("1", "acme", "identify", attributes={"seats": 60, "plan": None}))
    found = object_attributes(api, "1", "acme")
    assert found["attributes"] == {"name": "Acme", "seats": "60"}
    cio_object_id = found["identifiers"]["cio_object_id"]
    by_cio = {"type": "object", "identifiers": {"cio_object_id": cio_object_id}, "action": "identify"}
    accepted(api, {**by_cio, "attributes": {"name": "Acme Inc"}})
    assert object_attributes(api, "1", "acme")["attributes"]["name"] == "Acme Inc"
    accepted(api, {**by_cio, "identifiers": {"cio_object_id": "unknown"}, "attributes": {"x": 1}})
    missing = api.app.get("/v1/objects/1/unknown/attributes", params={"id_type": "cio_object_id"})
    assert missing.status_code == 404


def test_object_identify_relates_people_and_creates_new_ones(api: Api) -> None:
    accepted(api, person({"id": "known"}, "identify"))
    relationships = [
        {"identifiers": {"id": "known"}, "relationship_attributes": {"role": "owner"}},
        {"identifiers": {"email": "new@example.com"}},
    ]
    accepted(api, obj("1", "acme", "identify", attributes={"name": "Acme"}, cio_relationships=relationships))
    people = {
        row["identifiers"]["id"] or row["identifiers"]["email"]: row
        for row in object_people(api, "1", "acme")
    }
    assert set(people) == {"known", "new@example.com"}
    assert people["known"]["relationship_attributes"] == {"role": "owner"}
    assert customer(api, "new@example.com", "email")["identifiers"]["email"] == "new@example.com"


def test_object_identify_anonymous_relates_the_linked_person(api: Api) -> None:
    accepted(api, person({"id": "visitor"}, "identify", attributes={"anonymous_id": "anon-1"}))
    relationships = [
        {"identifiers": {"anonymous_id": "anon-1"}, "relationship_attributes": {"source": "cart"}},
        {"identifiers": {"anonymous_id": "anon-nobody"}},
    ]
    accepted(
        api,
        obj("3", "cart-7", "identify_anonymous", attributes={"total": 12}, cio_relationships=relationships),
    )
    assert object_attributes(api, "3", "cart-7")["attributes"] == {"total": "12"}
    rows = object_people(api, "3", "cart-7")
    assert [row["identifiers"]["id"] for row in rows] == ["visitor"]
    assert rows[0]["relationship_attributes"] == {"source": "cart"}
    # The relationship for an anonymous id nobody has been identified with waits, and applies on identify.
    accepted(api, person({"id": "latecomer"}, "identify", attributes={"anonymous_id": "anon-nobody"}))
    assert [row["identifiers"]["object_id"] for row in person_relationships(api, "latecomer")] == ["cart-7"]
    bad = [{"identifiers": {"id": "visitor"}}]
    refused(
        send(api, obj("3", "cart-7", "identify_anonymous", cio_relationships=bad)),
        "cio_relationships[0].identifiers",
    )


def test_object_delete_drops_its_relationships(api: Api) -> None:
    accepted(api, obj("1", "doomed", "identify", cio_relationships=[{"identifiers": {"id": "member"}}]))
    assert [row["identifiers"]["object_id"] for row in person_relationships(api, "member")] == ["doomed"]
    accepted(api, obj("1", "doomed", "delete"))
    assert api.app.get("/v1/objects/1/doomed/attributes").status_code == 404
    assert person_relationships(api, "member") == []
    assert customer(api, "member")["identifiers"]["id"] == "member"


def test_object_add_and_delete_relationships(api: Api) -> None:
    add = obj(
        "1",
        "team",
        "add_relationships",
        cio_relationships=[
            {"identifiers": {"id": "a"}, "relationship_attributes": {"role": "lead"}},
            {"identifiers": {"email": "b@example.com"}},
        ],
    )
    accepted(api, add)
    assert object_attributes(api, "1", "team")["identifiers"]["object_id"] == "team"
    assert len(object_people(api, "1", "team")) == 2
    assert person_relationships(api, "a")[0]["relationship_attributes"] == {"role": "lead"}
    b_cio = customer(api, "b@example.com", "email")["identifiers"]["cio_id"]
    remove = obj("1", "team", "delete_relationships", cio_relationships=[{"identifiers": {"cio_id": b_cio}}])
    accepted(api, remove)
    assert [row["identifiers"]["id"] for row in object_people(api, "1", "team")] == ["a"]
    refused(send(api, obj("1", "team", "add_relationships")), "cio_relationships")
    two_ids = [{"identifiers": {"id": "a", "email": "a@example.com"}}]
    refused(
        send(api, obj("1", "team", "delete_relationships", cio_relationships=two_ids)),
        "cio_relationships[0].identifiers",
    )


@pytest.mark.parametrize(
    "identifiers",
    [
        {"object_type_id": "1"},
        {"object_id": "acme"},
        {"object_type_id": "1", "object_id": "acme", "cio_object_id": "x"},
        {},
        "acme",
    ],
)
def test_object_identifiers_are_one_shape_or_the_other(api: Api, identifiers: Any) -> None:
    entity = {"type": "object", "identifiers": identifiers, "action": "identify", "attributes": {"a": 1}}
    refused(send(api, entity), "identifiers")
    assert api.app.get("/v1/object_types").json()["types"] == []


def test_object_attribute_limits_are_enforced(api: Api) -> None:
    error = refused(
        send(api, obj("1", "big", "identify", attributes={"note": "x" * 1001})), "attributes.note"
    )
    assert "1000 bytes" in error["message"]
    assert api.app.get("/v1/objects/1/big/attributes").status_code == 404


# -- deliveries --------------------------------------------------------------------------------------


def delivery(name: str, **attributes: Any) -> Entity:
    return {
        "type": "delivery",
        "identifiers": {"id": "RMehBAAAAXE7r"},
        "action": "event",
        "name": name,
        "attributes": attributes,
    }


def test_delivery_events_are_stored_as_push_metrics(api: Api) -> None:
    for name in ("delivered", "opened", "converted"):
        accepted(api, delivery(name, device_token="tok-9"))
    rows = api.server.sql(
        "SELECT delivery_id, metric, device_token FROM delivery_metric_reports"
        " WHERE workspace_id = :w ORDER BY id",
        w=api.creds.workspace_id,
    )
    assert [tuple(row) for row in rows] == [
        ("RMehBAAAAXE7r", "delivered", "tok-9"),
        ("RMehBAAAAXE7r", "opened", "tok-9"),
        ("RMehBAAAAXE7r", "converted", "tok-9"),
    ]


def test_delivery_events_are_validated(api: Api) -> None:
    refused(send(api, delivery("clicked", device_token="t")), "name")
    refused(send(api, delivery("opened")), "attributes.device_token")
    refused(
        send(api, {**delivery("opened", device_token="t"), "identifiers": {"email": "a@b.c"}}), "identifiers"
    )
    rows = api.server.sql(
        "SELECT id FROM delivery_metric_reports WHERE workspace_id = :w", w=api.creds.workspace_id
    )
    assert rows == []


# -- the envelope ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "field"),
    [
        ({"type": "robot", "identifiers": {"id": "1"}, "action": "identify"}, "type"),
        ({"identifiers": {"id": "1"}, "action": "identify"}, "type"),
        ({"type": "person", "identifiers": {"id": "1"}}, "action"),
        ({"type": "person", "identifiers": {"id": "1"}, "action": "identify_anonymous"}, "action"),
        (
            {"type": "object", "identifiers": {"object_type_id": "1", "object_id": "a"}, "action": "event"},
            "action",
        ),
        (
            {"type": "object", "identifiers": {"object_type_id": "1", "object_id": "a"}, "action": "merge"},
            "action",
        ),
        ({"type": "delivery", "identifiers": {"id": "d"}, "action": "identify"}, "action"),
        ({"type": "person", "action": "identify"}, "identifiers"),
        ({"type": "person", "identifiers": {}, "action": "identify"}, "identifiers"),
        (
            {"type": "person", "identifiers": {"id": "1", "email": "a@b.c"}, "action": "identify"},
            "identifiers",
        ),
        ({"type": "person", "identifiers": {"user_id": "1"}, "action": "identify"}, "identifiers"),
        ({"type": "person", "identifiers": {"id": ["1"]}, "action": "identify"}, "identifiers.id"),
        (
            {"type": "person", "identifiers": {"phone": "+15555550100"}, "action": "identify"},
            "identifiers.phone",
        ),
        (
            {"type": "person", "identifiers": {"id": "1"}, "action": "identify", "attributes": "x"},
            "attributes",
        ),
        (
            {"type": "person", "identifiers": {"id": "1"}, "action": "identify", "timestamp": "noon"},
            "timestamp",
        ),
    ],
)
def test_invalid_entities_are_400_with_the_field(api: Api, entity: Entity, field: str) -> None:
    error = refused(send(api, entity), field)
    assert error["reason"] == "invalid_input"
    assert api.attributes("1").status_code == 404


def test_phone_identifiers_are_refused_clearly(api: Api) -> None:
    error = refused(send(api, person({"phone": "+15555550100"}, "identify")), "identifiers.phone")
    assert "phone" in error["message"]
    assert "id, email or cio_id" in error["message"]


@pytest.mark.parametrize("path", ["/api/v2/entity", "/api/v2/batch"])
def test_malformed_json_and_non_objects_are_400(api: Api, path: str) -> None:
    broken = api.track.post(path, content=b'{"type": "person', headers={"content-type": "application/json"})
    assert "malformed JSON" in refused(broken, "")["message"]
    refused(api.track.post(path, json=[{"type": "person"}]), "")
    refused(api.track.post(path, content=b"", headers={"content-type": "application/json"}), "")


@pytest.mark.parametrize("path", ["/api/v2/entity", "/api/v2/batch"])
def test_bad_credentials_are_401(api: Api, path: str) -> None:
    body = {"batch": []} if path.endswith("batch") else person({"id": "x"}, "identify")
    wrong = api.track.post(path, json=body, auth=(api.creds.site_id, "nope"))
    assert wrong.status_code == 401
    assert wrong.json()["errors"][0]["reason"] == "unauthorized"
    missing = httpx.post(f"{api.server.base_url}{path}", json=body)
    assert missing.status_code == 401
    assert api.attributes("x").status_code == 404


def test_an_entity_over_32kb_is_413(api: Api) -> None:
    big = person({"id": "big"}, "identify", attributes={f"a{i}": "x" * 900 for i in range(40)})
    error = refused(send(api, big), "", status=413)
    assert error["reason"] == "payload_too_large"
    assert api.attributes("big").status_code == 404


def test_a_gzipped_entity_is_accepted(api: Api) -> None:
    body = gzip.compress(orjson.dumps(person({"id": "gz"}, "identify", attributes={"z": 1})))
    response = api.track.post(
        "/api/v2/entity",
        content=body,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 200
    assert customer(api, "gz")["attributes"]["z"] == "1"


# -- batches -----------------------------------------------------------------------------------------


def batch(api: Api, items: list[Any]) -> httpx.Response:
    return api.track.post("/api/v2/batch", json={"batch": items})


def test_a_valid_batch_of_mixed_types_is_200(api: Api) -> None:
    items = [
        person({"id": "42"}, "identify", attributes={"first_name": "Jane", "plan": "premium"}),
        obj("1", "acme", "identify", attributes={"name": "Acme Corp", "seats": 50}),
        obj(
            "1",
            "acme",
            "add_relationships",
            cio_relationships=[{"identifiers": {"id": "42"}, "relationship_attributes": {"role": "admin"}}],
        ),
        person({"id": "42"}, "event", name="signed_up", attributes={"via": "batch"}),
        delivery("opened", device_token="tok"),
    ]
    response = batch(api, items)
    assert response.status_code == 200
    assert response.content == b"{}\n"
    assert customer(api, "42")["attributes"]["plan"] == "premium"
    assert object_attributes(api, "1", "acme")["attributes"]["name"] == "Acme Corp"
    assert person_relationships(api, "42")[0]["relationship_attributes"] == {"role": "admin"}
    assert [a["name"] for a in api.activities("42", type="event")] == ["signed_up"]


def test_later_items_see_earlier_ones_in_the_same_batch(api: Api) -> None:
    items = [
        person({"id": "seq"}, "identify", attributes={"step": 1}),
        person({"id": "seq"}, "identify", attributes={"step": 2}),
        person({"id": "seq"}, "add_device", device={"token": "tok-seq", "platform": "ios"}),
        person({"id": "seq"}, "delete_device", device={"token": "tok-seq"}),
    ]
    assert batch(api, items).status_code == 200
    found = customer(api, "seq")
    assert found["attributes"]["step"] == "2"
    assert found["devices"] == []


def test_a_partly_invalid_batch_is_207_and_keeps_the_valid_items(api: Api) -> None:
    items = [
        person({"id": "ok-1"}, "identify", attributes={"n": 1}),
        person({"id": "bad"}, "event", attributes={"no": "name"}),
        obj("1", "acme", "identify", attributes={"name": "Acme"}),
        {"type": "object", "identifiers": {"object_type_id": "1", "object_id": "acme"}, "action": "event"},
        "not an entity",
        person({"id": "ok-2"}, "identify", attributes={"n": 2}),
        person({"phone": "+15555550100"}, "identify"),
    ]
    response = batch(api, items)
    assert response.status_code == 207
    errors = response.json()["errors"]
    assert [(e["batch_index"], e["field"]) for e in errors] == [
        (1, "name"),
        (3, "action"),
        (4, ""),
        (6, "identifiers.phone"),
    ]
    assert all(e["reason"] == "invalid_input" and e["message"] for e in errors)
    assert customer(api, "ok-1")["attributes"]["n"] == "1"
    assert customer(api, "ok-2")["attributes"]["n"] == "2"
    assert object_attributes(api, "1", "acme")["attributes"] == {"name": "Acme"}
    assert api.attributes("bad").status_code == 404


def test_an_item_failing_in_the_database_rolls_back_only_itself(api: Api) -> None:
    """The middle item creates a person, then fails on a relationship attribute: none of it stays."""
    items = [
        person({"id": "before"}, "identify"),
        obj(
            "1",
            "club",
            "add_relationships",
            cio_relationships=[
                {"identifiers": {"id": "half-made"}},
                {"identifiers": {"id": "also"}, "relationship_attributes": {"bio": "x" * 1001}},
            ],
        ),
        person({"id": "after"}, "identify"),
        person({"email": "suppressed@example.com"}, "identify"),
    ]
    accepted(api, person({"email": "suppressed@example.com"}, "suppress"))
    response = batch(api, items)
    assert response.status_code == 207
    errors = response.json()["errors"]
    assert [(e["batch_index"], e["reason"]) for e in errors] == [(1, "invalid_input"), (3, "suppressed")]
    assert errors[0]["field"] == "relationship_attributes.bio"
    assert customer(api, "before")["identifiers"]["id"] == "before"
    assert customer(api, "after")["identifiers"]["id"] == "after"
    assert api.attributes("half-made").status_code == 404
    assert api.app.get("/v1/objects/1/club/attributes").status_code == 404


def test_a_batch_with_only_invalid_items_is_207(api: Api) -> None:
    response = batch(api, [{"type": "person"}, {}])
    assert response.status_code == 207
    assert [e["batch_index"] for e in response.json()["errors"]] == [0, 1]


def test_an_empty_batch_is_200(api: Api) -> None:
    response = batch(api, [])
    assert response.status_code == 200
    assert response.content == b"{}\n"


@pytest.mark.parametrize("body", [{}, {"batch": {"type": "person"}}, {"batch": None}, {"items": []}])
def test_a_batch_without_a_list_is_400(api: Api, body: dict[str, Any]) -> None:
    refused(api.track.post("/api/v2/batch", json=body), "batch")


def test_a_batch_item_over_32kb_is_refused_alone(api: Api) -> None:
    big = person({"id": "big"}, "identify", attributes={f"a{i}": "x" * 900 for i in range(40)})
    response = batch(api, [person({"id": "small"}, "identify"), big])
    assert response.status_code == 207
    [error] = response.json()["errors"]
    assert error["batch_index"] == 1
    assert error["reason"] == "payload_too_large"
    assert customer(api, "small")["identifiers"]["id"] == "small"
    assert api.attributes("big").status_code == 404


def test_a_batch_over_500kb_is_413(api: Api) -> None:
    items = [
        person({"id": f"p{i}"}, "identify", attributes={f"a{j}": "x" * 900 for j in range(30)})
        for i in range(20)
    ]
    error = refused(batch(api, items), "", status=413)
    assert error["reason"] == "payload_too_large"
    assert api.attributes("p0").status_code == 404


def test_a_batch_of_hundreds_of_items_is_applied(api: Api) -> None:
    items = [person({"id": f"bulk-{i}"}, "identify", attributes={"i": i}) for i in range(300)]
    assert batch(api, items).status_code == 200
    assert customer(api, "bulk-0")["attributes"]["i"] == "0"
    assert customer(api, "bulk-299")["attributes"]["i"] == "299"


def test_the_openapi_document_describes_both_endpoints(api: Api) -> None:
    paths = api.track.get("/openapi.json").json()["paths"]
    entity_schema = paths["/api/v2/entity"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "identify_anonymous" in entity_schema["properties"]["action"]["enum"]
    assert "207" in paths["/api/v2/batch"]["post"]["responses"]


def members(api: Api, segment_id: int) -> set[str]:
    response = api.app.get(f"/v1/segments/{segment_id}/membership")
    assert response.status_code == 200, response.text
    return set(response.json()["ids"])


def test_a_run_of_events_is_stored_as_each_would_be_alone(api: Api) -> None:
    """Consecutive person events are applied as a set: people found or created, repeated event ids
    kept once, unknown cio_ids skipped, a suppressed identifier refused alone, segments updated."""
    created = api.app.post(
        "/v1/segments",
        json={
            "segment": {
                "name": "Two buys",
                "conditions": {"event": {"name": "buy", "count": {"operator": "at_least", "value": 2}}},
            }
        },
    )
    assert created.status_code == 200, created.text
    segment_id = created.json()["segment"]["id"]
    accepted(api, person({"id": "runner"}, "identify", attributes={"plan": "pro"}))
    accepted(api, person({"email": "gone@example.com"}, "suppress"))
    accepted(api, person({"id": "runner"}, "event", name="seen", id="01JBATCHSEEN0000000000000"))
    items = [
        person({"id": "runner"}, "event", name="buy", attributes={"n": 1}),
        person({"id": "runner"}, "page", name="/pricing"),
        person({"id": "fresh"}, "event", name="buy", attributes={"n": 2}),
        person({"email": "New@Example.com"}, "event", name="buy"),
        person({"id": "runner"}, "event", name="buy", id="01JBATCHTWICE000000000000"),
        person({"id": "runner"}, "event", name="buy", id="01JBATCHTWICE000000000000"),
        person({"id": "runner"}, "event", name="seen", id="01JBATCHSEEN0000000000000"),
        person({"cio_id": "nobody"}, "event", name="buy"),
        person({"id": "mid"}, "identify", attributes={"plan": "free"}),
        person({"id": "mid"}, "event", name="buy"),
        person({"id": "fresh"}, "screen", name="home"),
    ]
    assert batch(api, items).status_code == 200
    assert members(api, segment_id) == {"runner"}
    # A refused item sends the batch down the one-at-a-time path: the others are still applied once.
    items = [
        person({"id": "mid"}, "event", name="buy"),
        person({"email": "gone@example.com"}, "event", name="buy"),
        person({"id": "fresh"}, "event", name="wish"),
    ]
    response = batch(api, items)
    assert response.status_code == 207, response.text
    assert [(e["batch_index"], e["reason"]) for e in response.json()["errors"]] == [(1, "suppressed")]
    runner = [(a["type"], a["name"]) for a in api.activities("runner") if a["type"] in ("event", "page")]
    assert sorted(runner) == sorted(
        [("event", "seen"), ("event", "buy"), ("page", "/pricing"), ("event", "buy")]
    )
    fresh = api.activities("fresh")
    assert sorted((a["type"], a["name"]) for a in fresh if a["type"] in ("event", "screen")) == [
        ("event", "buy"),
        ("event", "wish"),
        ("screen", "home"),
    ]
    assert [a["data"]["n"] for a in fresh if a["name"] == "buy"] == [2]
    assert customer(api, "new@example.com", "email")["identifiers"]["email"] == "New@Example.com"
    assert [a["name"] for a in api.activities("mid", type="event")] == ["buy", "buy"]
    assert customer(api, "mid")["attributes"]["plan"] == "free"
    assert api.attributes("gone@example.com", "email").status_code == 404
    assert members(api, segment_id) == {"runner", "mid"}


def test_a_run_of_identifies_creates_and_updates_as_each_would_alone(api: Api) -> None:
    """Consecutive identifies are applied as a set where they create people no other item names; the
    rest (updates, repeats, conditional updates) keep their one-at-a-time meaning."""
    created = api.app.post(
        "/v1/segments",
        json={
            "segment": {
                "name": "Pro",
                "conditions": {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}},
            }
        },
    )
    assert created.status_code == 200, created.text
    segment_id = created.json()["segment"]["id"]
    accepted(api, person({"id": "old"}, "identify", attributes={"plan": "free"}))
    items = [
        person({"id": "new-1"}, "identify", attributes={"plan": "pro", "email": "one@example.com"}),
        person(
            {"email": "Two@Example.com"}, "identify", attributes={"plan": "free", "created_at": 1_600_000_000}
        ),
        person({"id": "old"}, "identify", attributes={"plan": "pro"}),
        person({"id": "twice"}, "identify", attributes={"plan": "free", "n": 1}),
        person({"id": "twice"}, "identify", attributes={"plan": "pro"}),
        person({"id": "ghost"}, "identify", attributes={"plan": "pro", "_update": True}),
        person({"id": "new-3"}, "identify", attributes={"plan": "pro"}, timestamp=1_700_000_000),
    ]
    assert batch(api, items).status_code == 200
    one = customer(api, "new-1")
    assert (one["identifiers"]["email"], one["attributes"]["plan"]) == ("one@example.com", "pro")
    two = customer(api, "two@example.com", "email")
    assert (two["identifiers"]["email"], two["attributes"]["plan"]) == ("Two@Example.com", "free")
    assert two["attributes"]["created_at"] == "1600000000"
    assert {k: v for k, v in customer(api, "twice")["attributes"].items() if k in ("plan", "n")} == {
        "plan": "pro",
        "n": "1",
    }
    assert api.attributes("ghost").status_code == 404
    assert customer(api, "new-3")["attributes"]["plan"] == "pro"
    [change] = api.activities("new-1", type="attribute_change")
    assert change["data"]["created"] is True
    assert change["data"]["changes"]["plan"] == {"from": None, "to": "pro"}
    assert change["data"]["changes"]["email"] == {"from": None, "to": "one@example.com"}
    assert members(api, segment_id) == {"new-1", "old", "twice", "new-3"}
    # A suppressed identifier among new people sends the run down the one-at-a-time path.
    accepted(api, person({"email": "gone@example.com"}, "suppress"))
    items = [
        person({"id": "new-4"}, "identify", attributes={"plan": "pro"}),
        person({"email": "gone@example.com"}, "identify", attributes={"plan": "pro"}),
        person({"id": "new-5"}, "identify", attributes={"email": "gone@example.com"}),
        person({"id": "new-6"}, "identify", attributes={"plan": "pro"}),
    ]
    response = batch(api, items)
    assert response.status_code == 207, response.text
    assert [(e["batch_index"], e["reason"]) for e in response.json()["errors"]] == [
        (1, "suppressed"),
        (2, "suppressed"),
    ]
    assert api.attributes("new-5").status_code == 404
    assert members(api, segment_id) == {"new-1", "old", "twice", "new-3", "new-4", "new-6"}

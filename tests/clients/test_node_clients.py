"""Customer.io's official Node client (npm ``customerio-node``, pinned in tests/node/package-lock.json)
against a running Tidings. The scripts in tests/node call every TrackClient and PipelinesClient method and
the APIClient reads Tidings serves, and print what each call returned or raised; these tests check those
outcomes and read the results back through the App API."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Api

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
Steps = dict[str, dict[str, Any]]


def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not on PATH and CI=true: the customerio-node tests may not be skipped")
        pytest.skip("node is not on PATH; install Node.js 20+ to run the customerio-node tests")
    if not (NODE_DIR / "node_modules" / "customerio-node").is_dir():
        pytest.fail(f"customerio-node is not installed: run `npm ci` in {NODE_DIR}")
    return found


def run_node(api: Api, script: str, scenario: str, **extra_env: str) -> Steps:
    creds = api.creds
    environment = {
        **os.environ,
        "TIDINGS_URL": api.server.base_url,
        "CIO_SITE_ID": creds.site_id,
        "CIO_TRACK_API_KEY": creds.track_api_key,
        "CIO_APP_API_KEY": creds.app_api_key,
        "CIO_PIPELINES_WRITE_KEY": creds.pipelines_write_key,
        **extra_env,
    }
    completed = subprocess.run(
        [node_binary(), script, scenario],
        cwd=NODE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"node {script} {scenario} failed:\n{completed.stderr}"
    report = json.loads(completed.stdout)
    assert report["scenario"] == scenario
    steps: Steps = report["steps"]
    return steps


def resolved(steps: Steps, name: str) -> Any:
    """The value a client call resolved with; fails with the client's error when it rejected."""
    outcome = steps[name]
    assert outcome["ok"], f"{name} rejected: {outcome['error']}"
    return outcome["value"]


def rejected(steps: Steps, name: str) -> dict[str, Any]:
    outcome = steps[name]
    assert not outcome["ok"], f"{name} resolved with {outcome['value']!r} but should have been refused"
    error: dict[str, Any] = outcome["error"]
    return error


def all_resolved_empty(steps: Steps, *names: str) -> None:
    """Track and Pipelines answer ``{}``, which the client resolves as ``{}``."""
    for name in names:
        assert resolved(steps, name) == {}, name


def customer(api: Api, identifier: str, id_type: str = "id") -> dict[str, Any]:
    response = api.attributes(identifier, id_type)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["customer"]
    return found


# -- TrackClient, Track API v1 ----------------------------------------------------------------------


def test_people_identify_update_escape_relate_and_destroy(api: Api) -> None:
    steps = run_node(api, "track.js", "people")
    assert resolved(steps, "getAccountRegion") == {
        "url": api.server.base_url,
        "region": "us",
        "environment_id": api.creds.workspace_id,
    }
    all_resolved_empty(
        steps,
        "identify",
        "identify.update",
        "identify.byEmail",
        "identify.escaped",
        "identify.relationships",
        "identify.doomed",
        "destroy",
    )
    person = customer(api, "n-1")
    assert person["identifiers"]["email"] == "N.One@example.com"
    assert person["attributes"]["plan"] == "team"
    assert person["attributes"]["created_at"] == "1600000000"
    assert "address" not in person["attributes"]
    assert customer(api, "n2@example.com", "email")["attributes"]["first_name"] == "Nia"
    escaped = api.app.post("/v1/customers/attributes", json={"ids": ["team/a b+c?d"]}).json()["customers"]
    assert [c["customer"]["attributes"]["role"] for c in escaped] == ["owner"]
    related = api.app.get("/v1/customers/n-1/relationships").json()["cio_relationships"]
    assert [(r["identifiers"]["object_id"], r["relationship_attributes"]) for r in related] == [
        ("acme", {"role": "admin"})
    ]
    assert api.attributes("n-gone").status_code == 404
    assert api.app.get("/v1/customers", params={"email": "gone@example.com"}).json()["results"] == []


def test_events_page_views_anonymous_and_invite_events(api: Api) -> None:
    steps = run_node(api, "track.js", "events")
    all_resolved_empty(
        steps,
        "track",
        "track.repeat",
        "track.screen",
        "trackPageView",
        "trackAnonymous",
        "identify.anonymous",
        "trackAnonymous.invite",
    )
    activities = api.activities("n-ev")
    events = [a for a in activities if a["type"] == "event"]
    assert len(events) == 1, "the repeated event id must be deduplicated"
    assert events[0]["name"] == "purchase"
    assert events[0]["timestamp"] == 1714564800
    assert events[0]["data"]["price"] == 9
    assert [(a["name"], a["data"]["tab"]) for a in activities if a["type"] == "screen"] == [("Home", "feed")]
    assert [a["name"] for a in activities if a["type"] == "page"] == ["/pricing"]
    merged = [a for a in api.activities("n-anon") if a["type"] == "event"]
    assert [(a["name"], a["data"]["plan"]) for a in merged] == [("viewed", "pro")]
    invites = api.server.sql(
        "SELECT name, person_id FROM events WHERE workspace_id = :w AND type = 'invite'",
        w=api.creds.workspace_id,
    )
    assert invites == [("invite", None)]


def test_add_and_delete_devices(api: Api) -> None:
    steps = run_node(api, "track.js", "devices")
    all_resolved_empty(steps, "addDevice", "addDevice.second", "deleteDevice")
    [device] = customer(api, "n-dev")["devices"]
    assert device["id"] == "tok-ios"
    assert device["platform"] == "ios"
    assert device["last_used"] == 1700000000
    assert device["attributes"] == {"app_version": "2.0", "push_enabled": "true"}


def test_merge_customers_with_every_identifier_type(api: Api) -> None:
    steps = run_node(api, "track.js", "merge")
    all_resolved_empty(
        steps, "mergeCustomers.idEmail", "mergeCustomers.emailCioId", "mergeCustomers.cioIdId", "track.sec1"
    )
    primary_cio = resolved(steps, "getAttributes.primary")["customer"]["identifiers"]["cio_id"]
    sec2_cio = resolved(steps, "getAttributes.sec2")["customer"]["identifiers"]["cio_id"]
    merged = customer(api, "n-primary")
    assert merged["identifiers"]["cio_id"] == primary_cio
    assert {k: merged["attributes"].get(k) for k in ("tier", "city", "language", "team")} == {
        "tier": "gold",
        "city": "Oslo",
        "language": "nb",
        "team": "blue",
    }
    assert api.attributes("n-sec-1").status_code == 404
    assert api.attributes(sec2_cio, "cio_id").status_code == 404
    assert api.attributes("n-sec-3").status_code == 404
    assert any(a["name"] == "signed_up" for a in api.activities("n-primary", type="event"))


def test_suppressed_identifiers_are_refused_until_unsuppressed(api: Api) -> None:
    steps = run_node(api, "track.js", "suppression")
    all_resolved_empty(steps, "identify", "suppress", "unsuppress", "identify.again")
    for name in ("identify.refused", "identify.refusedEmail", "track.refused"):
        error = rejected(steps, name)
        assert error["name"] == "CustomerIORequestError"
        assert error["statusCode"] == 400
        # customerio-node builds its message from meta.errors.
        assert "suppressed" in error["message"]
    person = customer(api, "n-sup")
    assert person["attributes"]["plan"] == "free"
    assert person["identifiers"]["email"] == "nsup@example.com"
    assert api.attributes("n-other").status_code == 404


def test_manual_segments_through_track_and_app_clients(api: Api) -> None:
    steps = run_node(api, "track.js", "segments")
    segment = resolved(steps, "createSegment")["segment"]
    assert segment["name"] == "Node VIP"
    assert segment["type"] == "manual"
    all_resolved_empty(
        steps, "addCustomersToSegment", "addCustomersToSegment.email", "removeCustomersFromSegment"
    )
    assert resolved(steps, "getSegmentCustomerCount") == {"count": 2}
    assert api.app.get(f"/v1/segments/{segment['id']}/customer_count").json() == {"count": 2}
    assert resolved(steps, "getSegment")["segment"]["id"] == segment["id"]
    temporary = resolved(steps, "createSegment.temp")["segment"]["id"]
    resolved(steps, "deleteSegment")
    listed = {s["id"] for s in resolved(steps, "listSegments")["segments"]}
    assert segment["id"] in listed
    assert api.app.get(f"/v1/segments/{temporary}").status_code == 404
    assert {s["id"] for s in api.app.get("/v1/segments").json()["segments"]} == {segment["id"]}


def test_forms_push_metrics_reported_metrics_and_unsubscribe(api: Api) -> None:
    api.track.put("/api/v1/customers/n-unsub", json={"email": "unsub@example.com"}).raise_for_status()
    cio_id = customer(api, "n-unsub")["identifiers"]["cio_id"]
    [(person_pk,)] = api.server.sql("SELECT id FROM people WHERE cio_id = :c", c=cio_id)
    delivery_id = f"dlv_{secrets.token_hex(8)}"
    # Deliveries are made by the messaging layer; one is laid down directly to be reported on.
    api.server.execute(
        "INSERT INTO deliveries (id, workspace_id, person_id, channel, recipient, created_at) "
        "VALUES (:d, :w, :p, 'email', 'unsub@example.com', 1)",
        d=delivery_id,
        w=api.creds.workspace_id,
        p=person_pk,
    )
    steps = run_node(api, "track.js", "deliveries", DELIVERY_ID=delivery_id)
    # The form endpoint answers 204 with no body, which the client resolves as {}.
    all_resolved_empty(steps, "submitForm", "trackPush", "reportMetric", "unsubscribe")
    assert customer(api, "lead@example.com", "email")["attributes"]["first_name"] == "Lee"
    unsubscribed = customer(api, "n-unsub")
    assert unsubscribed["unsubscribed"] is True
    assert any(
        a["type"] == "unsubscribed" and a["delivery_id"] == delivery_id for a in api.activities("n-unsub")
    )
    # No App API endpoint reads reported metrics yet.
    rows = api.server.sql(
        "SELECT metric, source, href, device_token, timestamp FROM delivery_metric_reports "
        "WHERE delivery_id = :d ORDER BY id",
        d=delivery_id,
    )
    assert [tuple(r) for r in rows][:2] == [
        ("opened", "push_events", None, "tok-push", 1700000000),
        ("clicked", "track_metrics", "https://example.com/offer", None, 1700000001),
    ]
    assert rows[2][:2] == ("unsubscribed", "unsubscribe")


# -- APIClient, the App API reads Tidings serves ------------------------------------------------------


def test_app_api_reads_agree_with_the_app_api(api: Api) -> None:
    steps = run_node(api, "track.js", "reads")
    all_resolved_empty(steps, "identify", "track")
    own = customer(api, "n-app")
    assert resolved(steps, "getCustomersByEmail") == {
        "results": [{"id": "n-app", "email": "napp@example.com", "cio_id": own["identifiers"]["cio_id"]}]
    }
    assert resolved(steps, "getAttributes") == {"customer": own}
    assert resolved(steps, "getAttributes.email") == {"customer": own}
    assert own["attributes"]["plan"] == "pro"
    missing = rejected(steps, "getAttributes.unknown")
    assert missing["statusCode"] == 404
    assert resolved(steps, "getCustomersAttributes") == {"customers": [{"customer": own}]}
    activities = resolved(steps, "getCustomerActivities")["activities"]
    assert [(a["type"], a["name"], a["data"]["via"]) for a in activities] == [("event", "logged_in", "sso")]
    relationships = resolved(steps, "getCustomerRelationships")
    assert relationships == api.app.get("/v1/customers/n-app/relationships").json()
    assert [r["relationship_attributes"] for r in relationships["cio_relationships"]] == [{"role": "owner"}]
    assert [t["id"] for t in resolved(steps, "listObjectTypes")["types"]] == [1]
    assert resolved(steps, "getObjectAttributes")["object"]["identifiers"]["object_id"] == "acme"
    people = resolved(steps, "getObjectRelationships")["cio_relationships"]
    assert [p["identifiers"]["id"] for p in people] == ["n-app"]
    workspaces = resolved(steps, "listWorkspaces")["workspaces"]
    assert [w["id"] for w in workspaces] == [api.creds.workspace_id]


# -- TrackClient, Track API v2 ----------------------------------------------------------------------


def test_batch_through_track_v2(api: Api) -> None:
    steps = run_node(api, "track_v2.js", "batch")
    all_resolved_empty(steps, "batch", "batch.second")
    person = customer(api, "v2-1")
    assert person["identifiers"]["email"] == "v21@example.com"
    assert person["attributes"]["plan"] == "pro"
    assert person["attributes"]["city"] == "Oslo", "merged from v2-2"
    assert person["devices"] == [], "deleted by the second batch"
    assert api.attributes("v2-2").status_code == 404
    assert api.attributes("v2-gone").status_code == 404
    activities = api.activities("v2-1")
    assert any(
        a["type"] == "event" and a["name"] == "purchased" and a["data"]["price"] == 10 for a in activities
    )
    assert any(a["type"] == "screen" and a["name"] == "Checkout" for a in activities)
    assert any(a["type"] == "device_change" and a["data"]["token"] == "tok-v2" for a in activities)
    umbrella = api.app.get("/v1/objects/1/umbrella/attributes").json()["object"]
    assert umbrella["attributes"]["name"] == "Umbrella"
    related = api.app.get("/v1/customers/v2-1/relationships").json()["cio_relationships"]
    assert [(r["identifiers"]["object_id"], r["relationship_attributes"]) for r in related] == [
        ("umbrella", {"role": "buyer"})
    ]
    partial = resolved(steps, "batch.partial")
    assert [e["batch_index"] for e in partial["errors"]] == [1]
    assert customer(api, "v2-ok")["attributes"]["a"] == "1"


def test_entity_through_track_v2(api: Api) -> None:
    steps = run_node(api, "track_v2.js", "entity")
    all_resolved_empty(
        steps,
        "entity.identify",
        "entity.event",
        "entity.page",
        "entity.object",
        "entity.addRelationships",
        "entity.suppress",
        "entity.unsuppress",
        "identify.again",
    )
    person = customer(api, "v2-e")
    assert person["attributes"]["plan"] == "pro"
    activities = api.activities("v2-e")
    assert any(
        a["type"] == "event" and a["name"] == "upgraded" and a["data"]["to"] == "team" for a in activities
    )
    assert any(a["type"] == "page" and a["name"] == "/billing" for a in activities)
    related = api.app.get("/v1/customers/v2-e/relationships").json()["cio_relationships"]
    assert [(r["identifiers"]["object_id"], r["relationship_attributes"]) for r in related] == [
        ("initech", {"seat": "admin"})
    ]
    assert rejected(steps, "identify.refused")["statusCode"] == 400
    assert customer(api, "v2-s")["attributes"]["plan"] == "pro"
    invalid = rejected(steps, "entity.invalid")
    assert invalid["statusCode"] == 400
    assert json.loads(invalid["body"])["errors"]


# -- PipelinesClient ---------------------------------------------------------------------------------


def test_pipelines_calls(api: Api) -> None:
    steps = run_node(api, "pipelines.js", "calls")
    all_resolved_empty(steps, *steps)
    person = customer(api, "p-1")
    assert person["identifiers"]["email"] == "P.One@example.com"
    assert person["attributes"]["plan"] == "pro"
    assert person["attributes"]["seats"] == "5"
    assert person["attributes"]["city"] == "Oslo", "aliased from p-old"
    assert api.attributes("p-old").status_code == 404
    activities = api.activities("p-1")
    [order] = [a for a in activities if a["type"] == "event" and a["name"] == "Order Completed"]
    assert order["data"]["total"] == 42.5
    assert order["timestamp"] == 1717234200
    assert any(a["type"] == "event" and a["name"] == "Signed Up" for a in activities)
    assert sum(a["type"] == "event" and a["name"] == "Deduplicated" for a in activities) == 1
    [page] = [a for a in activities if a["type"] == "page"]
    assert (page["name"], page["data"]["url"]) == ("Pricing", "https://example.com/pricing")
    [screen] = [a for a in activities if a["type"] == "screen"]
    assert (screen["name"], screen["data"]["tab"]) == ("Home", "feed")
    assert api.app.get("/v1/objects/1/acme/attributes").json()["object"]["attributes"]["name"] == "Acme"
    related = api.app.get("/v1/customers/p-1/relationships").json()["cio_relationships"]
    assert [(r["identifiers"]["object_id"], r["relationship_attributes"]) for r in related] == [
        ("acme", {"role": "admin"})
    ]


def test_pipelines_batch(api: Api) -> None:
    steps = run_node(api, "pipelines.js", "batch")
    all_resolved_empty(steps, "batch", "batch.alias")
    person = customer(api, "pb-1")
    assert person["identifiers"]["email"] == "pb1@example.com"
    assert person["attributes"]["language"] == "nb", "aliased from pb-old"
    assert api.attributes("pb-old").status_code == 404
    kinds = {(a["type"], a["name"]) for a in api.activities("pb-1")}
    assert ("event", "Batched") in kinds
    assert ("screen", "Settings") in kinds
    assert ("page", "Docs") in kinds
    related = api.app.get("/v1/customers/pb-1/relationships").json()["cio_relationships"]
    assert [r["identifiers"]["object_id"] for r in related] == ["globex"]


def test_pipelines_strict_mode_reports_what_permissive_mode_drops(api: Api) -> None:
    steps = run_node(api, "pipelines.js", "strict")
    assert resolved(steps, "strict.identify") == {}
    assert customer(api, "ps-1")["attributes"]["plan"] == "pro"
    invalid = rejected(steps, "strict.invalidTraits")
    assert invalid["statusCode"] == 400
    assert set(json.loads(invalid["body"])) == {"code", "message"}
    assert rejected(steps, "strict.wrongKey")["statusCode"] == 401
    # Without X-Strict-Mode the same calls are answered 200 {} and dropped.
    all_resolved_empty(steps, "permissive.invalidTraits", "permissive.wrongKey")
    for dropped in ("ps-bad", "ps-nokey", "ps-bad2", "ps-nokey2"):
        assert api.attributes(dropped).status_code == 404, dropped

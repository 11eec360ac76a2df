"""Customer.io's official Pipelines client for Python (PyPI ``customerio-cdp-analytics``, imported as
``from customerio import analytics``) against a running Tidings: every call, read back through the App API.

The client always posts ``{"batch": [...], "sentAt": ...}`` to ``{host}/v1/batch``, authenticated with HTTP
Basic ``write_key:``. Most tests use ``sync_mode`` (one blocking request per call, raising on any non-200);
the threaded default is exercised with ``flush()``.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from customerio import analytics
from customerio.analytics import request as cdp_request

from tests.harness import Api

# The client stamps every request's sentAt with datetime.utcnow(), deprecated since Python 3.12; no argument
# avoids that call.
pytestmark = pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every response the client's module-level HTTP session receives (requests response hook)."""
    responses: list[Any] = []
    monkeypatch.setitem(
        cdp_request._session.hooks, "response", [lambda response, **_: responses.append(response)]
    )
    return responses


@pytest.fixture
def cdp(api: Api, sent: list[Any]) -> Any:
    return analytics.Client(api.creds.pipelines_write_key, host=api.server.base_url, sync_mode=True)


def customer(api: Api, identifier: str, id_type: str = "id") -> dict[str, Any]:
    response = api.attributes(identifier, id_type)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["customer"]
    return found


def test_every_call_is_one_post_to_v1_batch(api: Api, cdp: Any, sent: list[Any]) -> None:
    cdp.identify("cdp-wire", {"email": "wire@example.com"})
    cdp.track("cdp-wire", "Wired")
    assert [(r.request.method, urlsplit(r.url).path, r.status_code) for r in sent] == [
        ("POST", "/v1/batch", 200),
        ("POST", "/v1/batch", 200),
    ]
    body = json.loads(sent[0].request.body)
    assert body["batch"][0]["type"] == "identify"
    assert body["batch"][0]["userId"] == "cdp-wire"
    assert "sentAt" in body
    assert sent[0].request.headers["Authorization"].startswith("Basic ")


def test_identify_creates_and_updates_a_person_with_traits(api: Api, cdp: Any) -> None:
    cdp.identify("cdp-1", {"email": "Cdp.One@example.com", "plan": "pro", "logins": 3, "beta": True})
    cdp.identify("cdp-1", {"plan": "team"})
    person = customer(api, "cdp-1")
    assert person["identifiers"]["email"] == "Cdp.One@example.com"
    assert person["attributes"]["plan"] == "team"
    assert person["attributes"]["logins"] == "3"
    assert person["attributes"]["beta"] == "true"
    found = api.app.get("/v1/customers", params={"email": "cdp.one@example.com"}).json()["results"]
    assert [r["id"] for r in found] == ["cdp-1"]


def test_track_records_an_event_with_its_properties(api: Api, cdp: Any) -> None:
    cdp.identify("cdp-2", {"email": "cdp2@example.com"})
    when = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    cdp.track("cdp-2", "Order Completed", {"total": 42.5, "items": ["sku-1"]}, timestamp=when)
    events = [a for a in api.activities("cdp-2") if a["type"] == "event"]
    assert [a["name"] for a in events] == ["Order Completed"]
    assert events[0]["data"]["total"] == 42.5
    assert events[0]["data"]["items"] == ["sku-1"]
    assert events[0]["timestamp"] == int(when.timestamp())


def test_a_repeated_message_id_is_recorded_once(api: Api, cdp: Any) -> None:
    cdp.identify("cdp-dup", {})
    for _ in range(2):
        cdp.track("cdp-dup", "Clicked", {"n": 1}, message_id="9b0b7c3c-5f9e-4e2b-9d8a-0f1c2d3e4f50")
    assert sum(a["type"] == "event" for a in api.activities("cdp-dup")) == 1


def test_page_and_screen_views(api: Api, cdp: Any) -> None:
    cdp.identify("cdp-3", {})
    cdp.page("cdp-3", category="Docs", name="Pricing", properties={"url": "https://example.com/pricing"})
    cdp.screen("cdp-3", name="Home", properties={"tab": "feed"})
    activities = api.activities("cdp-3")
    [page] = [a for a in activities if a["type"] == "page"]
    [screen] = [a for a in activities if a["type"] == "screen"]
    assert page["name"] == "Pricing"
    assert page["data"]["url"] == "https://example.com/pricing"
    assert screen["name"] == "Home"
    assert screen["data"]["tab"] == "feed"


def test_group_creates_an_object_and_relates_the_person(api: Api, cdp: Any) -> None:
    cdp.identify("cdp-g", {"email": "g@example.com"})
    cdp.group(
        "cdp-g",
        "acme",
        {
            "object_type_id": "2",
            "name": "Acme",
            "plan": "enterprise",
            "relationshipAttributes": {"role": "admin"},
        },
    )
    # Without object_type_id the object type is 1.
    cdp.group("cdp-g", "globex", {"name": "Globex"})
    acme = api.app.get("/v1/objects/2/acme/attributes")
    assert acme.status_code == 200, acme.text
    attributes = acme.json()["object"]["attributes"]
    assert attributes["name"] == "Acme"
    assert attributes["plan"] == "enterprise"
    assert "relationshipAttributes" not in attributes
    assert "object_type_id" not in attributes
    assert api.app.get("/v1/objects/1/globex/attributes").json()["object"]["attributes"]["name"] == "Globex"
    related = api.app.get("/v1/customers/cdp-g/relationships").json()["cio_relationships"]
    assert sorted((r["identifiers"]["object_type_id"], r["identifiers"]["object_id"]) for r in related) == [
        ("1", "globex"),
        ("2", "acme"),
    ]
    [to_acme] = [r for r in related if r["identifiers"]["object_id"] == "acme"]
    assert to_acme["relationship_attributes"] == {"role": "admin"}
    types = {t["id"] for t in api.app.get("/v1/object_types").json()["types"]}
    assert types == {1, 2}


def test_alias_merges_the_previous_id_into_the_user_id(api: Api, cdp: Any) -> None:
    cdp.identify("cdp-old", {"city": "Oslo"})
    cdp.track("cdp-old", "Signed Up")
    cdp.identify("cdp-new", {"email": "new@example.com"})
    cdp.alias("cdp-old", "cdp-new")
    assert api.attributes("cdp-old").status_code == 404
    person = customer(api, "cdp-new")
    assert person["attributes"]["city"] == "Oslo"
    assert person["identifiers"]["email"] == "new@example.com"
    assert any(a["type"] == "event" and a["name"] == "Signed Up" for a in api.activities("cdp-new"))


def test_alias_attaches_anonymous_activity_to_the_user(api: Api, cdp: Any) -> None:
    cdp.track(anonymous_id="anon-cdp", event="Viewed Pricing", properties={"plan": "pro"})
    cdp.identify("cdp-anon", {"email": "anon@example.com"})
    cdp.alias("anon-cdp", "cdp-anon")
    events = [a for a in api.activities("cdp-anon") if a["type"] == "event"]
    assert [a["name"] for a in events] == ["Viewed Pricing"]
    assert events[0]["data"]["plan"] == "pro"


def test_device_semantic_events(api: Api, cdp: Any) -> None:
    cdp.identify("cdp-dev", {})
    device = {"device": {"token": "tok-cdp", "type": "ios"}}
    cdp.track("cdp-dev", "Device Created or Updated", {"app_version": "4.1"}, context=device)
    [listed] = customer(api, "cdp-dev")["devices"]
    assert (listed["id"], listed["platform"]) == ("tok-cdp", "ios")
    cdp.track("cdp-dev", "Device Deleted", context={"device": {"token": "tok-cdp"}})
    assert customer(api, "cdp-dev")["devices"] == []


def test_person_semantic_events_delete_suppress_and_unsuppress(api: Api, cdp: Any) -> None:
    cdp.identify("cdp-del", {"plan": "pro"})
    cdp.track("cdp-del", "User Deleted")
    assert api.attributes("cdp-del").status_code == 404

    cdp.identify("cdp-sup", {"plan": "pro"})
    cdp.track("cdp-sup", "User Suppressed")
    assert api.attributes("cdp-sup").status_code == 404
    # Outside strict mode a refused call still answers 200; the data is dropped.
    cdp.identify("cdp-sup", {"plan": "free"})
    assert api.attributes("cdp-sup").status_code == 404
    cdp.track("cdp-sup", "User Unsuppressed")
    cdp.identify("cdp-sup", {"plan": "free"})
    assert customer(api, "cdp-sup")["attributes"]["plan"] == "free"


def test_relationship_and_object_semantic_events(api: Api, cdp: Any) -> None:
    cdp.identify("cdp-rel", {})
    cdp.group("cdp-rel", "initech", {"name": "Initech"})
    cdp.group("cdp-rel", "hooli", {"name": "Hooli"})
    cdp.track("cdp-rel", "Relationship Deleted", {"objectId": "initech", "objectTypeId": 1})
    related = api.app.get("/v1/customers/cdp-rel/relationships").json()["cio_relationships"]
    assert [r["identifiers"]["object_id"] for r in related] == ["hooli"]
    assert api.app.get("/v1/objects/1/initech/attributes").status_code == 200
    cdp.track(
        anonymous_id="anon-obj", event="Object Deleted", properties={"objectId": "hooli", "objectTypeId": 1}
    )
    assert api.app.get("/v1/objects/1/hooli/attributes").status_code == 404
    assert api.app.get("/v1/customers/cdp-rel/relationships").json()["cio_relationships"] == []


def test_report_delivery_event_is_stored_against_the_delivery(api: Api, cdp: Any) -> None:
    cdp.track(
        "cdp-metric",
        "Report Delivery Event",
        {"deliveryId": "RPILx9AAAAXE7r", "metric": "opened", "recipient": "m@example.com"},
    )
    # No App API endpoint reads delivery metrics yet.
    rows = api.server.sql(
        "SELECT delivery_id, metric, recipient, source FROM delivery_metric_reports WHERE workspace_id = :w",
        w=api.creds.workspace_id,
    )
    assert rows == [("RPILx9AAAAXE7r", "opened", "m@example.com", "pipelines")]


def test_gzip_bodies_are_accepted(api: Api, sent: list[Any]) -> None:
    client = analytics.Client(
        api.creds.pipelines_write_key, host=api.server.base_url, sync_mode=True, gzip=True
    )
    client.identify("cdp-gz", {"plan": "zipped"})
    assert sent[0].request.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(sent[0].request.body))["batch"][0]["userId"] == "cdp-gz"
    assert customer(api, "cdp-gz")["attributes"]["plan"] == "zipped"


def test_threaded_client_delivers_everything_on_flush(api: Api, sent: list[Any]) -> None:
    errors: list[Any] = []
    # A failed upload is retried with exponential backoff; two tries are enough against a local server.
    client = analytics.Client(
        api.creds.pipelines_write_key,
        host=api.server.base_url,
        on_error=lambda error, _batch: errors.append(error),
        max_retries=1,
    )
    try:
        client.identify("cdp-async", {"email": "async@example.com"})
        for n in range(5):
            client.track("cdp-async", "Tick", {"n": n})
        client.flush()
    finally:
        client.shutdown()
    assert errors == []
    assert sent
    assert all(r.status_code == 200 for r in sent)
    events = api.activities("cdp-async", type="event")
    assert sorted(a["data"]["n"] for a in events) == [0, 1, 2, 3, 4]
    assert customer(api, "cdp-async")["identifiers"]["email"] == "async@example.com"


@pytest.fixture
def module_client(api: Api, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module-level API (``analytics.write_key = ...; analytics.track(...)``), restored afterwards."""
    monkeypatch.setattr(analytics, "write_key", api.creds.pipelines_write_key)
    monkeypatch.setattr(analytics, "host", api.server.base_url)
    monkeypatch.setattr(analytics, "sync_mode", True)
    monkeypatch.setattr(analytics, "default_client", None)
    return analytics


def test_module_level_api(api: Api, module_client: Any, sent: list[Any]) -> None:
    module_client.identify("cdp-mod", {"plan": "module"})
    module_client.track("cdp-mod", "Used Module API")
    module_client.flush()
    assert customer(api, "cdp-mod")["attributes"]["plan"] == "module"
    assert [a["name"] for a in api.activities("cdp-mod", type="event")] == ["Used Module API"]


def test_a_wrong_write_key_is_answered_200_and_stores_nothing(api: Api, sent: list[Any]) -> None:
    # Outside strict mode Customer.io answers 200 {} and drops the data, so the client reports no error.
    client = analytics.Client("not-a-write-key", host=api.server.base_url, sync_mode=True)
    client.identify("cdp-nokey", {"plan": "x"})
    assert [r.status_code for r in sent] == [200]
    assert api.attributes("cdp-nokey").status_code == 404

"""Customer.io's official Python Track client (PyPI ``customerio`` 3.x) against a running Tidings: every
method of ``CustomerIO``, each result read back through Tidings' App API.

``customerio-cdp-analytics`` shares the ``customerio`` package directory and may overwrite its
``__init__``, so everything is imported from submodules.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from customerio.client_base import CustomerIOException
from customerio.constants import CIOID, EMAIL, ID
from customerio.track import CustomerIO
from requests.adapters import HTTPAdapter

from tests.harness import Api


class PlainHTTPAdapter(HTTPAdapter):
    """Carries what the client addressed to ``https://<tidings origin>`` over plain HTTP.

    ``CustomerIO`` only builds https URLs. Its v1 methods all start from ``base_url``, which the fixture
    replaces with Tidings' http origin (the documented workaround). ``batch()`` ignores ``base_url`` and
    builds ``https://{host}:{port}/api/v2/batch`` from the ``host`` and ``port`` given to the constructor, and
    no attribute changes that scheme; the test server speaks plain HTTP. Mounted for Tidings' origin only, on
    the session the client itself builds, this adapter swaps the scheme at the transport and nothing else:
    the method, path, body, headers and Basic auth the client produced reach Tidings unchanged, as they
    would through a TLS terminator in front of Tidings.
    """

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        request.url = "http://" + (request.url or "").removeprefix("https://")
        return super().send(request, *args, **kwargs)


def track_client(api: Api, api_key: str | None = None) -> CustomerIO:
    origin = urlsplit(api.server.base_url)
    # host/port is the client's own way to name a server; it also feeds the URL batch() builds.
    client = CustomerIO(
        api.creds.site_id, api_key or api.creds.track_api_key, host=origin.hostname, port=origin.port
    )
    client.base_url = f"{api.server.base_url}/api/v1"
    client.http.mount(f"https://{origin.netloc}", PlainHTTPAdapter())
    return client


@pytest.fixture
def cio(api: Api) -> Iterator[CustomerIO]:
    client = track_client(api)
    yield client
    client.close()


def ok(response: requests.Response) -> None:
    """customerio 2.x raised on anything but exactly 200, so Tidings answers 200 ``{}`` like Customer.io."""
    assert response.status_code == 200, response.text
    assert response.json() == {}


def customer(api: Api, identifier: str, id_type: str = "id") -> dict[str, Any]:
    response = api.attributes(identifier, id_type)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["customer"]
    return found


def customers_by_id(api: Api, *ids: str) -> list[dict[str, Any]]:
    """POST /v1/customers/attributes: ids travel in the body, so no path escaping is involved."""
    response = api.app.post("/v1/customers/attributes", json={"ids": list(ids)})
    assert response.status_code == 200, response.text
    return [entry["customer"] for entry in response.json()["customers"]]


def test_identify_creates_updates_and_sanitizes_attributes(api: Api, cio: CustomerIO) -> None:
    ok(
        cio.identify(
            "py-1",
            email="Py.One@example.com",
            plan="pro",
            score=3,
            created_at=datetime(2021, 1, 1, tzinfo=UTC),
            tags=["a", "b"],
            address={"city": "Oslo"},
        )
    )
    # The client turns NaN into null, which removes the attribute.
    ok(cio.identify("py-1", plan="team", score=float("nan")))
    person = customer(api, "py-1")
    assert person["identifiers"]["email"] == "Py.One@example.com"
    attributes = person["attributes"]
    assert attributes["plan"] == "team"
    assert "score" not in attributes
    assert attributes["created_at"] == "1609459200"
    assert attributes["tags"] == '["a","b"]'
    assert attributes["address"] == '{"city":"Oslo"}'
    found = api.app.get("/v1/customers", params={"email": "py.one@example.com"}).json()["results"]
    assert found == [{"id": "py-1", "email": "Py.One@example.com", "cio_id": person["identifiers"]["cio_id"]}]


def test_identify_by_email_and_by_an_id_that_needs_escaping(api: Api, cio: CustomerIO) -> None:
    ok(cio.identify("mail.only@example.com", first_name="Mo"))
    person = customer(api, "mail.only@example.com", "email")
    assert person["id"] is None
    assert person["attributes"]["first_name"] == "Mo"
    ok(cio.identify("team/a b+c?d", role="owner"))
    [escaped] = customers_by_id(api, "team/a b+c?d")
    assert escaped["attributes"]["role"] == "owner"


def test_delete_erases_the_person_and_identify_starts_over(api: Api, cio: CustomerIO) -> None:
    ok(cio.identify("gone", email="gone@example.com", plan="pro"))
    ok(cio.track("gone", "signed_up"))
    ok(cio.delete("gone"))
    assert api.attributes("gone").status_code == 404
    assert api.app.get("/v1/customers", params={"email": "gone@example.com"}).json()["results"] == []
    ok(cio.identify("gone", city="Bergen"))
    attributes = customer(api, "gone")["attributes"]
    assert "plan" not in attributes
    assert attributes["city"] == "Bergen"
    assert [a for a in api.activities("gone") if a["type"] == "event"] == []


def test_track_with_id_timestamp_and_data_deduplicates(api: Api, cio: CustomerIO) -> None:
    ok(cio.identify("ev-1"))
    when = int(datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp())
    data = {"price": 9.5, "sku": "A1", "paid_at": datetime(2024, 5, 1, tzinfo=UTC)}
    for _ in range(2):
        ok(cio.track("ev-1", "purchase", data=data, id="01HZY3V6M9J5R8QK2T4W6X8Y0Z", timestamp=when))
    events = [a for a in api.activities("ev-1") if a["type"] == "event"]
    assert len(events) == 1
    assert events[0]["name"] == "purchase"
    assert events[0]["timestamp"] == when
    assert events[0]["data"]["price"] == 9.5
    assert events[0]["data"]["sku"] == "A1"
    assert events[0]["data"]["paid_at"] == int(datetime(2024, 5, 1, tzinfo=UTC).timestamp())


def test_track_creates_the_person_it_names(api: Api, cio: CustomerIO) -> None:
    ok(cio.track("new-by-event", "first_touch", data={"source": "ad"}))
    assert [a["name"] for a in api.activities("new-by-event") if a["type"] == "event"] == ["first_touch"]


def test_track_anonymous_with_an_anonymous_id_merges_on_identify(api: Api, cio: CustomerIO) -> None:
    ok(cio.track_anonymous("anon-py", "viewed_pricing", data={"plan": "pro"}))
    ok(cio.identify("py-anon", anonymous_id="anon-py"))
    events = [a for a in api.activities("py-anon") if a["type"] == "event"]
    assert [a["name"] for a in events] == ["viewed_pricing"]
    assert events[0]["data"]["plan"] == "pro"


def test_track_anonymous_without_an_anonymous_id_is_an_invite(api: Api, cio: CustomerIO) -> None:
    ok(cio.track_anonymous("", "invite", data={"recipient": "friend@example.com"}))
    ok(cio.track_anonymous(None, "invite", data={"recipient": "pal@example.com"}))
    # Invite events belong to nobody, so no App API endpoint lists them.
    rows = api.server.sql(
        "SELECT type, person_id, anonymous_id FROM events WHERE workspace_id = :w", w=api.creds.workspace_id
    )
    assert rows == [("invite", None, None), ("invite", None, None)]
    assert api.app.get("/v1/customers", params={"email": "friend@example.com"}).json()["results"] == []


def test_pageview_is_a_page_activity(api: Api, cio: CustomerIO) -> None:
    ok(cio.pageview("pv-1", "https://example.com/pricing", referrer="https://google.com"))
    pages = [a for a in api.activities("pv-1") if a["type"] == "page"]
    assert len(pages) == 1
    assert pages[0]["name"] == "https://example.com/pricing"
    assert pages[0]["data"]["referrer"] == "https://google.com"


def test_backfill_keeps_the_given_time(api: Api, cio: CustomerIO) -> None:
    first = datetime(2020, 3, 1, 8, 30, tzinfo=UTC)
    ok(cio.backfill("bf-1", "signed_up", first, plan="pro"))
    ok(cio.backfill("bf-1", "upgraded", 1600000000))
    ok(cio.backfill("bf-1", "renewed", "1700000000"))
    events = {a["name"]: a for a in api.activities("bf-1") if a["type"] == "event"}
    assert events["signed_up"]["timestamp"] == int(first.timestamp())
    assert events["signed_up"]["data"]["plan"] == "pro"
    assert events["upgraded"]["timestamp"] == 1600000000
    assert events["renewed"]["timestamp"] == 1700000000
    # Backdated beyond 72 hours: recorded, but cannot trigger campaigns.
    rows = api.server.sql(
        "SELECT DISTINCT can_trigger FROM events WHERE workspace_id = :w", w=api.creds.workspace_id
    )
    assert [bool(r[0]) for r in rows] == [False]


def test_add_device_with_extra_fields_and_delete_device(api: Api, cio: CustomerIO) -> None:
    # The Python client puts extra keyword arguments directly into "device", next to id and platform.
    ok(
        cio.add_device(
            "dev-1",
            "tok-ios",
            "ios",
            last_used=1700000000,
            app_version="1.2",
            push_enabled=True,
            device_os="17",
        )
    )
    ok(cio.add_device("dev-1", "apns:tok/with+odd chars", "android"))
    devices = {d["id"]: d for d in customer(api, "dev-1")["devices"]}
    assert set(devices) == {"tok-ios", "apns:tok/with+odd chars"}
    assert devices["tok-ios"]["platform"] == "ios"
    assert devices["tok-ios"]["last_used"] == 1700000000
    assert devices["tok-ios"]["attributes"] == {
        "app_version": "1.2",
        "push_enabled": "true",
        "device_os": "17",
    }
    assert devices["apns:tok/with+odd chars"]["platform"] == "android"
    ok(cio.delete_device("dev-1", "apns:tok/with+odd chars"))
    assert [d["id"] for d in customer(api, "dev-1")["devices"]] == ["tok-ios"]
    ok(cio.add_device("dev-1", "tok-ios", "ios", app_version="1.3"))
    [updated] = customer(api, "dev-1")["devices"]
    assert updated["attributes"]["app_version"] == "1.3"


def test_suppress_refuses_the_identifiers_until_unsuppressed(api: Api, cio: CustomerIO) -> None:
    ok(cio.identify("sup-1", email="sup@example.com", plan="pro"))
    ok(cio.suppress("sup-1"))
    assert api.attributes("sup-1").status_code == 404
    with pytest.raises(CustomerIOException, match=r"^400: .*suppressed"):
        cio.identify("sup-1", plan="free")
    with pytest.raises(CustomerIOException, match=r"^400: .*suppressed"):
        cio.identify("someone-else", email="sup@example.com")
    with pytest.raises(CustomerIOException, match=r"^400: .*suppressed"):
        cio.track("sup-1", "came_back")
    assert api.attributes("sup-1").status_code == 404
    ok(cio.unsuppress("sup-1"))
    ok(cio.identify("sup-1", email="sup@example.com", plan="free"))
    attributes = customer(api, "sup-1")["attributes"]
    assert attributes["plan"] == "free"
    assert attributes["email"] == "sup@example.com"


def test_merge_customers_with_every_identifier_type(api: Api, cio: CustomerIO) -> None:
    ok(cio.identify("primary", email="primary@example.com", tier="gold"))
    ok(cio.identify("sec-1", email="sec1@example.com", city="Oslo", tier="silver"))
    ok(cio.identify("sec2@example.com", language="nb"))
    ok(cio.identify("sec-3", team="blue"))
    ok(cio.track("sec-1", "signed_up"))
    ok(cio.add_device("sec-3", "tok-sec3", "ios"))
    primary_cio = customer(api, "primary")["identifiers"]["cio_id"]
    sec2_cio = customer(api, "sec2@example.com", "email")["identifiers"]["cio_id"]

    ok(cio.merge_customers(ID, "primary", EMAIL, "sec1@example.com"))
    ok(cio.merge_customers(EMAIL, "primary@example.com", CIOID, sec2_cio))
    ok(cio.merge_customers(CIOID, primary_cio, ID, "sec-3"))

    merged = customer(api, "primary")
    assert merged["attributes"]["tier"] == "gold"
    assert merged["attributes"]["city"] == "Oslo"
    assert merged["attributes"]["language"] == "nb"
    assert merged["attributes"]["team"] == "blue"
    assert [d["id"] for d in merged["devices"]] == ["tok-sec3"]
    assert api.attributes("sec-1").status_code == 404
    assert api.attributes(sec2_cio, "cio_id").status_code == 404
    assert api.attributes("sec-3").status_code == 404
    activities = api.activities("primary")
    assert any(a["type"] == "event" and a["name"] == "signed_up" for a in activities)
    assert sum(a["type"] == "merged_customer" for a in activities) == 3


def test_wrong_credentials_raise_with_the_status(api: Api) -> None:
    with (
        track_client(api, api_key="not-the-key") as client,
        pytest.raises(CustomerIOException, match=r"^401"),
    ):
        client.identify("nobody", plan="x")
    assert api.attributes("nobody").status_code == 404


def test_batch_applies_mixed_operations_through_track_v2(api: Api, cio: CustomerIO) -> None:
    ok(
        cio.batch(
            [
                {
                    "type": "person",
                    "action": "identify",
                    "identifiers": {"id": "b-1"},
                    "attributes": {"email": "b1@example.com", "plan": "pro"},
                },
                {
                    "type": "person",
                    "action": "event",
                    "identifiers": {"id": "b-1"},
                    "name": "purchased",
                    "attributes": {"price": 10},
                },
                {
                    "type": "person",
                    "action": "page",
                    "identifiers": {"id": "b-1"},
                    "name": "/pricing",
                    "attributes": {"title": "Pricing"},
                },
                {
                    "type": "person",
                    "action": "add_device",
                    "identifiers": {"id": "b-1"},
                    "device": {"token": "tok-b1", "platform": "android", "attributes": {"app_version": "3"}},
                },
                {
                    "type": "object",
                    "action": "identify",
                    "identifiers": {"object_type_id": "1", "object_id": "acme"},
                    "attributes": {"name": "Acme"},
                    "cio_relationships": [
                        {"identifiers": {"id": "b-1"}, "relationship_attributes": {"role": "admin"}}
                    ],
                },
                {
                    "type": "person",
                    "action": "identify",
                    "identifiers": {"id": "b-2"},
                    "attributes": {"city": "Oslo"},
                },
            ]
        )
    )
    person = customer(api, "b-1")
    assert person["identifiers"]["email"] == "b1@example.com"
    assert person["attributes"]["plan"] == "pro"
    assert [(d["id"], d["platform"]) for d in person["devices"]] == [("tok-b1", "android")]
    activities = api.activities("b-1")
    assert any(
        a["type"] == "event" and a["name"] == "purchased" and a["data"]["price"] == 10 for a in activities
    )
    assert any(a["type"] == "page" and a["name"] == "/pricing" for a in activities)
    obj = api.app.get("/v1/objects/1/acme/attributes").json()["object"]
    assert obj["attributes"]["name"] == "Acme"
    related = api.app.get("/v1/customers/b-1/relationships").json()["cio_relationships"]
    assert [(r["identifiers"]["object_id"], r["relationship_attributes"]) for r in related] == [
        ("acme", {"role": "admin"})
    ]

    ok(
        cio.batch(
            [
                {"type": "person", "action": "merge", "primary": {"id": "b-1"}, "secondary": {"id": "b-2"}},
                {
                    "type": "person",
                    "action": "delete_device",
                    "identifiers": {"id": "b-1"},
                    "device": {"token": "tok-b1"},
                },
                {
                    "type": "object",
                    "action": "delete",
                    "identifiers": {"object_type_id": "1", "object_id": "acme"},
                },
            ]
        )
    )
    merged = customer(api, "b-1")
    assert merged["attributes"]["city"] == "Oslo"
    assert merged["devices"] == []
    assert api.attributes("b-2").status_code == 404
    assert api.app.get("/v1/objects/1/acme/attributes").status_code == 404


def test_batch_partial_failure_is_207_and_the_rest_is_applied(api: Api, cio: CustomerIO) -> None:
    response = cio.batch(
        [
            {"type": "person", "action": "identify", "identifiers": {"id": "ok-1"}, "attributes": {"a": 1}},
            {"type": "person", "action": "event", "identifiers": {"id": "ok-1"}},
        ]
    )
    assert response.status_code == 207
    errors = response.json()["errors"]
    assert [e["batch_index"] for e in errors] == [1]
    assert customer(api, "ok-1")["attributes"]["a"] == "1"


def test_batch_suppress_and_unsuppress_through_track_v2(api: Api, cio: CustomerIO) -> None:
    ok(cio.identify("b-sup", plan="pro"))
    ok(cio.batch([{"type": "person", "action": "suppress", "identifiers": {"id": "b-sup"}}]))
    assert api.attributes("b-sup").status_code == 404
    with pytest.raises(CustomerIOException, match=r"^400"):
        cio.identify("b-sup", plan="free")
    ok(cio.batch([{"type": "person", "action": "unsuppress", "identifiers": {"id": "b-sup"}}]))
    ok(cio.identify("b-sup", plan="free"))
    assert customer(api, "b-sup")["attributes"]["plan"] == "free"

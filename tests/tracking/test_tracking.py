"""Tracking links and subscriptions over HTTP against a real server: the open pixel, click redirects,
unsubscribe (page, RFC 8058 one-click, resubscribe), the subscription center (delivery- and person-bound),
view in browser, and the App API's topics, subscription center tokens and ESP suppression list.

Deliveries are written straight into the store and their links signed with the workspace's key, as the
sender would, so these tests do not depend on a message actually going out.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from tests.harness import Api
from tidings.db import Database
from tidings.ids import new_delivery_id
from tidings.models import Delivery, Person, ReportingWebhook
from tidings.tracking import links
from tidings.tracking.links import DeliveryLinks

Json = dict[str, Any]
GIF = b"GIF89a"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@dataclass
class Sent:
    delivery_id: str
    links: DeliveryLinks


@pytest.fixture
def web() -> Iterator[httpx.Client]:
    """A browser or mail client: no credentials, redirects not followed."""
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        yield client


# -- helpers -------------------------------------------------------------------------------------------


def ok(response: httpx.Response) -> Json:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    body: Json = response.json()
    return body


def app_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    errors = response.json()["errors"]
    assert errors[0]["status"] == str(status)
    detail: str = errors[0]["detail"]
    return detail


def unique_id() -> str:
    return f"p-{secrets.token_hex(4)}"


def identify(api: Api, person_id: str, **attributes: Any) -> None:
    ok(api.track.put(f"/api/v1/customers/{person_id}", json=attributes))


def advance(api: Api, seconds: float) -> int:
    now: int = ok(api.app.post("/_tidings/clock", json={"advance": seconds}))["now"]
    return now


def deliver(api: Api, person_id: str | None, *, rendered: Json | None = None, retain: bool = True) -> Sent:
    """A sent email delivery to ``person_id`` and its signed links, as the sender makes them."""
    db = Database(api.server.database_url)
    workspace_id = api.creds.workspace_id
    try:
        with db.session() as session:
            key = None
            if person_id is not None:
                key = session.scalar(
                    select(Person.id).where(
                        Person.workspace_id == workspace_id, Person.customer_id == person_id
                    )
                )
                assert key is not None, f"no person {person_id}"
            delivery_id = new_delivery_id()
            now = advance(api, 0)
            session.add(
                Delivery(
                    id=delivery_id,
                    workspace_id=workspace_id,
                    person_id=key,
                    channel="email",
                    recipient=f"{person_id}@example.com",
                    subject="Hello",
                    created_at=now,
                    state="sent",
                    sent_at=now,
                    attempts=1,
                    rendered=rendered,
                    retain_content=retain,
                )
            )
            session.flush()
            # Keys are cached per process by workspace id, which assumes one database per process; this
            # one talks to a SQLite and a PostgreSQL server whose workspace ids overlap.
            with links._keys_lock:
                links._keys.pop(workspace_id, None)
            found = links.delivery_links(session, workspace_id, delivery_id, public_url=api.server.base_url)
    finally:
        db.close()
    return Sent(delivery_id, found)


def add_webhook(api: Api, *events: str) -> None:
    """A reporting webhook whose outbox the tests read (its endpoint never answers)."""
    db = Database(api.server.database_url)
    try:
        with db.session() as session:
            session.add(
                ReportingWebhook(
                    workspace_id=api.creds.workspace_id,
                    name="audit",
                    endpoint="http://127.0.0.1:9/hook",
                    events=list(events),
                    created_at=0,
                    updated_at=0,
                )
            )
    finally:
        db.close()


def webhook_events(api: Api, object_type: str, metric: str) -> list[Json]:
    rows = api.server.sql(
        "SELECT body FROM webhook_posts WHERE workspace_id = :w ORDER BY id", w=api.creds.workspace_id
    )
    events = [orjson.loads(row[0]) for row in rows]
    return [event for event in events if (event["object_type"], event["metric"]) == (object_type, metric)]


def delivery_row(api: Api, delivery_id: str) -> Json:
    rows = api.server.sql(
        "SELECT state, opened_at, clicked_at, unsubscribed_at FROM deliveries WHERE id = :d", d=delivery_id
    )
    row: Json = dict(rows[0]._mapping)
    return row


def reports(api: Api, delivery_id: str, metric: str) -> list[tuple[str | None, str]]:
    rows = api.server.sql(
        "SELECT href, source FROM delivery_metric_reports WHERE delivery_id = :d AND metric = :m ORDER BY id",
        d=delivery_id,
        m=metric,
    )
    return [(row[0], row[1]) for row in rows]


def customer(api: Api, person_id: str) -> Json:
    found: Json = ok(api.attributes(person_id))["customer"]
    return found


def split(url: str) -> tuple[str, str, str]:
    """(base up to the kind, workspace id, token) of a tracking URL such as .../c/7/<token>."""
    head, workspace_id, token = url.rsplit("/", 2)
    return head, workspace_id, token


def tampered(url: str) -> str:
    """The URL with one character of its token's signed payload changed."""
    head, workspace_id, token = split(url)
    at = len(token) // 3
    swapped = "A" if token[at] != "A" else "B"
    return f"{head}/{workspace_id}/{token[:at]}{swapped}{token[at + 1 :]}"


def under(url: str, workspace_id: int) -> str:
    head, _, token = split(url)
    return f"{head}/{workspace_id}/{token}"


def assert_not_found_page(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert "<h1>Link not found</h1>" in response.text


def checkboxes(page: str) -> dict[str, bool]:
    """name → checked, for every checkbox of a page."""
    found = {}
    for tag in re.findall(r"<input[^>]*type=\"checkbox\"[^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag)
        assert name is not None
        found[name.group(1)] = " checked" in tag
    return found


def preferences_form(page: str, *, checked: set[str]) -> dict[str, list[str]]:
    """What a browser posts when ``checked`` are the ticked boxes of the subscription center."""
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)
    form: dict[str, list[str]] = {}
    for name, value in hidden:
        form.setdefault(name, []).append(value)
    for name in checked:
        form[name] = ["on"]
    return form


def wait_built(api: Api, segment_id: int) -> None:
    """Poll until the worker finished building a data-driven segment."""
    deadline = time.monotonic() + 20
    while ok(api.app.get(f"/v1/segments/{segment_id}"))["segment"]["state"] != "finished":
        assert time.monotonic() < deadline, f"segment {segment_id} did not finish building"
        time.sleep(0.05)


def create_topic(api: Api, name: str, **fields: Any) -> Json:
    topic: Json = ok(api.app.post("/v1/subscription_topics", json={"name": name, **fields}))["topic"]
    return topic


# -- open pixel ----------------------------------------------------------------------------------------


def test_open_pixel_keeps_the_first_open_and_logs_every_one(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    sent = deliver(api, person)
    pixel = web.get(sent.links.open_pixel_url())
    assert pixel.status_code == 200
    assert pixel.headers["content-type"] == "image/gif"
    assert pixel.content.startswith(GIF)
    assert len(pixel.content) < 100
    assert "no-store" in pixel.headers["cache-control"]
    assert "no-cache" in pixel.headers["cache-control"]
    first = delivery_row(api, sent.delivery_id)
    assert first["state"] == "opened"
    assert first["opened_at"] is not None
    advance(api, 3600)
    assert web.get(sent.links.open_pixel_url()).content == pixel.content
    assert delivery_row(api, sent.delivery_id)["opened_at"] == first["opened_at"]
    assert reports(api, sent.delivery_id, "opened") == [(None, "tracking"), (None, "tracking")]
    opens = [a for a in api.activities(person) if a["type"] == "opened_email"]
    assert len(opens) == 2
    assert {a["delivery_id"] for a in opens} == {sent.delivery_id}


# -- click redirects -------------------------------------------------------------------------------------


def test_click_redirects_to_the_signed_url_and_records_the_click(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    sent = deliver(api, person)
    target = "https://shop.example.com/orders/42?utm_source=mail&x=a%20b#details"
    response = web.get(sent.links.tracked(target))
    assert response.status_code == 302
    assert response.headers["location"] == target
    row = delivery_row(api, sent.delivery_id)
    assert row["state"] == "clicked"
    assert row["clicked_at"] is not None
    assert reports(api, sent.delivery_id, "clicked") == [(target, "tracking")]
    clicks = [a for a in api.activities(person) if a["type"] == "clicked_email"]
    assert [a["data"]["href"] for a in clicks] == [target]
    # A second click is logged too and still redirects.
    assert web.get(sent.links.tracked(target)).headers["location"] == target
    assert len(reports(api, sent.delivery_id, "clicked")) == 2


def test_tampered_or_misused_tokens_are_not_found_and_never_redirect(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    sent = deliver(api, person, rendered={"html": "<p>hi</p>"})
    click = sent.links.tracked("https://example.com/")
    for url in (
        click,
        sent.links.open_pixel_url(),
        sent.links.unsubscribe_url(),
        sent.links.subscription_preferences_url(),
        sent.links.view_in_browser_url(),
    ):
        assert_not_found_page(web.get(tampered(url)))
    assert_not_found_page(web.post(tampered(sent.links.unsubscribe_url()), data=ONE_CLICK))
    # A token is only good for its own purpose: a click token is no unsubscribe link, and so on.
    _, workspace_id, click_token = split(click)
    base = api.server.base_url
    for kind in ("o", "u", "p", "v"):
        assert_not_found_page(web.get(f"{base}/{kind}/{workspace_id}/{click_token}"))
    assert_not_found_page(web.post(f"{base}/u/{workspace_id}/{click_token}", data=ONE_CLICK))
    # Workspace ids that cannot exist.
    for bad in ("abc", "0", "-1", "99999999999999999999999", str(2**63)):
        assert_not_found_page(web.get(f"{base}/c/{bad}/{click_token}"))
    assert_not_found_page(web.get(f"{base}/c/{workspace_id}/not-a-token"))
    row = delivery_row(api, sent.delivery_id)
    assert (row["state"], row["clicked_at"], row["opened_at"], row["unsubscribed_at"]) == (
        "sent",
        None,
        None,
        None,
    )
    assert customer(api, person)["unsubscribed"] is False


def test_tokens_of_one_workspace_are_not_found_under_another(
    api: Api, other_api: Api, web: httpx.Client
) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    identify(other_api, person, email=f"{person}@example.com")
    sent = deliver(api, person, rendered={"html": "<p>hi</p>"})
    # The other workspace has signing keys of its own (it sent a message too).
    deliver(other_api, person)
    other = other_api.creds.workspace_id
    for url in (
        sent.links.tracked("https://example.com/"),
        sent.links.open_pixel_url(),
        sent.links.unsubscribe_url(),
        sent.links.subscription_preferences_url(),
        sent.links.view_in_browser_url(),
    ):
        assert_not_found_page(web.get(under(url, other)))
    assert_not_found_page(web.post(under(sent.links.unsubscribe_url(), other), data=ONE_CLICK))
    assert customer(api, person)["unsubscribed"] is False
    assert customer(other_api, person)["unsubscribed"] is False
    assert delivery_row(api, sent.delivery_id)["state"] == "sent"


# -- unsubscribe -----------------------------------------------------------------------------------------


def test_unsubscribe_page_asks_first_and_changes_nothing(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    sent = deliver(api, person)
    for _ in range(2):  # mail scanners fetch links, sometimes more than once
        page = web.get(sent.links.unsubscribe_url())
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert '<form method="post">' in page.text
        assert 'value="unsubscribe"' in page.text
        assert f"{person}@example.com" in page.text
    assert customer(api, person)["unsubscribed"] is False
    assert delivery_row(api, sent.delivery_id)["unsubscribed_at"] is None
    assert reports(api, sent.delivery_id, "unsubscribed") == []


def test_one_click_unsubscribe_then_resubscribe(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    add_webhook(api, "customer_unsubscribed", "customer_subscribed", "email_unsubscribed")
    segment = ok(
        api.app.post(
            "/v1/segments",
            json={
                "segment": {
                    "name": "Unsubscribed",
                    "conditions": {"attribute": {"field": "unsubscribed", "operator": "is_true"}},
                }
            },
        )
    )["segment"]["id"]
    wait_built(api, segment)
    sent = deliver(api, person)
    url = sent.links.unsubscribe_url()

    response = web.post(url, data=ONE_CLICK)
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    found = customer(api, person)
    assert found["unsubscribed"] is True
    assert found["attributes"]["unsubscribed"] == "true"
    row = delivery_row(api, sent.delivery_id)
    assert row["state"] == "unsubscribed"
    assert row["unsubscribed_at"] is not None
    assert reports(api, sent.delivery_id, "unsubscribed") == [(None, "unsubscribe")]
    log = api.activities(person)
    assert any(a["type"] == "unsubscribed" and a["delivery_id"] == sent.delivery_id for a in log)
    change = next(
        a for a in log if a["type"] == "attribute_change" and "unsubscribed" in a["data"]["changes"]
    )
    assert change["data"]["changes"]["unsubscribed"] == {"from": False, "to": True}
    [event] = webhook_events(api, "customer", "unsubscribed")
    assert event["data"]["identifiers"]["id"] == person
    assert event["data"]["email_address"] == f"{person}@example.com"
    assert "delivery_id" not in event["data"]  # Customer.io names only the person here
    assert len(webhook_events(api, "email", "unsubscribed")) == 1
    # Real-time: the segment on `unsubscribed` has the person as soon as the post returned.
    members = ok(api.app.get(f"/v1/segments/{segment}/membership"))["ids"]
    assert members == [person]

    # A mail client posting again changes nothing more.
    assert web.post(url, data=ONE_CLICK).status_code == 200
    assert len(reports(api, sent.delivery_id, "unsubscribed")) == 1
    assert len(webhook_events(api, "customer", "unsubscribed")) == 1

    # The page now offers to subscribe again, which a form post does.
    page = web.get(url)
    assert 'value="resubscribe"' in page.text
    again = web.post(url, data={"action": "resubscribe"})
    assert again.status_code == 200
    assert "You are subscribed again." in again.text
    assert customer(api, person)["unsubscribed"] is False
    [event] = webhook_events(api, "customer", "subscribed")
    assert event["data"]["identifiers"]["id"] == person
    assert ok(api.app.get(f"/v1/segments/{segment}/membership"))["ids"] == []


def test_multipart_one_click_unsubscribes(api: Api, web: httpx.Client) -> None:
    """RFC 8058 lets the mail client send the one-click body as multipart/form-data."""
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    sent = deliver(api, person)
    response = web.post(sent.links.unsubscribe_url(), files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert customer(api, person)["unsubscribed"] is True


def test_unsubscribe_link_of_a_deleted_person_still_answers(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    sent = deliver(api, person)
    assert api.track.delete(f"/api/v1/customers/{person}").status_code == 200
    assert web.get(sent.links.unsubscribe_url()).status_code == 200
    response = web.post(sent.links.unsubscribe_url(), data=ONE_CLICK)
    assert response.status_code == 200
    assert delivery_row(api, sent.delivery_id)["unsubscribed_at"] is not None
    assert_not_found_page(web.get(sent.links.subscription_preferences_url()))


# -- subscription center ---------------------------------------------------------------------------------


def test_subscription_center_shows_topics_and_saves_choices(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    add_webhook(api, "customer_cio_subscription_preferences_changed", "customer_unsubscribed")
    news = create_topic(api, "News & <updates>", description="Monthly, <b>short</b>")
    offers = create_topic(api, "Offers", subscribed_by_default=False)
    sent = deliver(api, person)
    url = sent.links.subscription_preferences_url()

    page = web.get(url)
    assert page.status_code == 200
    assert "News &amp; &lt;updates&gt;" in page.text
    assert "Monthly, &lt;b&gt;short&lt;/b&gt;" in page.text
    assert "<updates>" not in page.text
    boxes = checkboxes(page.text)
    # Defaults where the person chose nothing.
    assert boxes == {f"topic_{news['id']}": True, f"topic_{offers['id']}": False, "unsubscribed": False}
    assert "cio_subscription_preferences" not in customer(api, person)["attributes"]

    # Opt out of news, into offers.
    saved = web.post(url, data=preferences_form(page.text, checked={f"topic_{offers['id']}"}))
    assert saved.status_code == 200
    assert "Your preferences are saved." in saved.text
    assert checkboxes(saved.text) == {
        f"topic_{news['id']}": False,
        f"topic_{offers['id']}": True,
        "unsubscribed": False,
    }
    expected = {"topics": {f"topic_{news['id']}": False, f"topic_{offers['id']}": True}}
    found = customer(api, person)
    assert orjson.loads(found["attributes"]["cio_subscription_preferences"]) == expected
    assert found["unsubscribed"] is False
    [event] = webhook_events(api, "customer", "cio_subscription_preferences_changed")
    assert orjson.loads(event["data"]["content"]) == expected
    assert event["data"]["identifiers"]["id"] == person
    assert event["data"]["delivery_id"] == sent.delivery_id
    change = next(a for a in api.activities(person) if a["type"] == "attribute_change")
    assert change["data"]["changes"]["cio_subscription_preferences"]["to"] == expected

    # Saving the same choices again changes nothing; ticking "all" unsubscribes, attributed to the message.
    web.post(url, data=preferences_form(saved.text, checked={f"topic_{offers['id']}"}))
    assert len(webhook_events(api, "customer", "cio_subscription_preferences_changed")) == 1
    web.post(url, data=preferences_form(saved.text, checked={f"topic_{offers['id']}", "unsubscribed"}))
    assert customer(api, person)["unsubscribed"] is True
    assert len(webhook_events(api, "customer", "unsubscribed")) == 1
    assert reports(api, sent.delivery_id, "unsubscribed") == [(None, "unsubscribe")]
    # Unticking it subscribes again.
    web.post(url, data=preferences_form(saved.text, checked=set()))
    found = customer(api, person)
    assert found["unsubscribed"] is False
    assert orjson.loads(found["attributes"]["cio_subscription_preferences"]) == {
        "topics": {f"topic_{news['id']}": False, f"topic_{offers['id']}": False}
    }


def test_subscription_center_saves_only_its_own_form(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com", unsubscribed=True)
    topic = create_topic(api, "News")
    sent = deliver(api, person)
    url = sent.links.subscription_preferences_url()
    # An empty post would otherwise read as "every box unticked" and resubscribe the person.
    for body in ({}, ONE_CLICK, {"shown": str(topic["id"])}):
        response = web.post(url, data=body)
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("text/html")
    found = customer(api, person)
    assert found["unsubscribed"] is True
    assert "cio_subscription_preferences" not in found["attributes"]
    # Topics of another workspace or unknown ids named by a hand-made form are ignored.
    web.post(url, data={"form": "preferences", "shown": ["999999999", "x"], "unsubscribed": "on"})
    assert "cio_subscription_preferences" not in customer(api, person)["attributes"]


def test_person_bound_subscription_center_link(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    topic = create_topic(api, "News")
    answer = ok(api.app.get(f"/v1/subscription_center/{person}/token"))
    workspace_id = api.creds.workspace_id
    assert answer["url"] == f"{api.server.base_url}/p/{workspace_id}/person/{answer['token']}"
    by_email = ok(api.app.get(f"/v1/subscription_center/{person}@example.com/token"))
    assert by_email["url"].startswith(f"{api.server.base_url}/p/{workspace_id}/person/")
    typed = api.app.get(f"/v1/subscription_center/{person}@example.com/token", params={"id_type": "email"})
    assert ok(typed)["token"]

    page = web.get(answer["url"])
    assert page.status_code == 200
    assert checkboxes(page.text) == {f"topic_{topic['id']}": True, "unsubscribed": False}
    saved = web.post(answer["url"], data=preferences_form(page.text, checked=set()))
    assert saved.status_code == 200
    attributes = customer(api, person)["attributes"]
    assert orjson.loads(attributes["cio_subscription_preferences"]) == {
        "topics": {f"topic_{topic['id']}": False}
    }

    # The token is only a subscription center link, of this workspace, for 24 hours.
    base = api.server.base_url
    assert_not_found_page(web.get(f"{base}/p/{workspace_id}/{answer['token']}"))
    assert_not_found_page(web.get(f"{base}/u/{workspace_id}/{answer['token']}"))
    assert_not_found_page(web.get(tampered(answer["url"])))
    advance(api, 86400 + 60)
    expired = web.get(answer["url"])
    assert expired.status_code == 410
    assert "expired" in expired.text
    assert web.post(answer["url"], data=preferences_form(page.text, checked=set())).status_code == 410

    assert "no person" in app_error(api.app.get("/v1/subscription_center/nobody/token"), 400)
    app_error(api.app.get(f"/v1/subscription_center/{person}/token", params={"id_type": "phone"}), 400)


# -- view in browser -------------------------------------------------------------------------------------


def test_view_in_browser_serves_the_message_as_sent(api: Api, web: httpx.Client) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    body = (
        '<html><body><p>Hello <a href="https://example.com/">there</a></p><script>x()</script></body></html>'
    )
    sent = deliver(api, person, rendered={"html": body, "text": "Hello"})
    response = web.get(sent.links.view_in_browser_url())
    assert response.status_code == 200
    assert response.text == body
    # The sender's HTML runs in a sandbox: no scripts, no forms, no access to Tidings' origin.
    assert response.headers["content-security-policy"].startswith("sandbox ")
    assert delivery_row(api, sent.delivery_id)["opened_at"] is None

    text_only = deliver(api, person, rendered={"text": "Plain <text>"})
    plain = web.get(text_only.links.view_in_browser_url())
    assert "Plain &lt;text&gt;" in plain.text

    forgotten = deliver(api, person, rendered=None, retain=False)
    gone = web.get(forgotten.links.view_in_browser_url())
    assert gone.status_code == 200
    assert "not kept" in gone.text


# -- topics (App API) ------------------------------------------------------------------------------------


def test_subscription_topics_api(api: Api, other_api: Api) -> None:
    assert ok(api.app.get("/v1/subscription_topics")) == {"topics": []}
    news = create_topic(api, "News", description="Monthly")
    assert news == {
        "id": news["id"],
        "identifier": f"topic_{news['id']}",
        "name": "News",
        "description": "Monthly",
        "subscribed_by_default": True,
    }
    wrapped = ok(
        api.app.post(
            "/v1/subscription_topics", json={"topic": {"name": "Offers", "subscribed_by_default": False}}
        )
    )["topic"]
    assert wrapped["subscribed_by_default"] is False
    listed = ok(api.app.get("/v1/subscription_topics"))["topics"]
    assert [topic["name"] for topic in listed] == ["News", "Offers"]
    assert ok(api.app.get(f"/v1/subscription_topics/{news['id']}"))["topic"] == news

    changed = ok(
        api.app.put(
            f"/v1/subscription_topics/{news['id']}",
            json={"name": "Newsletter", "subscribed_by_default": False},
        )
    )["topic"]
    assert (changed["name"], changed["description"], changed["subscribed_by_default"]) == (
        "Newsletter",
        "Monthly",
        False,
    )
    assert "exists already" in app_error(
        api.app.post("/v1/subscription_topics", json={"name": "Offers"}), 409
    )
    app_error(api.app.put(f"/v1/subscription_topics/{news['id']}", json={"name": "Offers"}), 409)
    app_error(api.app.post("/v1/subscription_topics", json={"name": ""}), 400)
    app_error(
        api.app.post("/v1/subscription_topics", json={"name": "X", "subscribed_by_default": "yes"}), 400
    )
    app_error(api.app.post("/v1/subscription_topics", json={"description": "no name"}), 400)
    app_error(api.app.get("/v1/subscription_topics/99999999999"), 404)
    app_error(api.app.get("/v1/subscription_topics/nope"), 400)
    # Another workspace neither sees nor touches them.
    assert ok(other_api.app.get("/v1/subscription_topics")) == {"topics": []}
    app_error(other_api.app.get(f"/v1/subscription_topics/{news['id']}"), 404)
    app_error(other_api.app.delete(f"/v1/subscription_topics/{news['id']}"), 404)
    assert create_topic(other_api, "News")["name"] == "News"
    unauthenticated = httpx.get(f"{api.server.base_url}/v1/subscription_topics", timeout=30)
    assert unauthenticated.status_code == 401

    # Deleting a topic forgets people's choices about it (and only about it).
    person = unique_id()
    topics = {f"topic_{news['id']}": True, f"topic_{wrapped['id']}": False}
    identify(api, person, cio_subscription_preferences={"topics": topics})
    assert ok(api.app.delete(f"/v1/subscription_topics/{news['id']}")) == {}
    assert [topic["id"] for topic in ok(api.app.get("/v1/subscription_topics"))["topics"]] == [wrapped["id"]]
    attributes = customer(api, person)["attributes"]
    assert orjson.loads(attributes["cio_subscription_preferences"]) == {
        "topics": {f"topic_{wrapped['id']}": False}
    }
    app_error(api.app.delete(f"/v1/subscription_topics/{news['id']}"), 404)


# -- ESP suppression (App API) ---------------------------------------------------------------------------


def test_esp_suppression_api(api: Api, other_api: Api) -> None:
    assert ok(api.app.get("/v1/esp/suppression/bounces"))["suppressions"] == []
    for index in range(3):
        added = api.app.post(
            f"/v1/esp/suppression/bounces/Person{index}@Example.com", json={"reason": f"r{index}"}
        )
        assert ok(added) == {}
    listed = ok(api.app.get("/v1/esp/suppression/bounces"))["suppressions"]
    assert [entry["email"] for entry in listed] == [f"person{index}@example.com" for index in range(3)]
    assert [entry["reason"] for entry in listed] == ["r0", "r1", "r2"]
    assert all(isinstance(entry["created"], int) for entry in listed)
    page = ok(api.app.get("/v1/esp/suppression/bounces", params={"limit": 1, "offset": 1}))["suppressions"]
    assert [entry["email"] for entry in page] == ["person1@example.com"]
    assert ok(api.app.get("/v1/esp/suppression/blocks"))["suppressions"] == []

    found = ok(api.app.get("/v1/esp/search_suppression/PERSON0@example.com"))["suppressions"]
    assert [(entry["email"], entry["type"], entry["reason"]) for entry in found] == [
        ("person0@example.com", "bounces", "r0")
    ]
    # Without a body the reason says where it came from; another list takes the address over.
    ok(api.app.post("/v1/esp/suppression/blocks/person0@example.com"))
    [moved] = ok(api.app.get("/v1/esp/search_suppression/person0@example.com"))["suppressions"]
    assert moved["type"] == "blocks"
    assert moved["reason"]
    app_error(api.app.delete("/v1/esp/suppression/bounces/person0@example.com"), 404)
    assert ok(api.app.delete("/v1/esp/suppression/blocks/person0@example.com")) == {}
    assert ok(api.app.get("/v1/esp/search_suppression/person0@example.com")) == {"suppressions": []}

    app_error(api.app.get("/v1/esp/suppression/unsubscribes"), 400)
    app_error(api.app.post("/v1/esp/suppression/unsubscribes/a@example.com"), 400)
    app_error(api.app.post("/v1/esp/suppression/bounces/not-an-address"), 400)
    app_error(api.app.post("/v1/esp/suppression/bounces/a@example.com", json={"reason": 5}), 400)
    app_error(api.app.get("/v1/esp/suppression/bounces", params={"limit": 1001}), 400)
    # Another workspace's list is its own.
    assert ok(other_api.app.get("/v1/esp/suppression/bounces"))["suppressions"] == []
    assert ok(other_api.app.get("/v1/esp/search_suppression/person1@example.com")) == {"suppressions": []}
    app_error(other_api.app.delete("/v1/esp/suppression/bounces/person1@example.com"), 404)

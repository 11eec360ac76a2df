"""Message (delivery) read APIs: ``/v1/messages``, archived content, a person's messages, and a
transactional message's deliveries, metrics and link metrics.

Deliveries are made through the send API with ``send_at`` far ahead, so the server's worker never claims
them; every later state, metric time and click is then laid down directly in the store, which is what
the read APIs report on.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
import pytest

from tests.harness import Api

DAY = 86400
HOUR = 3600
# Far enough ahead that the sending worker leaves the delivery queued for the whole test.
LATER = 80 * DAY


def send(api: Api, person: str = "p1", **extra: Any) -> str:
    body: dict[str, Any] = {
        "identifiers": {"id": person},
        "to": f"{person}@example.com",
        "from": "shop@example.com",
        "subject": "Hi {{customer.first_name}}",
        "body": "<p>Hello</p>",
        "send_at": int(time.time()) + LATER,
        **extra,
    }
    response = api.app.post("/v1/send/email", json=body)
    assert response.status_code == 200, response.text
    delivery_id: str = response.json()["delivery_id"]
    return delivery_id


def update(api: Api, delivery_id: str, **columns: Any) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in columns)
    api.server.execute(f"UPDATE deliveries SET {assignments} WHERE id = :id", id=delivery_id, **columns)


def set_rendered(api: Api, delivery_id: str, rendered: dict[str, Any]) -> None:
    value = "CAST(:rendered AS JSONB)" if api.server.backend == "postgres" else ":rendered"
    api.server.execute(
        f"UPDATE deliveries SET rendered = {value} WHERE id = :id",
        id=delivery_id,
        rendered=orjson.dumps(rendered).decode(),
    )


def click(api: Api, delivery_id: str, href: str, at: int) -> None:
    api.server.execute(
        "INSERT INTO delivery_metric_reports"
        " (workspace_id, delivery_id, metric, timestamp, href, source, received_at)"
        " VALUES (:ws, :delivery_id, 'clicked', :at, :href, 'tracking', :at)",
        ws=api.creds.workspace_id,
        delivery_id=delivery_id,
        at=at,
        href=href,
    )


def messages(api: Api, path: str = "/v1/messages", **params: Any) -> list[dict[str, Any]]:
    response = api.app.get(path, params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["messages"]
    return found


def ids(api: Api, path: str = "/v1/messages", **params: Any) -> list[str]:
    return [m["id"] for m in messages(api, path, **params)]


def create_template(api: Api, name: str = "Receipt") -> int:
    response = api.app.post(
        "/v1/transactional",
        json={
            "name": name,
            "type": "email",
            "content": {"from": "shop@example.com", "subject": "Your receipt", "body": "<p>Thanks</p>"},
        },
    )
    assert response.status_code == 200, response.text
    template_id: int = response.json()["message"]["id"]
    return template_id


# -- one message ---------------------------------------------------------------------------------------


def test_a_message_has_customer_io_delivery_shape(api: Api) -> None:
    api.track.put("/api/v1/customers/p1", json={"email": "p1@example.com"})
    cio_id = api.attributes("p1").json()["customer"]["identifiers"]["cio_id"]
    template_id = create_template(api)
    delivery_id = send(api, transactional_message_id=template_id)
    update(
        api,
        delivery_id,
        created_at=1_700_000_000,
        sent_at=1_700_000_010,
        opened_at=1_700_000_020,
        state="opened",
        recipient="p1@example.com",
        subject="Your receipt",
        campaign_id=4,
        action_id=5,
        trigger_event_id="01HEVENT",
    )
    response = api.app.get(f"/v1/messages/{delivery_id}")
    assert response.status_code == 200
    assert response.json() == {
        "message": {
            "id": delivery_id,
            "deduplicate_id": f"{delivery_id}:1700000000",
            "message_template_id": template_id,
            "customer_id": "p1",
            "customer_identifiers": {"id": "p1", "email": "p1@example.com", "cio_id": cio_id},
            "recipient": "p1@example.com",
            "subject": "Your receipt",
            "metrics": {"created": 1_700_000_000, "sent": 1_700_000_010, "opened": 1_700_000_020},
            "created": 1_700_000_000,
            "failure_message": None,
            "campaign_id": 4,
            "action_id": 5,
            "parent_action_id": None,
            "newsletter_id": None,
            "content_id": None,
            "broadcast_id": None,
            "trigger_event_id": "01HEVENT",
            "type": "email",
            "forgotten": False,
            "state": "opened",
        }
    }
    # The list shows the same object.
    assert messages(api) == [response.json()["message"]]


def test_unknown_message_and_another_workspaces_message_are_not_found(api: Api, other_api: Api) -> None:
    delivery_id = send(api)
    set_rendered(api, delivery_id, {"html": "<p>secret</p>"})
    for path in (f"/v1/messages/{delivery_id}", f"/v1/messages/{delivery_id}/archived_message"):
        assert api.app.get(path).status_code == 200
        missing = other_api.app.get(path)
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["status"] == "404"
        assert api.app.get(path.replace(delivery_id, "nope")).status_code == 404
    assert ids(other_api) == []
    other_api.track.put("/api/v1/customers/p1", json={})
    assert ids(other_api, "/v1/customers/p1/messages") == []


# -- lists and filters -----------------------------------------------------------------------------------


def test_filters(api: Api) -> None:
    plain = send(api, "p1")
    opened = send(api, "p1")
    bounced = send(api, "p2")
    texted = send(api, "p2")
    draft = send(api, "p3", queue_draft=True)
    update(api, plain, created_at=1000)
    update(api, opened, created_at=2000, sent_at=2001, opened_at=2002, state="opened", campaign_id=7)
    update(api, bounced, created_at=3000, sent_at=3001, bounced_at=3002, state="bounced", newsletter_id=8)
    update(api, texted, created_at=4000, sent_at=4001, state="sent", channel="sms", action_id=9)
    update(api, draft, created_at=5000)

    # Newest first; drafts only when asked for.
    assert ids(api) == [texted, bounced, opened, plain]
    assert ids(api, drafts="true") == [draft]
    assert ids(api, drafts="false") == [texted, bounced, opened, plain]
    assert ids(api, type="email") == [bounced, opened, plain]
    assert ids(api, type="sms") == [texted]
    assert ids(api, type="twilio") == [texted]
    assert ids(api, metric="sent") == [texted, bounced, opened]
    assert ids(api, metric="opened") == [opened]
    assert ids(api, metric="bounced") == [bounced]
    assert ids(api, metric="created") == [texted, bounced, opened, plain]
    assert ids(api, metric="clicked") == []
    assert ids(api, campaign_id=7) == [opened]
    assert ids(api, newsletter_id=8) == [bounced]
    assert ids(api, action_id=9) == [texted]
    assert ids(api, start_ts=2000, end_ts=3000) == [bounced, opened]
    assert ids(api, start_ts=3001) == [texted]
    assert ids(api, end_ts=999) == []
    assert ids(api, metric="sent", type="email", start_ts=2500) == [bounced]

    bad_metric = api.app.get("/v1/messages", params={"metric": "teleported"})
    assert bad_metric.status_code == 400
    assert "metric" in bad_metric.json()["errors"][0]["detail"]
    huge_cursor = base64.urlsafe_b64encode(f"{2**70}:x".encode()).decode()
    for params in (
        {"limit": 0},
        {"limit": 1001},
        {"start": "!!not a cursor"},
        {"start": huge_cursor},
        {"campaign_id": "x"},
        {"campaign_id": 2**64},
        {"start_ts": 2**63},
        {"type": "email\x00"},
    ):
        assert api.app.get("/v1/messages", params=params).status_code == 400, params


def test_cursor_pages_without_duplicates_or_gaps_while_rows_arrive(api: Api) -> None:
    made = [send(api, f"p{index}") for index in range(7)]
    # Pairs share a creation second, so the cursor must also order by id within a second.
    for index, delivery_id in enumerate(made):
        update(api, delivery_id, created_at=10_000 + index // 2)
    expected = ids(api, limit=100)
    assert sorted(expected) == sorted(made)

    seen: list[str] = []
    start = ""
    pages = 0
    while True:
        page = api.app.get("/v1/messages", params={"limit": 2, "start": start}).json()
        seen.extend(m["id"] for m in page["messages"])
        pages += 1
        if pages == 2:
            # A newer message arriving mid-way does not shift the pages still to come.
            send(api, "late")
        if not page["next"]:
            break
        start = page["next"]
    assert seen == expected
    assert pages == 4
    # A page that ends exactly at the last message has no next page.
    assert api.app.get("/v1/messages", params={"limit": 8}).json()["next"] == ""


def test_a_persons_messages(api: Api) -> None:
    api.track.put("/api/v1/customers/p1", json={"email": "p1@example.com"})
    first = send(api, "p1")
    second = send(api, "p1")
    send(api, "p2")
    update(api, first, created_at=100, sent_at=101, state="sent")
    update(api, second, created_at=200)
    cio_id = api.attributes("p1").json()["customer"]["identifiers"]["cio_id"]
    assert ids(api, "/v1/customers/p1/messages") == [second, first]
    assert ids(api, "/v1/customers/p1@example.com/messages", id_type="email") == [second, first]
    assert ids(api, f"/v1/customers/{cio_id}/messages", id_type="cio_id") == [second, first]
    assert ids(api, "/v1/customers/p1/messages", metric="sent") == [first]
    assert ids(api, "/v1/customers/p1/messages", start_ts=150) == [second]
    page = api.app.get("/v1/customers/p1/messages", params={"limit": 1}).json()
    assert [m["id"] for m in page["messages"]] == [second]
    rest = api.app.get("/v1/customers/p1/messages", params={"limit": 1, "start": page["next"]}).json()
    assert ([m["id"] for m in rest["messages"]], rest["next"]) == ([first], "")
    assert api.app.get("/v1/customers/nobody/messages").status_code == 404
    assert api.app.get("/v1/customers/p1/messages", params={"id_type": "email"}).status_code == 404


# -- archived content --------------------------------------------------------------------------------------


def test_archived_message_with_retained_content(api: Api) -> None:
    delivery_id = send(api)
    update(
        api, delivery_id, recipient="p1@example.com", subject="Hi Ada", sent_at=1_700_000_005, state="sent"
    )
    update(api, delivery_id, created_at=1_700_000_000)
    set_rendered(
        api,
        delivery_id,
        {
            "from": "shop@example.com",
            "to": "p1@example.com",
            "reply_to": "help@example.com",
            "subject": "Hi Ada",
            "preheader": "Read me",
            "html": "<p>Hello</p>",
            "text": "Hello",
            "amp": None,
            "headers": {"X-Tag": "welcome"},
        },
    )
    response = api.app.get(f"/v1/messages/{delivery_id}/archived_message")
    assert response.status_code == 200
    archived = response.json()["archived_message"]
    assert archived["id"] == delivery_id
    assert archived["recipient"] == "p1@example.com"
    assert archived["subject"] == "Hi Ada"
    assert archived["body"] == "<p>Hello</p>"
    assert archived["body_plain"] == "Hello"
    assert archived["from"] == "shop@example.com"
    assert archived["reply_to"] == "help@example.com"
    assert archived["preheader_text"] == "Read me"
    assert orjson.loads(archived["headers"]) == [{"name": "X-Tag", "value": "welcome"}]
    assert archived["metrics"] == {"created": 1_700_000_000, "sent": 1_700_000_005}
    assert archived["forgotten"] is False


def test_archived_message_without_retention_is_forgotten(api: Api) -> None:
    delivery_id = send(api, disable_message_retention=True)
    # What the sender leaves behind for such a delivery: sent, content dropped.
    update(api, delivery_id, recipient="p1@example.com", sent_at=int(time.time()), state="sent")
    archived = api.app.get(f"/v1/messages/{delivery_id}/archived_message").json()["archived_message"]
    assert archived["forgotten"] is True
    assert archived["body"] is None
    assert archived["body_plain"] is None
    assert archived["recipient"] == "p1@example.com"
    assert "sent" in archived["metrics"]


def test_archived_message_not_yet_rendered_is_empty_but_not_forgotten(api: Api) -> None:
    delivery_id = send(api)
    archived = api.app.get(f"/v1/messages/{delivery_id}/archived_message").json()["archived_message"]
    assert (archived["body"], archived["forgotten"]) == (None, False)


# -- a transactional message's deliveries and metrics ------------------------------------------------------


def test_transactional_message_deliveries(api: Api, other_api: Api) -> None:
    template_id = create_template(api)
    create_template(api, "Other")
    renamed = api.app.put(f"/v1/transactional/{template_id}", json={"trigger_name": "receipt"})
    assert renamed.status_code == 200, renamed.text
    sent = send(api, transactional_message_id=template_id)
    failed = send(api, "p2", transactional_message_id=template_id)
    draft = send(api, "p3", transactional_message_id=template_id, queue_draft=True)
    send(api, "p4")
    update(api, sent, created_at=100, sent_at=101, state="sent")
    update(api, failed, created_at=200, failed_at=201, state="failed", failure_message="no route")
    update(api, draft, created_at=300)

    path = f"/v1/transactional/{template_id}/messages"
    assert ids(api, path) == [failed, sent]
    assert ids(api, "/v1/transactional/receipt/messages") == [failed, sent]
    assert ids(api, path, state="failed") == [failed]
    assert ids(api, path, state="drafted") == [draft]
    assert ids(api, path, metric="sent") == [sent]
    assert ids(api, path, start_ts=150, end_ts=250) == [failed]
    assert messages(api, path, state="failed")[0]["failure_message"] == "no route"
    page = api.app.get(path, params={"limit": 1}).json()
    assert api.app.get(path, params={"limit": 1, "start": page["next"]}).json()["messages"][0]["id"] == sent
    assert api.app.get(path, params={"state": "lost"}).status_code == 400
    assert api.app.get("/v1/transactional/999999/messages").status_code == 404
    assert other_api.app.get(path).status_code == 404


def test_transactional_metrics_count_each_metric_per_bucket(api: Api, other_api: Api) -> None:
    template_id = create_template(api)
    other_template = create_template(api, "Other")
    now = int(time.time())
    steps = 3

    def middle(bucket: int, period: int = DAY) -> int:
        """A time in the middle of bucket ``bucket`` (0 = oldest) of ``steps`` buckets ending now."""
        return now - (steps - bucket) * period + period // 2

    old, mid, recent = (send(api, f"p{i}", transactional_message_id=template_id) for i in range(3))
    unrelated = send(api, "p9", transactional_message_id=other_template)
    update(api, old, created_at=middle(0), sent_at=middle(0), delivered_at=middle(1), state="delivered")
    update(
        api,
        mid,
        created_at=middle(1),
        sent_at=middle(1),
        opened_at=middle(2),
        clicked_at=middle(2),
        state="clicked",
    )
    update(api, recent, created_at=middle(2), failed_at=middle(2), state="failed")
    update(api, unrelated, created_at=middle(2), sent_at=middle(2), state="sent")
    # Outside the window: counted nowhere.
    too_old = send(api, "p5", transactional_message_id=template_id)
    update(api, too_old, created_at=now - 10 * DAY, sent_at=now - 10 * DAY, state="sent")
    draft = send(api, "p6", transactional_message_id=template_id, queue_draft=True)
    update(api, draft, created_at=middle(2), drafted_at=middle(2))

    response = api.app.get(
        f"/v1/transactional/{template_id}/metrics", params={"period": "days", "steps": steps}
    )
    assert response.status_code == 200, response.text
    series = response.json()["metric"]["series"]
    assert series["created"] == [1, 1, 2]
    assert series["sent"] == [1, 1, 0]
    assert series["delivered"] == [0, 1, 0]
    assert series["opened"] == [0, 0, 1]
    assert series["clicked"] == [0, 0, 1]
    assert series["failed"] == [0, 0, 1]
    assert series["drafted"] == [0, 0, 1]
    for metric in (
        "converted",
        "bounced",
        "spammed",
        "unsubscribed",
        "dropped",
        "undeliverable",
        "attempted",
    ):
        assert series[metric] == [0, 0, 0], metric

    hourly = api.app.get(
        f"/v1/transactional/{template_id}/metrics", params={"period": "hours", "steps": 2}
    ).json()["metric"]["series"]
    assert hourly["created"] == [0, 0]
    # Months are calendar months back from now: 45 days ago is in the month before last.
    update(api, too_old, sent_at=now - 45 * DAY)
    monthly = api.app.get(
        f"/v1/transactional/{template_id}/metrics", params={"period": "months", "steps": 3}
    ).json()["metric"]["series"]
    assert monthly["sent"] == [0, 1, 2]

    # Customer.io's step rules: the default and 0 mean the maximum, fewer than 2 means 2.
    def length(**params: Any) -> int:
        body = api.app.get(f"/v1/transactional/{template_id}/metrics", params=params).json()
        return len(body["metric"]["series"]["sent"])

    assert length() == 45
    assert length(period="hours", steps=0) == 24
    assert length(period="weeks", steps=1) == 2
    assert length(period="months", steps=500) == 121
    assert (
        api.app.get(f"/v1/transactional/{template_id}/metrics", params={"period": "years"}).status_code == 400
    )
    assert api.app.get("/v1/transactional/999999/metrics").status_code == 404
    assert other_api.app.get(f"/v1/transactional/{template_id}/metrics").status_code == 404


@pytest.mark.parametrize("unique", [False, True])
def test_transactional_link_metrics(api: Api, other_api: Api, unique: bool) -> None:
    template_id = create_template(api)
    other_template = create_template(api, "Other")
    now = int(time.time())
    steps = 4

    def middle(bucket: int) -> int:
        return now - (steps - bucket) * HOUR + HOUR // 2

    ada = send(api, "ada", transactional_message_id=template_id)
    ada_again = send(api, "ada", transactional_message_id=template_id)
    bob = send(api, "bob", transactional_message_id=template_id)
    elsewhere = send(api, "cy", transactional_message_id=other_template)
    pricing, docs = "https://example.com/pricing", "https://example.com/docs"
    click(api, ada, pricing, middle(1))
    click(api, ada, pricing, middle(1))
    click(api, ada_again, pricing, middle(1))
    click(api, bob, pricing, middle(3))
    click(api, bob, docs, middle(0))
    click(api, elsewhere, docs, middle(3))
    click(api, bob, docs, now - 10 * HOUR)

    response = api.app.get(
        f"/v1/transactional/{template_id}/metrics/links",
        params={"period": "hours", "steps": steps, "unique": str(unique).lower()},
    )
    assert response.status_code == 200, response.text
    links = response.json()["links"]
    assert [link["link"]["href"] for link in links] == [pricing, docs]
    by_href = {link["link"]["href"]: link for link in links}
    assert by_href[pricing]["metric"]["series"]["clicked"] == ([0, 1, 0, 1] if unique else [0, 3, 0, 1])
    assert by_href[docs]["metric"]["series"]["clicked"] == [1, 0, 0, 0]
    # Link ids are stable numbers, distinct per link.
    again = api.app.get(f"/v1/transactional/{template_id}/metrics/links").json()["links"]
    assert {link["link"]["href"]: link["link"]["id"] for link in again} == {
        href: link["link"]["id"] for href, link in by_href.items()
    }
    assert len({link["link"]["id"] for link in links}) == 2
    assert all(isinstance(link["link"]["id"], int) for link in links)
    assert other_api.app.get(f"/v1/transactional/{template_id}/metrics/links").status_code == 404

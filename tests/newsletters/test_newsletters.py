"""Newsletters over HTTP against a running server with a real SMTP server: who gets them, when (now,
scheduled, in each recipient's time zone, rate limited, ramped), test sends, contents and translations,
metrics and messages that agree with the deliveries, and errors in the App API envelope."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from customerio.track import CustomerIO

from tests.harness import Api
from tests.mail import advance, eventually, mail_to, mails_to, ok
from tests.messaging.smtp_sink import SmtpSink
from tests.newsletters.conftest import create, error, get, messages, newsletter_body, now, sent

Email = Callable[[str], str]


def people(cio: CustomerIO, email: Email, count: int, prefix: str = "p", **attributes: object) -> list[str]:
    """``count`` pro-plan people, created in order (so their person keys are in that order)."""
    addresses = []
    for index in range(count):
        address = email(f"{prefix}{index}")
        cio.identify(id=f"{prefix}{index}", email=address, plan="pro", first_name=f"N{index}", **attributes)
        addresses.append(address)
    return addresses


def by_recipient(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(m["customer_identifiers"]["email"]): m for m in found}


def test_send_now_reaches_exactly_the_filtered_people(
    api: Api, cio: CustomerIO, email: Email, sink: SmtpSink
) -> None:
    pros = people(cio, email, 3)
    cio.identify(id="free", email=email("free"), plan="free")
    cio.identify(id="gone", email=email("gone"), plan="pro", unsubscribed=True)
    newsletter = create(api, send_now=True)
    assert newsletter["state"] == "sending"
    done = sent(api, newsletter["id"])
    assert done["recipients_count"] == 3
    assert done["sent_at"] is not None
    for index, address in enumerate(pros):
        (mail,) = mail_to(sink, address)
        assert mail.message["Subject"] == f"News for N{index}"
    found = eventually(
        lambda: (m := messages(api, newsletter["id"])) and all(x["state"] == "sent" for x in m) and m,
        what="all sent",
    )
    assert sorted(by_recipient(found)) == sorted(pros)
    assert all(m["newsletter_id"] == newsletter["id"] for m in found)
    assert mails_to(sink, email("free")) == []
    assert mails_to(sink, email("gone")) == []
    # Sending again is a conflict.
    error(api.app.post(f"/v1/newsletters/{newsletter['id']}/send"), 409)
    error(
        api.app.post(f"/v1/newsletters/{newsletter['id']}/schedule", json={"scheduled_at": now(api) + 60}),
        409,
    )
    error(api.app.put(f"/v1/newsletters/{newsletter['id']}", json={"name": "x"}), 409)


def test_draft_then_send_and_topic(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    topic = ok(api.app.post("/v1/subscription_topics", json={"name": "News", "subscribed_by_default": True}))[
        "topic"
    ]
    yes, no = people(cio, email, 2)
    cio.identify(id="p1", cio_subscription_preferences={"topics": {f"topic_{topic['id']}": False}})
    draft = create(api, subscription_topic_id=topic["id"])
    assert draft["state"] == "draft"
    assert draft["subscription_topic_id"] == topic["id"]
    changed = ok(api.app.put(f"/v1/newsletters/{draft['id']}", json={"name": "April news", "tags": ["a"]}))
    assert changed["newsletter"]["name"] == "April news"
    assert changed["newsletter"]["tags"] == ["a"]
    ok(api.app.post(f"/v1/newsletters/{draft['id']}/send"))
    sent(api, draft["id"])
    mail_to(sink, yes)
    found = eventually(
        lambda: (m := by_recipient(messages(api, draft["id"]))).get(no, {}).get("state") == "dropped" and m,
        what="topic drop",
    )
    assert "topic" in str(found[no]["failure_message"])
    assert mails_to(sink, no) == []


def test_scheduled_send_waits_for_its_time(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    (address,) = people(cio, email, 1)
    at = now(api) + 3 * 3600
    newsletter = create(api, scheduled_at=at)
    assert newsletter["state"] == "scheduled"
    assert newsletter["scheduled_at"] == at
    advance(api, 3600)
    time.sleep(1.0)
    assert get(api, newsletter["id"])["state"] == "scheduled"
    assert messages(api, newsletter["id"]) == []
    assert mails_to(sink, address) == []
    advance(api, 2 * 3600 + 5)
    sent(api, newsletter["id"])
    mail_to(sink, address)
    (message,) = messages(api, newsletter["id"])
    assert message["due_at"] >= at


def test_schedule_endpoint_and_reschedule(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    (address,) = people(cio, email, 1)
    draft = create(api)
    first = now(api) + 600
    ok(api.app.post(f"/v1/newsletters/{draft['id']}/schedule", json={"scheduled_at": first}))
    later = first + 3600
    moved = ok(api.app.post(f"/v1/newsletters/{draft['id']}/schedule", json={"scheduled_at": later}))
    assert moved["newsletter"]["scheduled_at"] == later
    advance(api, 700)
    time.sleep(1.0)
    assert get(api, draft["id"])["state"] == "scheduled"
    assert mails_to(sink, address) == []
    advance(api, 3600)
    sent(api, draft["id"])
    mail_to(sink, address)


def test_time_zone_send(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    tokyo = email("tokyo")
    paulo = email("paulo")
    plain = email("utc")
    cio.identify(id="tokyo", email=tokyo, plan="pro", timezone="Asia/Tokyo")
    cio.identify(id="paulo", email=paulo, plan="pro", timezone="America/Sao_Paulo")
    cio.identify(id="utc", email=plain, plan="pro", timezone="Not/AZone")
    at = now(api) + 2 * 86400
    newsletter = create(api)
    scheduled = ok(
        api.app.post(
            f"/v1/newsletters/{newsletter['id']}/schedule",
            json={"scheduled_at": at, "send_in_recipient_timezone": True},
        )
    )["newsletter"]
    assert scheduled["send_in_recipient_timezone"] is True

    def local(zone: str) -> int:
        wall = datetime.fromtimestamp(at, UTC).replace(tzinfo=None)
        return int(wall.replace(tzinfo=ZoneInfo(zone)).timestamp())

    # The expansion starts 14 hours ahead (UTC+14 comes first); nobody is due yet.
    advance(api, 2 * 86400 - 14 * 3600 + 60)
    sent(api, newsletter["id"])
    due = {k: int(v["due_at"]) for k, v in by_recipient(messages(api, newsletter["id"])).items()}
    assert due == {tokyo: local("Asia/Tokyo"), paulo: local("America/Sao_Paulo"), plain: at}
    assert due[tokyo] < due[plain] < due[paulo]
    time.sleep(0.5)
    assert mails_to(sink, tokyo) == []
    # Tokyo's local time comes first.
    advance(api, due[tokyo] - now(api) + 1)
    mail_to(sink, tokyo)
    time.sleep(0.5)
    assert mails_to(sink, plain) == []
    assert mails_to(sink, paulo) == []
    advance(api, due[plain] - now(api) + 1)
    mail_to(sink, plain)
    assert mails_to(sink, paulo) == []
    advance(api, due[paulo] - now(api) + 1)
    mail_to(sink, paulo)


def test_rate_limit_spacing(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    addresses = people(cio, email, 5)
    newsletter = create(api, send_now=True, rate_limit_email_rate=2, rate_limit_time_period=3600)
    sent(api, newsletter["id"])
    found = by_recipient(messages(api, newsletter["id"]))
    due = [int(found[a]["due_at"]) for a in addresses]
    start = due[0]
    assert [d - start for d in due] == [0, 0, 3600, 3600, 7200]
    mail_to(sink, addresses[0])
    mail_to(sink, addresses[1])
    time.sleep(0.5)
    assert all(mails_to(sink, a) == [] for a in addresses[2:])
    advance(api, start + 3600 - now(api) + 1)
    mail_to(sink, addresses[2])
    mail_to(sink, addresses[3])
    assert mails_to(sink, addresses[4]) == []


def test_spread_and_ramp(api: Api, cio: CustomerIO, email: Email) -> None:
    addresses = people(cio, email, 5)
    spread = create(
        api, send_now=True, rate_limit_email_rate=3, rate_limit_time_period=60, rate_limit_spread=True
    )
    ramp = create(api, send_now=True, ramp={"start": 2, "growth": 2})
    for newsletter, expected in ((spread, [0, 20, 40, 60, 80]), (ramp, [0, 0, 86400, 86400, 86400])):
        sent(api, newsletter["id"])
        found = by_recipient(messages(api, newsletter["id"]))
        due = [int(found[a]["due_at"]) for a in addresses]
        assert [d - due[0] for d in due] == expected, newsletter["name"]


def test_test_send_is_not_counted(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    (member,) = people(cio, email, 1)
    outsider = email("proof")
    newsletter = create(api)
    error(api.app.post(f"/v1/newsletters/{newsletter['id']}/test", json={"emails": [outsider]}), 400)
    result = ok(
        api.app.post(
            f"/v1/newsletters/{newsletter['id']}/test",
            json={"emails": [outsider], "identifiers": {"id": "p0"}},
        )
    )
    (mail,) = mail_to(sink, outsider)
    assert mail.message["Subject"] == "News for N0"
    delivery = ok(api.app.get(f"/v1/messages/{result['deliveries'][0]['delivery_id']}"))["message"]
    assert delivery["newsletter_id"] is None
    assert get(api, newsletter["id"])["state"] == "draft"
    assert messages(api, newsletter["id"]) == []
    series = ok(api.app.get(f"/v1/newsletters/{newsletter['id']}/metrics", params={"steps": 2}))
    assert sum(series["metric"]["series"]["sent"]) == 0
    assert mails_to(sink, member) == []


def test_contents_and_languages(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    english = email("en")
    french = email("fr")
    cio.identify(id="en", email=english, plan="pro")
    cio.identify(id="fr", email=french, plan="pro", language="fr")
    newsletter = create(api)
    nid = newsletter["id"]
    (content_id,) = newsletter["content_ids"]
    contents = ok(api.app.get(f"/v1/newsletters/{nid}/contents"))["contents"]
    assert [c["language"] for c in contents] == [""]
    assert contents[0]["id"] == content_id
    changed = ok(
        api.app.put(
            f"/v1/newsletters/{nid}/contents/{content_id}", json={"subject": "Hello {{ customer.id }}"}
        )
    )["content"]
    assert changed["subject"] == "Hello {{ customer.id }}"
    assert changed["from"] == "news@example.com"
    assert ok(api.app.get(f"/v1/newsletters/{nid}/contents/{content_id}"))["content"]["subject"].startswith(
        "Hello"
    )
    error(api.app.get(f"/v1/newsletters/{nid}/contents/{content_id + 999}"), 404)
    error(api.app.put(f"/v1/newsletters/{nid}/contents/{content_id}", json={"subject": "{{ broken"}), 400)
    added = ok(api.app.post(f"/v1/newsletters/{nid}/language", json={"language": "fr", "subject": "Bonjour"}))
    assert added["content"]["language"] == "fr"
    assert added["content"]["subject"] == "Bonjour"
    error(api.app.post(f"/v1/newsletters/{nid}/language", json={"language": "fr", "subject": "x"}), 409)
    ok(api.app.put(f"/v1/newsletters/{nid}/language/de", json={"subject": "Hallo"}))
    assert ok(api.app.get(f"/v1/newsletters/{nid}/language/de"))["content"]["subject"] == "Hallo"
    ok(api.app.delete(f"/v1/newsletters/{nid}/language/de"))
    error(api.app.get(f"/v1/newsletters/{nid}/language/de"), 404)
    languages = [c["language"] for c in ok(api.app.get(f"/v1/newsletters/{nid}/contents"))["contents"]]
    assert languages == ["", "fr"]
    ok(api.app.post(f"/v1/newsletters/{nid}/send"))
    assert mail_to(sink, english)[0].message["Subject"] == "Hello en"
    assert mail_to(sink, french)[0].message["Subject"] == "Bonjour"


def test_metrics_and_messages_agree(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    addresses = people(cio, email, 3)
    newsletter = create(api, send_now=True)
    nid = newsletter["id"]
    sent(api, nid)
    for address in addresses:
        mail_to(sink, address)
    found = eventually(
        lambda: (m := messages(api, nid)) and all(x["state"] == "sent" for x in m) and m, what="sent"
    )
    series = ok(api.app.get(f"/v1/newsletters/{nid}/metrics", params={"period": "days", "steps": 2}))
    totals = {metric: sum(counts) for metric, counts in series["metric"]["series"].items()}
    assert totals["created"] == totals["sent"] == len(found) == 3
    assert totals["failed"] == totals["dropped"] == 0
    (content_id,) = newsletter["content_ids"]
    by_content = ok(api.app.get(f"/v1/newsletters/{nid}/contents/{content_id}/metrics", params={"steps": 2}))
    assert by_content == series
    # Click a tracked link in one mail; the link metrics and the messages' metric filter agree.
    body = mail_to(sink, addresses[0])[0].message.get_body(("html",))
    assert body is not None
    html = body.get_content()
    link = next(u for u in re.findall(r'href="([^"]+)"', html) if "/c/" in u)
    clicked = api.app.get(link.replace("&amp;", "&"), follow_redirects=False)
    assert clicked.status_code == 302
    links = ok(api.app.get(f"/v1/newsletters/{nid}/metrics/links", params={"steps": 2}))["links"]
    assert links[0]["link"]["href"] == "https://example.com/spring"
    assert sum(links[0]["metric"]["series"]["clicked"]) == 1
    assert len(messages(api, nid, metric="clicked")) == 1
    content_links = ok(api.app.get(f"/v1/newsletters/{nid}/contents/{content_id}/metrics/links"))["links"]
    assert content_links == ok(api.app.get(f"/v1/newsletters/{nid}/metrics/links"))["links"]
    everywhere = ok(api.app.get("/v1/messages", params={"newsletter_id": nid, "limit": 100}))["messages"]
    assert {m["id"] for m in everywhere} == {m["id"] for m in found}
    page = ok(api.app.get(f"/v1/newsletters/{nid}/messages", params={"limit": 2}))
    rest = ok(api.app.get(f"/v1/newsletters/{nid}/messages", params={"limit": 2, "start": page["next"]}))
    assert len(page["messages"]) == 2
    assert len(rest["messages"]) == 1
    assert rest["next"] == ""


def test_list_get_delete(api: Api, other_api: Api) -> None:
    ids = [create(api, name=f"n{i}")["id"] for i in range(3)]
    listed = ok(api.app.get("/v1/newsletters", params={"limit": 2}))
    assert [n["id"] for n in listed["newsletters"]] == ids[::-1][:2]
    rest = ok(api.app.get("/v1/newsletters", params={"limit": 2, "start": listed["next"]}))
    assert [n["id"] for n in rest["newsletters"]] == [ids[0]]
    assert rest["next"] == ""
    ascending = ok(api.app.get("/v1/newsletters", params={"sort": "asc"}))["newsletters"]
    assert [n["id"] for n in ascending] == ids
    one = get(api, ids[0])
    assert {
        "id",
        "deduplicate_id",
        "name",
        "type",
        "created",
        "updated",
        "sent_at",
        "content_ids",
        "tags",
        "recipient_segment_ids",
        "subscription_topic_id",
    } <= set(one)
    # Another workspace sees none of them.
    error(other_api.app.get(f"/v1/newsletters/{ids[0]}"), 404)
    assert ok(other_api.app.get("/v1/newsletters"))["newsletters"] == []
    ok(api.app.delete(f"/v1/newsletters/{ids[0]}"))
    error(api.app.get(f"/v1/newsletters/{ids[0]}"), 404)
    error(api.app.delete(f"/v1/newsletters/{ids[0]}"), 404)
    for path in ("", "/contents", "/metrics", "/messages", "/metrics/links"):
        error(api.app.get(f"/v1/newsletters/999999{path}"), 404)
    error(api.app.post("/v1/newsletters/999999/send"), 404)


def test_bad_bodies(api: Api) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": None}, "name"),
        ({"name": "x" * 191}, "190"),
        ({"type": "sms"}, "type"),
        ({"recipients": {}}, "recipients"),
        ({"recipients": {"attribute": {"field": "plan", "operator": "bogus"}}}, "recipients"),
        ({"recipients": {"segment": {"id": 987654}}}, "segment"),
        ({"subject": "{{ unclosed"}, "subject"),
        ({"body": None}, "body"),
        ({"from": None}, "from"),
        ({"from_id": 3}, "from_id"),
        ({"send_now": True, "scheduled_at": 2000000000}, "scheduled_at"),
        ({"rate_limit_email_rate": 10}, "rate_limit"),
        ({"rate_limit_email_rate": 10, "rate_limit_time_period": 7}, "rate_limit_time_period"),
        ({"ramp": {"start": 0}}, "ramp"),
        ({"ramp": {"start": 5, "growth": 0.5}}, "growth"),
        ({"send_now": True, "send_in_recipient_timezone": True}, "scheduled_at"),
        ({"subscription_topic_id": 424242}, "subscription_topic_id"),
        ({"layout_id": 424242}, "layout_id"),
        ({"colour": "red"}, "colour"),
    ]
    for change, word in cases:
        detail = error(api.app.post("/v1/newsletters", json=newsletter_body(**change)), 400)
        assert word in detail, (change, detail)
    assert ok(api.app.get("/v1/newsletters"))["newsletters"] == []
    draft = create(api)
    error(api.app.post(f"/v1/newsletters/{draft['id']}/schedule", json={}), 400)
    error(api.app.post(f"/v1/newsletters/{draft['id']}/test", json={"emails": "a@b.c"}), 400)
    error(api.app.get(f"/v1/newsletters/{draft['id']}/metrics", params={"type": "fax"}), 400)
    error(api.app.get(f"/v1/newsletters/{draft['id']}/messages", params={"metric": "nope"}), 400)
    error(api.app.post("/v1/newsletters", content=b"not json"), 400)


def test_cancel_drops_what_is_not_sent(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    addresses = people(cio, email, 3)
    newsletter = create(api, send_now=True, rate_limit_email_rate=1, rate_limit_time_period=86400)
    sent(api, newsletter["id"])
    mail_to(sink, addresses[0])
    canceled = ok(api.app.post(f"/v1/newsletters/{newsletter['id']}/cancel"))["newsletter"]
    assert canceled["state"] == "canceled"
    states = sorted(m["state"] for m in messages(api, newsletter["id"]))
    assert states == ["dropped", "dropped", "sent"]
    error(api.app.post(f"/v1/newsletters/{newsletter['id']}/cancel"), 409)

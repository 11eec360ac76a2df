"""A/B test groups of newsletters over HTTP: each group's content and translations, the split of the
recipients by percentages (checked on the mail that arrives and on every prefix of the send order), metrics
per content that agree with the deliveries, sending the winner to the rest, and refusals."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from customerio.track import CustomerIO

from tests.harness import Api
from tests.mail import advance, eventually, mail_to, mails_to, ok
from tests.messaging.smtp_sink import SmtpSink
from tests.newsletters.conftest import create, error, get, messages, sent

Email = Callable[[str], str]
Json = dict[str, Any]


def people(cio: CustomerIO, email: Email, count: int, **attributes: object) -> list[str]:
    """``count`` pro-plan people created in order (their person keys, so the send order, follow it)."""
    addresses = []
    for index in range(count):
        address = email(f"t{index}")
        cio.identify(id=f"t{index}", email=address, plan="pro", **attributes)
        addresses.append(address)
    return addresses


def groups_of(api: Api, newsletter_id: int) -> Json:
    found: Json = ok(api.app.get(f"/v1/newsletters/{newsletter_id}/test_groups"))
    return found


def add_group(api: Api, newsletter_id: int, **body: Any) -> Json:
    newsletter: Json = ok(api.app.post(f"/v1/newsletters/{newsletter_id}/test_groups", json=body))[
        "newsletter"
    ]
    return newsletter


def all_settled(api: Api, newsletter_id: int, count: int) -> list[Json]:
    found: list[Json] = eventually(
        lambda: (
            (m := messages(api, newsletter_id))
            and len(m) == count
            and all(x["state"] not in ("queued", "sending") for x in m)
            and m
        ),
        what=f"{count} messages of newsletter {newsletter_id} settled",
    )
    return found


def test_split_by_percentages(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    addresses = people(cio, email, 10)
    draft = create(api, subject="Subject A")
    nid = draft["id"]
    (a_content,) = draft["content_ids"]
    assert groups_of(api, nid)["test_groups"] == []
    # Customer.io's create: no body, the new group copies the content; the first makes the content A.
    with_b = ok(api.app.post(f"/v1/newsletters/{nid}/test_groups"))["newsletter"]
    a_id, b_content = with_b["content_ids"][0], with_b["content_ids"][1]
    assert a_id == a_content
    listed = groups_of(api, nid)["test_groups"]
    assert [(g["name"], g["label"], g["percentage"], g["winner"]) for g in listed] == [
        ("A", "test 1", 50, False),
        ("B", "test 2", 50, False),
    ]
    assert [g["content_ids"] for g in listed] == [[a_content], [b_content]]
    group_a, group_b = listed[0]["id"], listed[1]["id"]
    copied = ok(api.app.get(f"/v1/newsletters/{nid}/contents/{b_content}"))["content"]
    assert copied["subject"] == "Subject A"
    assert copied["body"] == ok(api.app.get(f"/v1/newsletters/{nid}/contents/{a_content}"))["content"]["body"]
    assert copied["test_group_id"] == group_b
    ok(api.app.put(f"/v1/newsletters/{nid}/contents/{b_content}", json={"subject": "Subject B"}))
    # A third group (with its own subject, a Tidings extension) goes back to an even split.
    with_c = add_group(api, nid, label="short", subject="Subject C")
    assert len(with_c["content_ids"]) == 3
    assert [g["percentage"] for g in groups_of(api, nid)["test_groups"]] == [34, 33, 33]
    group_c = groups_of(api, nid)["test_groups"][2]
    assert (group_c["name"], group_c["label"]) == ("C", "short")
    split = ok(
        api.app.put(
            f"/v1/newsletters/{nid}/test_groups",
            json={
                "test_groups": [
                    {"id": group_a, "percentage": 60},
                    {"id": group_b, "percentage": 30, "label": "shouty"},
                    {"id": group_c["id"], "percentage": 10},
                ]
            },
        )
    )
    assert [(g["percentage"], g["label"]) for g in split["test_groups"]] == [
        (60, "test 1"),
        (30, "shouty"),
        (10, "short"),
    ]
    # Each group's translations are its own.
    ok(api.app.post(f"/v1/newsletters/{nid}/language", json={"language": "fr", "subject": "Sujet A"}))
    ok(
        api.app.post(
            f"/v1/newsletters/{nid}/test_group/{group_b}/language",
            json={"language": "fr", "subject": "Sujet B"},
        )
    )
    error(
        api.app.post(
            f"/v1/newsletters/{nid}/test_group/{group_b}/language", json={"language": "fr", "subject": "x"}
        ),
        409,
    )
    ok(
        api.app.put(
            f"/v1/newsletters/{nid}/test_group/{group_c['id']}/language/de", json={"subject": "Hallo"}
        )
    )
    got = ok(api.app.get(f"/v1/newsletters/{nid}/test_group/{group_c['id']}/language/de"))["content"]
    assert (got["subject"], got["language"], got["test_group_id"]) == ("Hallo", "de", group_c["id"])
    ok(api.app.delete(f"/v1/newsletters/{nid}/test_group/{group_c['id']}/language/de"))
    error(api.app.get(f"/v1/newsletters/{nid}/test_group/{group_c['id']}/language/de"), 404)
    contents = ok(api.app.get(f"/v1/newsletters/{nid}/contents"))["contents"]
    assert [(c["id"], c["language"], c["subject"]) for c in contents] == [
        (a_content, "", "Subject A"),
        (a_content, "fr", "Sujet A"),
        (b_content, "", "Subject B"),
        (b_content, "fr", "Sujet B"),
        (group_c["content_ids"][0], "", "Subject C"),
    ]
    cio.identify(id="t3", language="fr")

    ok(api.app.post(f"/v1/newsletters/{nid}/send"))
    done = sent(api, nid)
    assert done["recipients_count"] == 10
    found = all_settled(api, nid, 10)
    content_of = {m["customer_identifiers"]["email"]: m["content_id"] for m in found}
    counts = Counter(content_of.values())
    assert counts == {a_content: 6, b_content: 3, group_c["content_ids"][0]: 1}
    # Every prefix of the send order is split as configured, to within one person.
    for size in range(1, 11):
        prefix = Counter(content_of[address] for address in addresses[:size])
        for content_id, share in ((a_content, 0.6), (b_content, 0.3), (group_c["content_ids"][0], 0.1)):
            assert abs(prefix[content_id] - share * size) <= 1, (size, prefix)
    subjects = {
        a_content: "Subject A",
        b_content: "Subject B",
        group_c["content_ids"][0]: "Subject C",
    }
    french = {a_content: "Sujet A", b_content: "Sujet B", group_c["content_ids"][0]: "Subject C"}
    for index, address in enumerate(addresses):
        (mail,) = mail_to(sink, address)
        expected = (french if index == 3 else subjects)[content_of[address]]
        assert mail.message["Subject"] == expected, address
    assert [g["recipients_count"] for g in groups_of(api, nid)["test_groups"]] == [6, 3, 1]
    # Metrics per content count that content's deliveries; together they are the newsletter's.
    whole = ok(api.app.get(f"/v1/newsletters/{nid}/metrics", params={"steps": 2}))["metric"]["series"]
    assert sum(whole["created"]) == 10
    for content_id, count in counts.items():
        series = ok(api.app.get(f"/v1/newsletters/{nid}/contents/{content_id}/metrics", params={"steps": 2}))
        assert sum(series["metric"]["series"]["created"]) == count
        assert sum(series["metric"]["series"]["sent"]) == count
    # Clicks of B's mails count under B's content only.
    b_address = next(a for a in addresses if content_of[a] == b_content)
    html = mail_to(sink, b_address)[0].message.get_body(("html",))
    assert html is not None
    link = next(u for u in re.findall(r'href="([^"]+)"', html.get_content()) if "/c/" in u)
    assert httpx.get(link.replace("&amp;", "&"), follow_redirects=False).status_code == 302
    b_links = ok(api.app.get(f"/v1/newsletters/{nid}/contents/{b_content}/metrics/links"))["links"]
    assert sum(b_links[0]["metric"]["series"]["clicked"]) == 1
    assert ok(api.app.get(f"/v1/newsletters/{nid}/contents/{a_content}/metrics/links"))["links"] == []
    # Once sending started, the test is fixed.
    assert "started sending" in error(api.app.post(f"/v1/newsletters/{nid}/test_groups"), 409)
    error(
        api.app.put(
            f"/v1/newsletters/{nid}/test_groups",
            json={"test_groups": [{"id": group_a, "percentage": 100}]},
        ),
        409,
    )


def test_refusals(api: Api, cio: CustomerIO) -> None:
    draft = create(api)
    nid = draft["id"]
    detail = error(api.app.put(f"/v1/newsletters/{nid}/test_groups", json={"test_groups": []}), 400)
    assert "no test groups" in detail
    add_group(api, nid)
    a, b = (g["id"] for g in groups_of(api, nid)["test_groups"])

    def put(body: Json) -> httpx.Response:
        return api.app.put(f"/v1/newsletters/{nid}/test_groups", json=body)

    cases: list[tuple[Json, str]] = [
        ({"test_groups": [{"id": a, "percentage": 50}, {"id": b, "percentage": 40}]}, "add up to 100"),
        ({"test_groups": [{"id": a, "percentage": 100}]}, "missing"),
        (
            {"test_groups": [{"id": a, "percentage": 0}, {"id": b, "percentage": 100}]},
            "test_groups[0].percentage",
        ),
        ({"test_groups": [{"id": 987654321, "percentage": 50}]}, "test_groups[0].id"),
        ({"test_groups": [{"id": a, "percentage": 50}, {"id": a, "percentage": 50}]}, "twice"),
        ({"test_groups": "A"}, "test_groups"),
        ({"winner_settings": {"test_percentage": 100, "wait": 3600}}, "test_percentage"),
        ({"winner_settings": {"test_percentage": 20, "wait": 3600, "metric": "bounced"}}, "metric"),
        ({"winner_settings": {"test_percentage": 20, "wait": 5}}, "wait"),
        ({"winner_settings": {"test_percentage": 20}}, "wait"),
        ({"colour": "red"}, "colour"),
    ]
    for body, word in cases:
        detail = error(put(body), 400)
        assert word in detail, (body, detail)
    assert [g["percentage"] for g in groups_of(api, nid)["test_groups"]] == [50, 50]
    assert "colour" in error(api.app.post(f"/v1/newsletters/{nid}/test_groups", json={"colour": "x"}), 400)
    # Unknown test groups in paths: 404, also another newsletter's group and a name instead of an id.
    other = create(api)
    add_group(api, other["id"])
    foreign = groups_of(api, other["id"])["test_groups"][1]["id"]
    for group in ("987654321", str(foreign), "B"):
        error(api.app.get(f"/v1/newsletters/{nid}/test_group/{group}/language/fr"), 404)
        error(
            api.app.put(f"/v1/newsletters/{nid}/test_group/{group}/language/fr", json={"subject": "x"}), 404
        )
        error(
            api.app.post(f"/v1/newsletters/{nid}/test_group/{group}/language", json={"language": "fr"}), 404
        )
        error(api.app.delete(f"/v1/newsletters/{nid}/test_group/{group}/language/fr"), 404)
    error(api.app.get(f"/v1/newsletters/{nid}/test_group/{b}/language/fr"), 404)
    error(api.app.get("/v1/newsletters/987654321/test_groups"), 404)
    error(api.app.post("/v1/newsletters/987654321/test_groups"), 404)
    # The winner cannot be sent in each recipient's time zone.
    ok(put({"winner_settings": {"test_percentage": 20, "wait": 3600}}))
    assert "time zone" in error(
        api.app.post(
            f"/v1/newsletters/{nid}/schedule",
            json={"scheduled_at": int(time.time()) + 86400, "send_in_recipient_timezone": True},
        ),
        400,
    )
    # A draft with test groups can be deleted, contents and all.
    ok(api.app.delete(f"/v1/newsletters/{nid}"))
    error(api.app.get(f"/v1/newsletters/{nid}/test_groups"), 404)


def test_test_share_then_the_winner_to_the_rest(
    api: Api, cio: CustomerIO, email: Email, sink: SmtpSink
) -> None:
    addresses = people(cio, email, 10)
    draft = create(api, subject="Plain")
    nid = draft["id"]
    with_b = add_group(api, nid, subject="Bold")
    a_content, b_content = with_b["content_ids"]
    settings = {"test_percentage": 40, "metric": "opened", "wait": 3600}
    changed = ok(api.app.put(f"/v1/newsletters/{nid}/test_groups", json={"winner_settings": settings}))
    assert changed["winner_settings"] == settings
    ok(api.app.post(f"/v1/newsletters/{nid}/send"))
    waiting = eventually(
        lambda: (n := get(api, nid))["test_phase"] == "waiting" and n, what="the test share written"
    )
    assert waiting["state"] == "sending"
    assert waiting["recipients_count"] == 4
    started = advance(api, 0)
    assert started <= waiting["winner_at"] <= started + 3600
    tested = all_settled(api, nid, 4)
    content_of = {m["customer_identifiers"]["email"]: m["content_id"] for m in tested}
    assert Counter(content_of.values()) == {a_content: 2, b_content: 2}
    # One of B's recipients opens it: B does better.
    opener = next(a for a, c in content_of.items() if c == b_content)
    html = mail_to(sink, opener)[0].message.get_body(("html",))
    assert html is not None
    pixel = re.search(r'<img src="([^"]+/o/[^"]+)"', html.get_content())
    assert pixel is not None
    assert httpx.get(pixel.group(1).replace("&amp;", "&")).status_code == 200
    held = [a for a in addresses if a not in content_of]
    time.sleep(0.5)
    assert all(mails_to(sink, a) == [] for a in held)

    advance(api, 3601)
    done = sent(api, nid)
    assert done["recipients_count"] == 10
    assert done["test_phase"] == "winner"
    assert [g["winner"] for g in groups_of(api, nid)["test_groups"]] == [False, True]
    everyone = all_settled(api, nid, 10)
    assert Counter(m["content_id"] for m in everyone) == {a_content: 2, b_content: 8}
    for address in held:
        (mail,) = mail_to(sink, address)
        assert mail.message["Subject"] == "Bold"
    # Nobody got two.
    assert all(len(mails_to(sink, a)) == 1 for a in addresses)
    assert [g["recipients_count"] for g in groups_of(api, nid)["test_groups"]] == [2, 8]


def test_test_send_of_a_group(api: Api, cio: CustomerIO, email: Email, sink: SmtpSink) -> None:
    cio.identify(id="proof-person", email=email("person"), plan="free")
    draft = create(api, subject="Plain")
    nid = draft["id"]
    add_group(api, nid, subject="Bold")
    group_b = groups_of(api, nid)["test_groups"][1]["id"]
    proof = email("proof")
    ok(
        api.app.post(
            f"/v1/newsletters/{nid}/test",
            json={"emails": [proof], "identifiers": {"id": "proof-person"}, "test_group_id": group_b},
        )
    )
    assert mail_to(sink, proof)[0].message["Subject"] == "Bold"
    ok(
        api.app.post(
            f"/v1/newsletters/{nid}/test", json={"emails": [proof], "identifiers": {"id": "proof-person"}}
        )
    )
    assert mail_to(sink, proof, count=2)[1].message["Subject"] == "Plain"
    detail = error(
        api.app.post(
            f"/v1/newsletters/{nid}/test",
            json={"emails": [proof], "identifiers": {"id": "proof-person"}, "test_group_id": 987654321},
        ),
        400,
    )
    assert "test_group_id" in detail
    # Test copies are not the newsletter's: no group counts them.
    assert [g["recipients_count"] for g in groups_of(api, nid)["test_groups"]] == [0, 0]

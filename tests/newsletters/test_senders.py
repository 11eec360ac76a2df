"""Sender identities over HTTP: Customer.io's list, get and used_by, Tidings' create, change and delete,
and ``from_id`` in newsletter contents and translations and campaign actions, checked on the mail that
arrives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from customerio.track import CustomerIO

from tests.harness import Api
from tests.mail import mail_to, ok
from tests.messaging.smtp_sink import SmtpSink
from tests.newsletters.conftest import create, error, newsletter_body, sent

Email = Callable[[str], str]
Json = dict[str, Any]


def sender(api: Api, **fields: Any) -> Json:
    made: Json = ok(api.app.post("/v1/sender_identities", json=fields))["sender_identity"]
    return made


def test_create_list_get_change_and_isolation(api: Api, other_api: Api) -> None:
    first = sender(api, name="Cher Ami", email="Cher@Example.com")
    assert first["name"] == "Cher Ami"
    assert first["email"] == "Cher@example.com"  # the domain is case-insensitive and normalised
    assert first["address"] == "Cher Ami <Cher@example.com>"
    assert first["template_type"] == "email"
    assert first["auto_generated"] is False
    assert first["deduplicate_id"] == f"{first['id']}:{first['updated']}"
    # A name with a comma is quoted, so the address still names one mailbox.
    second = sender(api, name="Shop, Inc.", email="shop@example.com")
    assert second["address"] == '"Shop, Inc." <shop@example.com>'
    bare = ok(api.app.post("/v1/sender_identities", json={"sender_identity": {"email": "bare@example.com"}}))
    assert bare["sender_identity"]["address"] == "bare@example.com"
    hidden = sender(api, name="Old", email="old@example.com", hidden=True)

    listed = ok(api.app.get("/v1/sender_identities"))
    assert [s["id"] for s in listed["sender_identities"]] == [
        first["id"],
        second["id"],
        bare["sender_identity"]["id"],
    ]
    assert listed["next"] == ""
    everyone = ok(api.app.get("/v1/sender_identities", params={"hidden": "true"}))["sender_identities"]
    assert hidden["id"] in [s["id"] for s in everyone]
    page = ok(api.app.get("/v1/sender_identities", params={"limit": 2, "sort": "desc", "hidden": "true"}))
    assert [s["id"] for s in page["sender_identities"]] == [hidden["id"], bare["sender_identity"]["id"]]
    rest = ok(
        api.app.get(
            "/v1/sender_identities",
            params={"limit": 2, "sort": "desc", "hidden": "true", "start": page["next"]},
        )
    )
    assert [s["id"] for s in rest["sender_identities"]] == [second["id"], first["id"]]
    assert rest["next"] == ""

    got = ok(api.app.get(f"/v1/sender_identities/{first['id']}"))["sender_identity"]
    assert got == first
    # A fetched identity can be sent back changed (its read-only keys are ignored).
    changed = ok(api.app.put(f"/v1/sender_identities/{first['id']}", json={**got, "name": "Dear Friend"}))
    assert changed["sender_identity"]["address"] == "Dear Friend <Cher@example.com>"

    # Another workspace sees none of them.
    assert (
        ok(other_api.app.get("/v1/sender_identities", params={"hidden": "true"}))["sender_identities"] == []
    )
    error(other_api.app.get(f"/v1/sender_identities/{first['id']}"), 404)
    error(other_api.app.put(f"/v1/sender_identities/{first['id']}", json={"name": "x"}), 404)
    error(other_api.app.delete(f"/v1/sender_identities/{first['id']}"), 404)
    error(other_api.app.get(f"/v1/sender_identities/{first['id']}/used_by"), 404)
    error(api.app.get("/v1/sender_identities/99999999"), 404)


def test_bad_identities_are_refused_naming_the_field(api: Api) -> None:
    cases: list[tuple[Json, str]] = [
        ({}, "email"),
        ({"email": "not an address"}, "email"),
        ({"email": "Name <a@example.com>"}, "email"),
        ({"email": "a@example.com, b@example.com"}, "email"),
        ({"email": "a@example.com", "name": "two\nlines"}, "name"),
        ({"email": "a@example.com", "template_type": "phone"}, "template_type"),
        ({"email": "a@example.com", "hidden": "yes"}, "hidden"),
        ({"email": "a@example.com", "colour": "red"}, "colour"),
    ]
    for body, word in cases:
        detail = error(api.app.post("/v1/sender_identities", json=body), 400)
        assert word in detail, (body, detail)
    assert ok(api.app.get("/v1/sender_identities", params={"hidden": "true"}))["sender_identities"] == []
    error(api.app.get("/v1/sender_identities", params={"limit": 0}), 400)


def test_newsletter_from_id_sends_from_the_identity_as_it_is_when_rendered(
    api: Api, cio: CustomerIO, email: Email, sink: SmtpSink
) -> None:
    news = sender(api, name="The News", email="news@example.com")
    french_sender = sender(api, name="Les Nouvelles", email="nouvelles@example.com")
    english, french = email("en"), email("fr")
    cio.identify(id="en", email=english, plan="pro")
    cio.identify(id="fr", email=french, plan="pro", language="fr")
    body = newsletter_body(from_id=news["id"])
    del body["from"]
    newsletter = ok(api.app.post("/v1/newsletters", json=body))["newsletter"]
    nid = newsletter["id"]
    (content_id,) = newsletter["content_ids"]
    content = ok(api.app.get(f"/v1/newsletters/{nid}/contents/{content_id}"))["content"]
    assert content["from_id"] == news["id"]
    assert content["from"] == "The News <news@example.com>"
    translated = ok(
        api.app.post(
            f"/v1/newsletters/{nid}/language",
            json={"language": "fr", "subject": "Bonjour", "from_id": french_sender["id"]},
        )
    )["content"]
    assert translated["from_id"] == french_sender["id"]
    assert translated["from"] == "Les Nouvelles <nouvelles@example.com>"
    # Changing the identity changes what the newsletter will be sent from.
    ok(api.app.put(f"/v1/sender_identities/{news['id']}", json={"name": "Weekly News"}))
    ok(api.app.post(f"/v1/newsletters/{nid}/send"))
    sent(api, nid)
    assert mail_to(sink, english)[0].message["From"] == "Weekly News <news@example.com>"
    (mail,) = mail_to(sink, french)
    assert mail.message["From"] == "Les Nouvelles <nouvelles@example.com>"
    assert mail.message["Subject"] == "Bonjour"
    # Both identities are used by the sent newsletter; neither can be deleted.
    for identity in (news, french_sender):
        users = ok(api.app.get(f"/v1/sender_identities/{identity['id']}/used_by"))
        assert users["sent_newsletters"] == [nid]
        assert users["draft_newsletters"] == users["campaigns"] == users["transactional_messages"] == []
        detail = error(api.app.delete(f"/v1/sender_identities/{identity['id']}"), 409)
        assert f"newsletter {nid}" in detail
    ok(api.app.get(f"/v1/sender_identities/{news['id']}"))


def test_from_and_from_id_rules_on_newsletter_content(api: Api) -> None:
    identity = sender(api, email="team@example.com")
    other = sender(api, email="other@example.com")
    detail = error(api.app.post("/v1/newsletters", json=newsletter_body(from_id=identity["id"])), 400)
    assert "from_id" in detail
    assert "not both" in detail
    detail = error(
        api.app.post("/v1/newsletters", json=newsletter_body(**{"from": None, "from_id": 987654321})), 400
    )
    assert "from_id 987654321" in detail
    detail = error(
        api.app.post("/v1/newsletters", json=newsletter_body(**{"from": None, "from_id": "1"})), 400
    )
    assert "from_id" in detail
    draft = create(api)
    nid = draft["id"]
    (content_id,) = draft["content_ids"]
    # from_id replaces from, and from replaces from_id.
    content = ok(
        api.app.put(f"/v1/newsletters/{nid}/contents/{content_id}", json={"from_id": identity["id"]})
    )
    assert content["content"]["from_id"] == identity["id"]
    assert content["content"]["from"] == "team@example.com"
    assert ok(api.app.get(f"/v1/sender_identities/{identity['id']}/used_by"))["draft_newsletters"] == [nid]
    error(api.app.delete(f"/v1/sender_identities/{identity['id']}"), 409)
    # A fetched content sent back (from is the identity's address) keeps from_id; another from is refused.
    again = ok(api.app.put(f"/v1/newsletters/{nid}/contents/{content_id}", json=content["content"]))[
        "content"
    ]
    assert again["from_id"] == identity["id"]
    clash = {**content["content"], "from": "someone@example.com"}
    assert "not both" in error(api.app.put(f"/v1/newsletters/{nid}/contents/{content_id}", json=clash), 400)
    changed = ok(api.app.put(f"/v1/newsletters/{nid}", json={"from_id": other["id"]}))["newsletter"]
    assert changed["content_ids"] == [content_id]
    back = ok(api.app.put(f"/v1/newsletters/{nid}/contents/{content_id}", json={"from": "x@example.com"}))
    assert back["content"]["from_id"] is None
    assert back["content"]["from"] == "x@example.com"
    error(api.app.put(f"/v1/newsletters/{nid}/contents/{content_id}", json={"from_id": 987654321}), 400)
    error(api.app.put(f"/v1/newsletters/{nid}/language/fr", json={"from_id": 987654321}), 400)
    # Nothing uses either identity now: both can go.
    assert ok(api.app.get(f"/v1/sender_identities/{identity['id']}/used_by"))["draft_newsletters"] == []
    ok(api.app.delete(f"/v1/sender_identities/{identity['id']}"))
    ok(api.app.delete(f"/v1/sender_identities/{other['id']}"))
    error(api.app.get(f"/v1/sender_identities/{identity['id']}"), 404)


def test_campaign_action_from_id(api: Api) -> None:
    identity = sender(api, name="Support", email="support@example.com")
    content: Json = {"from_id": identity["id"], "subject": "Hi", "body": "<p>Hi</p>"}
    block: Json = {"id": "hello", "type": "email", "content": content}
    definition = {"name": "Welcome", "trigger": {"type": "event", "event": "signup"}, "steps": [block]}
    bad = {**definition, "steps": [{**block, "content": {**content, "from_id": 987654321}}]}
    assert "from_id" in error(api.app.post("/v1/campaigns", json=bad), 400)
    campaign = ok(api.app.post("/v1/campaigns", json=definition))["campaign"]
    (action,) = ok(api.app.get(f"/v1/campaigns/{campaign['id']}/actions"))["actions"]
    assert action["from_id"] == identity["id"]
    assert action["from"] == "Support <support@example.com>"
    users = ok(api.app.get(f"/v1/sender_identities/{identity['id']}/used_by"))
    assert users["campaigns"] == [campaign["id"]]
    assert f"campaign {campaign['id']}" in error(
        api.app.delete(f"/v1/sender_identities/{identity['id']}"), 409
    )
    # Giving from in the action's content replaces the identity.
    changed = ok(
        api.app.put(
            f"/v1/campaigns/{campaign['id']}/actions/{action['id']}", json={"from": "plain@example.com"}
        )
    )["action"]
    assert changed["from"] == "plain@example.com"
    assert changed["from_id"] is None
    assert ok(api.app.get(f"/v1/sender_identities/{identity['id']}/used_by"))["campaigns"] == []
    error(
        api.app.put(f"/v1/campaigns/{campaign['id']}/actions/{action['id']}", json={"from_id": 987654321}),
        400,
    )


def test_a_deleted_newsletters_waiting_messages_keep_their_sender(
    api: Api, cio: CustomerIO, email: Email, sink: SmtpSink
) -> None:
    identity = sender(api, name="Paced", email="paced@example.com")
    first, second = email("first"), email("second")
    cio.identify(id="first", email=first, plan="pro")
    cio.identify(id="second", email=second, plan="pro")
    body = newsletter_body(**{"from": None, "from_id": identity["id"]})
    body.update(send_now=True, rate_limit_email_rate=1, rate_limit_time_period=86400)
    newsletter = ok(api.app.post("/v1/newsletters", json=body))["newsletter"]
    sent(api, newsletter["id"])
    assert mail_to(sink, first)[0].message["From"] == "Paced <paced@example.com>"
    # Sent, so it may be deleted; its second message still waits for tomorrow and needs the sender.
    ok(api.app.delete(f"/v1/newsletters/{newsletter['id']}"))
    users = ok(api.app.get(f"/v1/sender_identities/{identity['id']}/used_by"))
    assert users["sent_newsletters"] == [newsletter["id"]]
    error(api.app.delete(f"/v1/sender_identities/{identity['id']}"), 409)

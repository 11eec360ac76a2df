"""``from_id`` (a sender identity) on transactional email: in a ``/v1/send/email`` request, where it is
looked up when the request is accepted, and in a transactional message's content and translations, where
it is looked up when each message is rendered; errors in each endpoint's envelope."""

from __future__ import annotations

from typing import Any

from tests.harness import Api
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import Json, message, ok, settled
from tests.transactional.test_send import identify, mail_for, unique_id


def sender(api: Api, **fields: Any) -> Json:
    made: Json = ok(api.app.post("/v1/sender_identities", json=fields))["sender_identity"]
    return made


def send(api: Api, person: str, **fields: Any) -> Json:
    body = {
        "identifiers": {"id": person},
        "to": f"{person}@example.com",
        "subject": "Hi",
        "body": "<p>Hi</p>",
    }
    return ok(api.app.post("/v1/send/email", json={**body, **fields}))


def meta_error(api: Api, body: Json, status: int = 400) -> str:
    response = api.app.post("/v1/send/email", json=body)
    assert response.status_code == status, response.text
    detail: str = response.json()["meta"]["error"]
    return detail


def test_send_with_from_id_uses_the_address_when_accepted(api: Api, sink: SmtpSink) -> None:
    shop = sender(api, name="Shop Team", email="shop@example.com")
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    now = send(api, person, from_id=shop["id"])
    assert mail_for(sink, now["delivery_id"])["From"] == "Shop Team <shop@example.com>"
    later = send(
        api,
        person,
        from_id=shop["id"],
        send_at=ok(api.app.post("/_tidings/clock", json={"advance": 0}))["now"] + 600,
    )
    # The send was accepted with the address as it was; a later change does not reach it.
    ok(api.app.put(f"/v1/sender_identities/{shop['id']}", json={"name": "Renamed"}))
    ok(api.app.post("/_tidings/clock", json={"advance": 601}))
    assert settled(api, later["delivery_id"])["state"] == "sent"
    assert mail_for(sink, later["delivery_id"])["From"] == "Shop Team <shop@example.com>"
    # A send keeps no reference: nothing holds the identity.
    users = ok(api.app.get(f"/v1/sender_identities/{shop['id']}/used_by"))
    assert not any(users.values())
    ok(api.app.delete(f"/v1/sender_identities/{shop['id']}"))


def test_from_id_errors(api: Api, other_api: Api) -> None:
    mine = sender(api, email="mine@example.com")
    theirs = sender(other_api, email="theirs@example.com")
    person = unique_id()
    base = {"identifiers": {"id": person}, "to": f"{person}@example.com", "subject": "s", "body": "b"}
    both = meta_error(api, {**base, "from": "a@example.com", "from_id": mine["id"]})
    assert "from_id" in both
    assert "not both" in both
    assert "from_id 987654321" in meta_error(api, {**base, "from_id": 987654321})
    # Another workspace's identity is unknown here.
    assert f"from_id {theirs['id']}" in meta_error(api, {**base, "from_id": theirs["id"]})
    assert "from_id" in meta_error(api, {**base, "from_id": "1"})
    # from_id alone satisfies "from is required when no transactional message is given".
    assert "from" in meta_error(api, base)
    assert send(api, person, from_id=mine["id"])["delivery_id"]


def test_template_from_id_follows_the_identity(api: Api, sink: SmtpSink) -> None:
    support = sender(api, name="Support", email="support@example.com")
    bad = api.app.post(
        "/v1/transactional",
        json={"name": "x", "type": "email", "content": {"from_id": 987654321, "subject": "s", "body": "b"}},
    )
    assert bad.status_code == 400
    assert "content.from_id" in bad.text
    both = api.app.post(
        "/v1/transactional",
        json={
            "name": "x",
            "type": "email",
            "content": {"from": "a@example.com", "from_id": support["id"], "subject": "s", "body": "b"},
        },
    )
    assert both.status_code == 400
    assert "not both" in both.text
    template = ok(
        api.app.post(
            "/v1/transactional",
            json={
                "name": "Receipt",
                "type": "email",
                "content": {"from_id": support["id"], "subject": "Receipt", "body": "<p>Thanks</p>"},
                "languages": {"fr": {"from": "Service <service@example.fr>", "subject": "Reçu"}},
            },
        )
    )["message"]
    assert template["content"]["from_id"] == support["id"]
    person = unique_id()
    identify(api, person, email=f"{person}@example.com")
    first = send(api, person, transactional_message_id=template["id"], subject=None, body=None)
    assert mail_for(sink, first["delivery_id"])["From"] == "Support <support@example.com>"
    # Rendered as the identity is when each message goes: a rename shows in the next one.
    ok(api.app.put(f"/v1/sender_identities/{support['id']}", json={"name": "Help Desk"}))
    second = send(api, person, transactional_message_id=template["id"], subject=None, body=None)
    assert mail_for(sink, second["delivery_id"])["From"] == "Help Desk <support@example.com>"
    # A translation's from wins over the default's from_id; a request's from wins over both.
    french = send(
        api, person, transactional_message_id=template["id"], language="fr", subject=None, body=None
    )
    assert mail_for(sink, french["delivery_id"])["From"] == "Service <service@example.fr>"
    own = send(
        api,
        person,
        transactional_message_id=template["id"],
        subject=None,
        body=None,
        **{"from": "me@example.com"},
    )
    assert mail_for(sink, own["delivery_id"])["From"] == "me@example.com"
    assert message(api, own["delivery_id"])["state"] in ("sent", "sending", "queued")
    # The template holds the identity.
    users = ok(api.app.get(f"/v1/sender_identities/{support['id']}/used_by"))
    assert users["transactional_messages"] == [template["id"]]
    response = api.app.delete(f"/v1/sender_identities/{support['id']}")
    assert response.status_code == 409
    assert f"transactional message {template['id']}" in response.json()["errors"][0]["detail"]
    # A translation naming an identity is checked too.
    bad_language = api.app.put(
        f"/v1/transactional/{template['id']}/language/de",
        json={"content": {"from_id": 987654321, "subject": "Hallo"}},
    )
    assert bad_language.status_code == 400
    ok(
        api.app.put(
            f"/v1/transactional/{template['id']}",
            json={"content": {"from": "plain@example.com", "subject": "Receipt", "body": "<p>Thanks</p>"}},
        )
    )
    assert not any(ok(api.app.get(f"/v1/sender_identities/{support['id']}/used_by")).values())
    ok(api.app.delete(f"/v1/sender_identities/{support['id']}"))

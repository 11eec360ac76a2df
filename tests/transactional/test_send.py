"""Transactional email end to end: Customer.io's official Python ``APIClient`` sends through Tidings, a real
SMTP server (aiosmtpd) receives, and the received message is parsed: headers, parts, tracked links, the
open pixel and the unsubscribe links, which are then followed back into the delivery's metrics."""

from __future__ import annotations

import base64
import re
import secrets
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from customerio.api import APIClient, SendEmailRequest
from customerio.client_base import CustomerIOException

from tests.harness import Api
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import Json, eventually, message, ok, settled


def client(api: Api) -> APIClient:
    return APIClient(api.creds.app_api_key, url=api.server.base_url, retries=0)


def mail_for(sink: SmtpSink, delivery_id: str) -> EmailMessage:
    def find() -> EmailMessage | None:
        for item in list(sink.messages):
            if item.message["X-CIO-Delivery-Id"] == delivery_id:
                return item.message
        return None

    found: EmailMessage = eventually(find, what=f"the email of delivery {delivery_id}")
    return found


def copies_of(sink: SmtpSink, delivery_id: str) -> int:
    return sum(1 for item in list(sink.messages) if item.message["X-CIO-Delivery-Id"] == delivery_id)


def part(mail: EmailMessage, subtype: str) -> str:
    body = mail.get_body(preferencelist=(subtype,))
    assert body is not None, f"no text/{subtype} part"
    content: str = body.get_content()
    return content


def identify(api: Api, person_id: str, **attributes: Any) -> None:
    ok(api.track.put(f"/api/v1/customers/{person_id}", json=attributes))


def unique_id() -> str:
    return f"p-{secrets.token_hex(4)}"


def test_send_email_with_the_official_client_arrives_over_smtp(api: Api, sink: SmtpSink) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com", first_name="Ada")
    request = SendEmailRequest(
        identifiers={"id": person},
        to=f"Ada Lovelace <{person}@example.com>",
        _from="Shop <shop@example.com>",
        reply_to="help@example.com",
        subject="Hello {{ customer.first_name }}",
        preheader="Your order",
        body=(
            "<html><head><style>p { color: red }</style></head><body>"
            "<p>Hi {{ customer.first_name }}, your code is {{ trigger.code }}.</p>"
            '<a href="https://example.com/orders?id={{ trigger.order }}&amp;x=1">Your order</a>'
            '<a href="mailto:help@example.com">Mail us</a>'
            "</body></html>"
        ),
        message_data={"code": "A<1>", "order": "42"},
        headers={"X-Campaign": "spring"},
    )
    result = client(api).send_email(request)
    assert set(result) == {"delivery_id", "queued_at"}
    assert isinstance(result["queued_at"], int)
    delivery_id = result["delivery_id"]

    mail = mail_for(sink, delivery_id)
    assert mail["Subject"] == "Hello Ada"
    assert mail["From"] == "Shop <shop@example.com>"
    assert mail["To"] == f"Ada Lovelace <{person}@example.com>"
    assert mail["Reply-To"] == "help@example.com"
    assert mail["X-Campaign"] == "spring"
    assert delivery_id in mail["Message-ID"]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = re.search(r"<(https?://[^>]+)>", mail["List-Unsubscribe"] or "")
    assert unsubscribe_url is not None
    html = part(mail, "html")
    text = part(mail, "plain")
    # Autoescaped message data, CSS inlined, preheader first, links tracked except mailto.
    assert "A&lt;1&gt;" in html
    assert re.search(r"<p[^>]*style=\"[^\"]*color: ?red", html)
    # The preheader ("Your order") comes before the body's first words.
    assert html.index("Your order") < html.index("Hi Ada")
    links = re.findall(r'href="([^"]+)"', html)
    tracked = [link for link in links if link.startswith(api.server.base_url + "/c/")]
    assert len(tracked) == 1
    assert "mailto:help@example.com" in links
    assert "Hi Ada" in text
    pixel = re.search(r'<img src="(' + re.escape(api.server.base_url) + r'/o/[^"]+)"', html)
    assert pixel is not None

    # The message is sent, and following the links feeds its metrics.
    sent = settled(api, delivery_id)
    assert sent["state"] == "sent"
    assert sent["recipient"] == f"Ada Lovelace <{person}@example.com>"
    assert sent["subject"] == "Hello Ada"
    assert "sent" in sent["metrics"]
    with httpx.Client() as browser:
        assert browser.get(pixel.group(1)).status_code == 200
        redirect = browser.get(tracked[0].replace("&amp;", "&"))
        assert redirect.status_code == 302
        assert redirect.headers["location"] == "https://example.com/orders?id=42&x=1"
    metrics = message(api, delivery_id)["metrics"]
    assert {"sent", "opened", "clicked"} <= set(metrics)

    # RFC 8058 one-click unsubscribe through the List-Unsubscribe URL.
    one_click = httpx.post(
        unsubscribe_url.group(1),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200
    attributes = ok(api.attributes(person))["customer"]
    assert attributes["unsubscribed"] is True
    assert "unsubscribed" in message(api, delivery_id)["metrics"]


def test_template_by_trigger_name_with_layout_snippet_and_translation(api: Api, sink: SmtpSink) -> None:
    ok(api.app.put("/v1/snippets", json={"name": "footer", "value": "<p>Bye {{ customer.first_name }}</p>"}))
    layout = ok(
        api.app.post(
            "/v1/layouts",
            json={
                "name": "base",
                "body": "<html><body><div class=wrap>{{ content }}</div>{{ snippets.footer }}</body></html>",
            },
        )
    )["layout"]
    template = ok(
        api.app.post(
            "/v1/transactional",
            json={
                "name": "Welcome",
                "trigger_name": "welcome",
                "type": "email",
                "layout_id": layout["id"],
                "content": {
                    "from": "hello@example.com",
                    "subject": "Welcome {{ customer.first_name }}",
                    "body": "<p>Plan: {{ trigger.plan | upcase }}</p>",
                },
                "languages": {"fr": {"subject": "Bienvenue {{ customer.first_name }}"}},
            },
        )
    )["message"]
    assert ok(api.app.get("/v1/transactional/welcome"))["message"]["id"] == template["id"]
    listed = ok(api.app.get("/v1/transactional"))["messages"]
    assert [m["trigger_name"] for m in listed] == ["welcome"]

    person = unique_id()
    identify(api, person, first_name="Grace")
    sends = client(api)
    english = sends.send_email(
        SendEmailRequest(
            transactional_message_id="welcome",
            identifiers={"id": person},
            to=f"{person}@example.com",
            message_data={"plan": "pro"},
        )
    )
    french = sends.send_email(
        SendEmailRequest(
            transactional_message_id=template["id"],
            identifiers={"id": person},
            to=f"{person}@example.com",
            language="fr",
            message_data={"plan": "team"},
        )
    )
    mail = mail_for(sink, english["delivery_id"])
    assert mail["Subject"] == "Welcome Grace"
    html = part(mail, "html")
    assert 'class="wrap"' in html or "class=wrap" in html
    assert "Plan: PRO" in html
    assert "Bye Grace" in html
    assert mail_for(sink, french["delivery_id"])["Subject"] == "Bienvenue Grace"
    assert message(api, english["delivery_id"])["message_template_id"] == template["id"]


def test_missing_variable_fails_the_delivery_naming_it(api: Api, sink: SmtpSink) -> None:
    person = unique_id()
    identify(api, person, first_name="Alan")
    result = client(api).send_email(
        SendEmailRequest(
            identifiers={"id": person},
            to=f"{person}@example.com",
            _from="a@example.com",
            subject="Hi",
            body="<p>Hello {{ customer.first_name }}</p>\n<p>{{ customer.plan.name }}</p>",
        )
    )
    failed = settled(api, result["delivery_id"])
    assert failed["state"] == "failed"
    assert "customer.plan.name" in failed["failure_message"]
    assert "line 2" in failed["failure_message"]
    assert copies_of(sink, result["delivery_id"]) == 0
    # Guarded with default, it renders.
    guarded = client(api).send_email(
        SendEmailRequest(
            identifiers={"id": person},
            to=f"{person}@example.com",
            _from="a@example.com",
            subject="Hi",
            body='<p>{{ customer.plan.name | default: "free" }}</p>',
        )
    )
    assert "free" in part(mail_for(sink, guarded["delivery_id"]), "html")


def test_hostile_template_hits_the_limits_quickly(api: Api, sink: SmtpSink) -> None:
    person = unique_id()
    identify(api, person)
    result = client(api).send_email(
        SendEmailRequest(
            identifiers={"id": person},
            to=f"{person}@example.com",
            _from="a@example.com",
            subject="Hi",
            body="{% for a in (1..100000) %}{% for b in (1..100000) %}x{% endfor %}{% endfor %}",
        )
    )
    failed = settled(api, result["delivery_id"])
    assert failed["state"] == "failed"
    assert "limit" in failed["failure_message"]
    # The worker is still alive and sending.
    after = client(api).send_email(
        SendEmailRequest(
            identifiers={"id": person},
            to=f"{person}@example.com",
            _from="a@example.com",
            subject="ok",
            body="ok",
        )
    )
    assert settled(api, after["delivery_id"])["state"] == "sent"


def test_attachments_cc_bcc_and_plain_text(api: Api, sink: SmtpSink) -> None:
    person = unique_id()
    request = SendEmailRequest(
        identifiers={"email": f"{person}@example.com"},
        to=f"{person}@example.com",
        cc="cc@example.com",
        bcc="hidden@example.com",
        _from="a@example.com",
        subject="Invoice",
        body="<p>See attached</p>",
        body_plain="See attached (plain)",
    )
    request.attach("invoice.txt", b"total: 42")
    result = client(api).send_email(request)
    delivery_id = result["delivery_id"]
    mail = mail_for(sink, delivery_id)
    envelope = next(item for item in sink.messages if item.message["X-CIO-Delivery-Id"] == delivery_id)
    assert {"cc@example.com", "hidden@example.com", f"{person}@example.com"} <= set(envelope.rcpt_tos)
    assert mail["Cc"] == "cc@example.com"
    assert mail["Bcc"] is None
    assert part(mail, "plain").strip() == "See attached (plain)"
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == "invoice.txt"
    assert attachment.get_content() in ("total: 42", b"total: 42")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"to": "x@example.com", "from": "a@example.com", "subject": "s", "body": "b"}, 400, "identifiers"),
        ({"identifiers": {"id": "1"}, "from": "a@example.com", "subject": "s", "body": "b"}, 400, "to"),
        ({"identifiers": {"id": "1"}, "to": "x@example.com", "subject": "s", "body": "b"}, 400, "from"),
        ({"identifiers": {"id": "1", "email": "x@example.com"}, "to": "x@example.com"}, 400, "exactly one"),
        (
            {"identifiers": {"id": "1"}, "to": "x@example.com", "transactional_message_id": 999999},
            404,
            "999999",
        ),
        (
            {
                "identifiers": {"id": "1"},
                "to": "x@example.com",
                "from": "a@example.com",
                "subject": "s",
                "body": "{% if %}",
            },
            400,
            "line 1",
        ),
        (
            {
                "identifiers": {"id": "1"},
                "to": "x@example.com",
                "from": "a@example.com",
                "subject": "s",
                "body": "b",
                "attachments": {"run.exe": base64.b64encode(b"MZ").decode()},
            },
            403,
            "run.exe",
        ),
        (
            {
                "identifiers": {"id": "1"},
                "to": "x@example.com",
                "from": "a@example.com",
                "subject": "s",
                "body": "b",
                "attachments": {"big.bin": base64.b64encode(b"0" * 2_100_000).decode()},
            },
            413,
            "2",
        ),
        (
            {
                "identifiers": {"id": "1"},
                "to": "x@example.com",
                "from": "a@example.com",
                "subject": "s",
                "body": "b",
                "send_at": 4_000_000_000,
            },
            400,
            "90 days",
        ),
    ],
)
def test_bad_sends_answer_in_the_meta_error_envelope(
    api: Api, body: Json, status: int, fragment: str
) -> None:
    response = api.app.post("/v1/send/email", json=body)
    assert response.status_code == status, response.text
    error = response.json()["meta"]["error"]
    assert fragment in error
    # The official client surfaces the failure rather than a result.
    with pytest.raises(CustomerIOException):
        client(api).send_email(body)


def test_queue_draft_and_send_at(api: Api, sink: SmtpSink) -> None:
    person = unique_id()
    draft = ok(
        api.app.post(
            "/v1/send/email",
            json={
                "identifiers": {"id": person},
                "to": f"{person}@example.com",
                "from": "a@example.com",
                "subject": "draft",
                "body": "b",
                "queue_draft": True,
            },
        )
    )
    later = ok(
        api.app.post(
            "/v1/send/email",
            json={
                "identifiers": {"id": person},
                "to": f"{person}@example.com",
                "from": "a@example.com",
                "subject": "later",
                "body": "b",
                "send_at": 1_000_000_000,
            },
        )
    )
    assert message(api, draft["delivery_id"])["state"] == "drafted"
    assert "drafted" in message(api, draft["delivery_id"])["metrics"]
    # send_at in the past sends now.
    assert settled(api, later["delivery_id"])["state"] == "sent"
    assert message(api, draft["delivery_id"])["state"] == "drafted"
    assert copies_of(sink, draft["delivery_id"]) == 0
    # A draft goes out when released (Tidings' POST /v1/messages/{id}/send); only a draft can be.
    ok(api.app.post(f"/v1/messages/{draft['delivery_id']}/send"))
    assert settled(api, draft["delivery_id"])["state"] == "sent"
    assert copies_of(sink, draft["delivery_id"]) == 1
    assert api.app.post(f"/v1/messages/{draft['delivery_id']}/send").status_code == 409


def test_send_to_unsubscribed_false_drops_and_bounce_suppresses(api: Api, sink: SmtpSink) -> None:
    person = unique_id()
    identify(api, person, email=f"{person}@example.com", unsubscribed=True)
    base = {
        "identifiers": {"id": person},
        "to": f"{person}@example.com",
        "from": "a@example.com",
        "subject": "s",
        "body": "b",
    }
    dropped = ok(api.app.post("/v1/send/email", json={**base, "send_to_unsubscribed": False}))
    assert settled(api, dropped["delivery_id"])["state"] == "dropped"
    assert "unsubscribed" in message(api, dropped["delivery_id"])["failure_message"]
    # Transactional messages go to unsubscribed people by default, as in Customer.io.
    sent = ok(api.app.post("/v1/send/email", json=base))
    assert settled(api, sent["delivery_id"])["state"] == "sent"
    # A bounce reported through Track /metrics marks the delivery and suppresses the address.
    ok(
        api.track.post(
            "/api/v1/metrics",
            json={"delivery_id": sent["delivery_id"], "metric": "bounced", "reason": "550 mailbox unknown"},
        )
    )
    bounced = message(api, sent["delivery_id"])
    assert bounced["state"] == "bounced"
    assert "bounced" in bounced["metrics"]
    again = ok(api.app.post("/v1/send/email", json=base))
    refused = settled(api, again["delivery_id"])
    assert refused["state"] == "dropped"
    assert "suppressed" in refused["failure_message"]
    assert copies_of(sink, again["delivery_id"]) == 0


def test_a_bounce_suppresses_each_address_of_a_named_recipient(api: Api, sink: SmtpSink) -> None:
    person = unique_id()
    base = {"identifiers": {"id": person}, "from": "a@example.com", "subject": "s", "body": "b"}
    named = ok(api.app.post("/v1/send/email", json={**base, "to": f"Bob Bounce <{person}@example.com>"}))
    assert settled(api, named["delivery_id"])["state"] == "sent"
    ok(api.track.post("/api/v1/metrics", json={"delivery_id": named["delivery_id"], "metric": "bounced"}))
    found = ok(api.app.get("/v1/esp/search_suppression/" + f"{person}@example.com"))
    assert found != {}
    bare = ok(api.app.post("/v1/send/email", json={**base, "to": f"{person}@example.com"}))
    assert settled(api, bare["delivery_id"])["state"] == "dropped"


def test_content_is_not_kept_when_retention_is_off(api: Api, sink: SmtpSink) -> None:
    person = unique_id()
    base = {
        "identifiers": {"id": person},
        "to": f"{person}@example.com",
        "from": "a@example.com",
        "subject": "s",
    }
    sent = ok(
        api.app.post(
            "/v1/send/email", json={**base, "body": "<p>secret</p>", "disable_message_retention": True}
        )
    )
    failed = ok(
        api.app.post(
            "/v1/send/email", json={**base, "body": "{{ customer.nope }}", "disable_message_retention": True}
        )
    )
    kept = ok(api.app.post("/v1/send/email", json={**base, "body": "<p>kept</p>"}))
    assert "secret" in part(mail_for(sink, sent["delivery_id"]), "html")
    for delivery_id, state in ((sent["delivery_id"], "sent"), (failed["delivery_id"], "failed")):
        assert settled(api, delivery_id)["state"] == state
        assert message(api, delivery_id)["forgotten"] is True
        archived = ok(api.app.get(f"/v1/messages/{delivery_id}/archived_message"))["archived_message"]
        assert archived["body"] is None
    assert settled(api, kept["delivery_id"])["forgotten"] is False
    archived = ok(api.app.get(f"/v1/messages/{kept['delivery_id']}/archived_message"))["archived_message"]
    assert "kept" in archived["body"]


def test_related_objects_and_trigger_data_in_liquid(api: Api, sink: SmtpSink) -> None:
    person = unique_id()
    ok(
        api.track.post(
            "/api/v2/entity",
            json={
                "type": "object",
                "action": "identify",
                "identifiers": {"object_type_id": "1", "object_id": f"acme-{person}"},
                "attributes": {"name": "Acme"},
                "cio_relationships": [
                    {"identifiers": {"id": person}, "relationship_attributes": {"role": "admin"}}
                ],
            },
        )
    )
    result = client(api).send_email(
        SendEmailRequest(
            identifiers={"id": person},
            to=f"{person}@example.com",
            _from="a@example.com",
            subject="{{ objects.object_type_1[0].name }}",
            body=(
                "<p>{{ objects.object_type_1[0].relationship.role }} of {{ objects.object_type_1.size }}</p>"
                "{% for item in trigger.items %}<i>{{ item.sku }}</i>{% endfor %}"
                "<p>{{ delivery_id }}</p>"
            ),
            message_data={"items": [{"sku": "A1"}, {"sku": "B2"}]},
        )
    )
    mail = mail_for(sink, result["delivery_id"])
    assert mail["Subject"] == "Acme"
    html = part(mail, "html")
    assert "admin of 1" in html
    assert "<i>A1</i><i>B2</i>" in html
    assert result["delivery_id"] in html

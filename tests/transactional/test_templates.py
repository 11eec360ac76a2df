"""Message templates, layouts and snippets through the App API and ``tidings messages apply``; Liquid is
checked on save; scheduled sends, frequency caps and the channels Tidings does not send."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx

from tests.harness import Api, run_cli
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import Json, eventually, message, ok, settled
from tests.transactional.test_send import copies_of, mail_for


def app_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    [error] = response.json()["errors"]
    assert error["status"] == str(status)
    detail: str = error["detail"]
    return detail


def send(api: Api, person: str, **fields: object) -> Json:
    body = {"identifiers": {"id": person}, "to": f"{person}@example.com", **fields}
    return ok(api.app.post("/v1/send/email", json=body))


def test_liquid_is_checked_on_save_with_line_and_column(api: Api) -> None:
    detail = app_error(
        api.app.post(
            "/v1/transactional",
            json={"name": "Broken", "content": {"subject": "ok", "body": "<p>fine</p>\n<p>{% if %}</p>"}},
        ),
        400,
    )
    assert "content.body" in detail
    assert "line 2" in detail
    assert "column" in detail
    unknown = app_error(api.app.post("/v1/transactional", json={"name": "x", "content": {"bodyy": "b"}}), 400)
    assert "bodyy" in unknown
    typo = app_error(api.app.post("/v1/transactional", json={"name": "x", "contnet": {"body": "b"}}), 400)
    assert "contnet" in typo
    assert app_error(api.app.put("/v1/snippets", json={"name": "s", "value": "{{ x | nosuchfilter }}"}), 400)
    assert "content" in app_error(
        api.app.post("/v1/layouts", json={"name": "l", "body": "<html></html>"}), 400
    )
    assert ok(api.app.get("/v1/transactional")) == {"messages": []}


def test_templates_crud_translations_and_isolation(api: Api, other_api: Api) -> None:
    created = ok(
        api.app.post(
            "/v1/transactional",
            json={
                "name": "Receipt",
                "trigger_name": "receipt",
                "description": "after checkout",
                "content": {"from": "shop@example.com", "subject": "Receipt", "body": "<p>Thanks</p>"},
                "open_tracking": False,
            },
        )
    )["message"]
    assert created["open_tracking"] is False
    assert created["link_tracking"] is True
    assert created["type"] == "email"
    changed = ok(
        api.app.put("/v1/transactional/receipt", json={"description": "changed", "queue_drafts": True})
    )
    assert changed["message"]["description"] == "changed"
    assert changed["message"]["content"]["subject"] == "Receipt"
    ok(api.app.put("/v1/transactional/receipt/language/de", json={"content": {"subject": "Quittung"}}))
    assert ok(api.app.get(f"/v1/transactional/{created['id']}/language/de"))["content"] == {
        "subject": "Quittung"
    }
    contents = ok(api.app.get("/v1/transactional/receipt/contents"))["contents"]
    assert [c["language"] for c in contents] == ["", "de"]
    assert app_error(api.app.put("/v1/transactional/receipt", json={"type": "sms"}), 400)
    duplicate = api.app.post("/v1/transactional", json={"name": "again", "trigger_name": "receipt"})
    assert duplicate.status_code == 409
    # queue_drafts on the template holds sends as drafts.
    person = f"t-{secrets.token_hex(4)}"
    held = send(api, person, transactional_message_id="receipt")
    assert message(api, held["delivery_id"])["state"] == "drafted"
    # Another workspace sees none of it.
    assert other_api.app.get("/v1/transactional/receipt").status_code == 404
    assert other_api.app.get(f"/v1/transactional/{created['id']}").status_code == 404
    refused = other_api.app.post(
        "/v1/send/email",
        json={"identifiers": {"id": "x"}, "to": "x@example.com", "transactional_message_id": created["id"]},
    )
    assert refused.status_code == 404
    assert "meta" in refused.json()


def test_snippets_and_layouts_api(api: Api) -> None:
    ok(api.app.put("/v1/snippets", json={"name": "sig", "value": "Cheers"}))
    ok(api.app.post("/v1/snippets", json={"name": "sig", "value": "Regards"}))
    assert [(s["name"], s["value"]) for s in ok(api.app.get("/v1/snippets"))["snippets"]] == [
        ("sig", "Regards")
    ]
    too_big = api.app.put("/v1/snippets", json={"name": "big", "value": "x" * 20_000})
    assert too_big.status_code == 413
    ok(api.app.delete("/v1/snippets/sig"))
    assert api.app.delete("/v1/snippets/sig").status_code == 404
    layout = ok(api.app.post("/v1/layouts", json={"name": "base", "body": "<div>{{ content }}</div>"}))[
        "layout"
    ]
    assert api.app.post("/v1/layouts", json={"name": "base", "body": "{{ content }}"}).status_code == 409
    ok(api.app.put(f"/v1/layouts/{layout['id']}", json={"body": "<main>{{ content }}</main>"}))
    assert ok(api.app.get(f"/v1/layouts/{layout['id']}"))["layout"]["body"] == "<main>{{ content }}</main>"
    assert [row["name"] for row in ok(api.app.get("/v1/layouts"))["layouts"]] == ["base"]
    ok(api.app.delete(f"/v1/layouts/{layout['id']}"))
    assert api.app.get(f"/v1/layouts/{layout['id']}").status_code == 404


def test_messages_apply_from_files(api: Api, sink: SmtpSink, tmp_path: Path) -> None:
    (tmp_path / "welcome.html").write_text("<p>Welcome {{ customer.first_name }} {{ snippets.sig }}</p>")
    spec = tmp_path / "messages.yaml"
    spec.write_text(
        "layouts:\n"
        "  - name: plain\n"
        "    body: '<html><body>{{ content }}</body></html>'\n"
        "snippets:\n"
        "  - name: sig\n"
        "    value: '-- the team'\n"
        "messages:\n"
        "  - name: Welcome\n"
        "    trigger_name: welcome\n"
        "    layout: plain\n"
        "    content:\n"
        "      from: hello@example.com\n"
        "      subject: 'Hi {{ customer.first_name }}'\n"
        "      body_file: welcome.html\n"
    )
    workspace = str(api.creds.workspace_id)
    first = run_cli(
        api.server.database_url, "messages", "apply", str(spec), "--workspace", workspace, "--json"
    )
    assert [(r["kind"], r["action"]) for r in json.loads(first.stdout)] == [
        ("layout", "created"),
        ("snippet", "created"),
        ("message", "created"),
    ]
    again = run_cli(
        api.server.database_url, "messages", "apply", str(spec), "--workspace", workspace, "--json"
    )
    assert {r["action"] for r in json.loads(again.stdout)} == {"unchanged"}
    listed = run_cli(api.server.database_url, "messages", "list", "--workspace", workspace, "--json")
    assert [m["trigger_name"] for m in json.loads(listed.stdout)] == ["welcome"]
    person = f"t-{secrets.token_hex(4)}"
    ok(api.track.put(f"/api/v1/customers/{person}", json={"first_name": "Lin"}))
    sent = send(api, person, transactional_message_id="welcome")
    mail = mail_for(sink, sent["delivery_id"])
    assert mail["Subject"] == "Hi Lin"
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    assert "Welcome Lin -- the team" in html.get_content()
    # A broken file changes nothing and says where.
    spec.write_text("messages:\n  - name: Bad\n    content:\n      body: '{% for %}'\n")
    failed = run_cli(
        api.server.database_url, "messages", "apply", str(spec), "--workspace", workspace, check=False
    )
    assert failed.returncode != 0
    assert "messages[0]" in failed.stderr
    assert "line 1" in failed.stderr


def test_send_at_waits_for_its_time(api: Api, sink: SmtpSink) -> None:
    person = f"t-{secrets.token_hex(4)}"
    base = {"from": "a@example.com", "subject": "later", "body": "b"}
    now = ok(api.app.post("/_tidings/clock", json={"advance": 0}))["now"]
    later = send(api, person, send_at=now + 3600, **base)
    # The server's clock is moved, not waited for.
    eventually(lambda: api.app.get("/healthz").status_code == 200, what="the server")
    assert message(api, later["delivery_id"])["state"] == "queued"
    ok(api.app.post("/_tidings/clock", json={"advance": 3601}))
    assert settled(api, later["delivery_id"])["state"] == "sent"
    assert copies_of(sink, later["delivery_id"]) == 1


def test_frequency_cap_drops_what_exceeds_it(api: Api, sink: SmtpSink) -> None:
    cap = [{"channel": "email", "max_messages": 2, "per_seconds": 86400, "include_transactional": True}]
    run_cli(
        api.server.database_url,
        "workspace",
        "configure",
        str(api.creds.workspace_id),
        "--set",
        f"messaging.frequency_caps={json.dumps(cap)}",
    )
    person = f"t-{secrets.token_hex(4)}"
    base = {"from": "a@example.com", "subject": "s", "body": "b"}
    first, second = send(api, person, **base), send(api, person, **base)
    for sent in (first, second):
        assert settled(api, sent["delivery_id"])["state"] == "sent"
    third = send(api, person, **base)
    capped = settled(api, third["delivery_id"])
    assert capped["state"] == "dropped"
    assert "frequency cap" in capped["failure_message"]
    assert copies_of(sink, third["delivery_id"]) == 0
    # Another person is not affected.
    other = send(api, f"t-{secrets.token_hex(4)}", **base)
    assert settled(api, other["delivery_id"])["state"] == "sent"


def test_unsupported_channels_answer_403(api: Api) -> None:
    for path in ("/v1/send/in_app", "/v1/send/inbox_message", "/v1/send/whatsapp"):
        response = api.app.post(path, json={"identifiers": {"id": "1"}, "transactional_message_id": 1})
        assert response.status_code == 403
        assert "not supported" in response.json()["meta"]["error"]
    unauthenticated = httpx.post(f"{api.server.base_url}/v1/send/email", json={})
    assert unauthenticated.status_code == 401
    assert "meta" in unauthenticated.json()


def test_auto_create_makes_a_template_on_first_use(api: Api, sink: SmtpSink) -> None:
    person = f"t-{secrets.token_hex(4)}"
    sent = send(
        api,
        person,
        transactional_message_id="password-reset",
        auto_create=True,
        **{"from": "a@example.com", "subject": "Reset", "body": "<p>reset</p>"},
    )
    made = ok(api.app.get("/v1/transactional/password-reset"))["message"]
    assert made["trigger_name"] == "password-reset"
    assert message(api, sent["delivery_id"])["message_template_id"] == made["id"]
    eventually(lambda: copies_of(sink, sent["delivery_id"]) == 1, what="the auto-created message to arrive")


def test_a_trigger_name_given_to_another_message_sends_that_message(api: Api) -> None:
    """A process remembers which message a trigger name found last (tidings.messaging.templates); once
    the name moves to another message, sends by that name must use the new one."""

    def create(name: str, trigger_name: str) -> Json:
        content = {"from": "shop@example.com", "subject": name, "body": f"<p>{name}</p>"}
        body = {"name": name, "trigger_name": trigger_name, "content": content}
        created: Json = ok(api.app.post("/v1/transactional", json=body))["message"]
        return created

    def template_of(sent: Json) -> int:
        template_id: int = message(api, sent["delivery_id"])["message_template_id"]
        return template_id

    person = f"moving-{secrets.token_hex(4)}"
    first = create("First", "moving")
    assert template_of(send(api, person, transactional_message_id="moving")) == first["id"]
    assert template_of(send(api, person, transactional_message_id="moving")) == first["id"]
    ok(api.app.put(f"/v1/transactional/{first['id']}", json={"trigger_name": "moved"}))
    second = create("Second", "moving")
    assert template_of(send(api, person, transactional_message_id="moving")) == second["id"]
    assert template_of(send(api, person, transactional_message_id="moved")) == first["id"]
    ok(api.app.put(f"/v1/transactional/{second['id']}", json={"trigger_name": "gone"}))
    missing = api.app.post(
        "/v1/send/email",
        json={"transactional_message_id": "moving", "identifiers": {"id": person}, "to": "x@example.com"},
    )
    assert missing.status_code == 404, missing.text

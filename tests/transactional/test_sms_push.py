"""Transactional SMS and push end to end: the official Python ``APIClient`` sends through Tidings, whose
worker reaches local stand-ins speaking Twilio's Messages API, FCM HTTP v1 and APNs (HTTP/2). The workspace
is pointed at them with ``tidings workspace configure``, as an operator would."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
from customerio.api import APIClient, SendPushRequest, SendSMSRequest

from tests.harness import Api, run_cli
from tests.messaging.standins import ApnsStandin, FcmStandin, TwilioStandin, apns_device_token
from tests.transactional.conftest import eventually, message, ok, settled


@pytest.fixture(scope="module")
def twilio() -> Iterator[TwilioStandin]:
    with TwilioStandin() as running:
        yield running


@pytest.fixture(scope="module")
def fcm() -> Iterator[FcmStandin]:
    with FcmStandin() as running:
        yield running


@pytest.fixture(scope="module")
def apns() -> Iterator[ApnsStandin]:
    with ApnsStandin() as running:
        yield running


def configure(api: Api, **settings: object) -> str:
    """Set messaging settings with the CLI; returns what it printed."""
    args: list[str] = []
    for key, value in settings.items():
        args += ["--set", f"messaging.{key.replace('__', '.')}={json.dumps(value)}"]
    return run_cli(
        api.server.database_url, "workspace", "configure", str(api.creds.workspace_id), *args
    ).stdout


def client(api: Api) -> APIClient:
    return APIClient(api.creds.app_api_key, url=api.server.base_url, retries=0)


def test_sms_through_a_twilio_compatible_api(api: Api, twilio: TwilioStandin) -> None:
    printed = configure(
        api,
        sms__api_url=twilio.url,
        sms__account_sid=twilio.account_sid,
        sms__auth_token=twilio.auth_token,
        sms__from_number="+15005550006",
    )
    # The settings are printed without the provider secret.
    assert twilio.auth_token not in printed
    assert json.loads(printed)["messaging"]["sms"]["auth_token"] == "***"
    person = f"p-{secrets.token_hex(4)}"
    ok(api.track.put(f"/api/v1/customers/{person}", json={"first_name": "Ada", "phone": "+15551230000"}))
    template = ok(
        api.app.post(
            "/v1/transactional",
            json={
                "name": "code",
                "type": "sms",
                "content": {"body": "Hi {{ customer.first_name }}: {{ trigger.code }}"},
            },
        )
    )["message"]
    result = client(api).send_sms(
        SendSMSRequest(
            transactional_message_id=template["id"], identifiers={"id": person}, message_data={"code": "9911"}
        )
    )
    sent = settled(api, result["delivery_id"])
    assert sent["state"] == "sent", sent
    assert sent["recipient"] == "+15551230000"
    [request] = [
        r for r in twilio.requests if result["delivery_id"] in r.headers.get("i-twilio-idempotency-token", "")
    ]
    form = request.form()
    assert form["Body"] == ["Hi Ada: 9911"]
    assert form["To"] == ["+15551230000"]
    assert form["From"] == ["+15005550006"]
    # A number the provider refuses for good makes the delivery undeliverable.
    twilio.unsubscribed.add("+15559999999")
    refused = client(api).send_sms(
        SendSMSRequest(
            transactional_message_id=template["id"],
            identifiers={"id": person},
            message_data={"code": "1"},
            to="+15559999999",
        )
    )
    assert settled(api, refused["delivery_id"])["state"] == "undeliverable"


def test_push_to_android_and_ios_devices(api: Api, fcm: FcmStandin, apns: ApnsStandin) -> None:
    configure(
        api,
        push__fcm__api_url=fcm.url,
        push__fcm__project_id=fcm.project_id,
        push__fcm__service_account=fcm.service_account,
        push__apns__api_url=apns.url,
        push__apns__team_id=apns.team_id,
        push__apns__key_id=apns.key_id,
        push__apns__private_key=apns.private_key,
        push__apns__topic=apns.topic,
    )
    person = f"p-{secrets.token_hex(4)}"
    ok(api.track.put(f"/api/v1/customers/{person}", json={"first_name": "Grace"}))
    android, ios = f"fcm-{secrets.token_hex(8)}", apns_device_token()
    for token, platform in ((android, "android"), (ios, "ios")):
        ok(
            api.track.put(
                f"/api/v1/customers/{person}/devices", json={"device": {"id": token, "platform": platform}}
            )
        )
    template = ok(
        api.app.post(
            "/v1/transactional",
            json={
                "name": "shipped",
                "type": "push",
                "content": {"title": "Shipped", "message": "On its way, {{ customer.first_name }}"},
            },
        )
    )["message"]
    result = client(api).send_push(
        SendPushRequest(
            transactional_message_id=template["id"], identifiers={"id": person}, custom_data={"order": "42"}
        )
    )
    sent = settled(api, result["delivery_id"])
    assert sent["state"] == "sent", sent
    fcm_send = eventually(lambda: [r for r in fcm.sends if android in r.body.decode()], what="the FCM send")
    payload = fcm_send[0].json()["message"]
    assert payload["token"] == android
    assert payload["notification"] == {"title": "Shipped", "body": "On its way, Grace"}
    assert payload["data"]["order"] == "42"
    apns_sends = [r for r in apns.requests if r.path == f"/3/device/{ios}"]
    assert len(apns_sends) == 1
    assert apns_sends[0].http_version == "2"
    aps = apns_sends[0].json()["aps"]
    assert aps["alert"] == {"title": "Shipped", "body": "On its way, Grace"}
    assert apns_sends[0].headers["apns-topic"] == apns.topic
    # A person without devices cannot get a push: the delivery fails and says why.
    nobody = f"p-{secrets.token_hex(4)}"
    ok(api.track.put(f"/api/v1/customers/{nobody}", json={"first_name": "Nobody"}))
    lonely = client(api).send_push(
        SendPushRequest(transactional_message_id=template["id"], identifiers={"id": nobody})
    )
    failed = settled(api, lonely["delivery_id"])
    assert failed["state"] == "failed"
    assert "device" in message(api, lonely["delivery_id"])["failure_message"]

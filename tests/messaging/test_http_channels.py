"""The SMS, push and webhook channels against local stand-ins of their providers: request formats, payloads,
idempotency keys, token caching and how provider answers map to Sent / transient / undeliverable / failed."""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.messaging.standins import (
    FCM_SCOPE,
    GOOGLE_TOKEN_AUDIENCE,
    JWT_BEARER_GRANT,
    ApnsStandin,
    FcmStandin,
    TwilioStandin,
    WebhookReceiver,
    apns_device_token,
    make_apns_key,
    make_service_account,
    unused_port_url,
)
from tidings.messaging.channels import push as push_module
from tidings.messaging.channels.base import Outgoing, SendError, Sent
from tidings.messaging.channels.push import PushChannel, apns_id
from tidings.messaging.channels.sms import SmsChannel
from tidings.messaging.channels.webhook import WebhookChannel
from tidings.messaging.settings import (
    ApnsSettings,
    FcmSettings,
    PushSettings,
    SmsSettings,
    WebhookChannelSettings,
)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


def _send_error(channel: Any, outgoing: Outgoing) -> SendError:
    with pytest.raises(SendError) as info:
        channel.send(outgoing)
    return info.value


# ======================================================================================================
# SMS (Twilio SDK)
# ======================================================================================================


@pytest.fixture
def twilio() -> Iterator[TwilioStandin]:
    with TwilioStandin() as standin:
        yield standin
        assert standin.errors == []


@pytest.fixture
def sms() -> Iterator[SmsChannel]:
    channel = SmsChannel()
    yield channel
    channel.close()


def _sms_settings(twilio: TwilioStandin, **overrides: Any) -> SmsSettings:
    values: dict[str, Any] = {
        "api_url": twilio.url,
        "account_sid": twilio.account_sid,
        "auth_token": twilio.auth_token,
        "from_number": "+15005550006",
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return SmsSettings(**values)


def _sms(settings: SmsSettings, delivery_id: str = "dlv-sms-1", **content: Any) -> Outgoing:
    body: dict[str, Any] = {"to": "+14155550100", "body": "Your code is 1234"}
    body.update(content)
    return Outgoing(delivery_id=delivery_id, workspace_id=1, channel="sms", content=body, settings=settings)


def test_sms_request_is_twilios_messages_create(twilio: TwilioStandin, sms: SmsChannel) -> None:
    outgoing = _sms(
        _sms_settings(twilio), media_url=["https://cdn.example.com/a.png", "https://cdn.example.com/b.png"]
    )

    sent = sms.send(outgoing)

    [request] = twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith("twilio-python/")
    credentials = base64.b64decode(request.headers["authorization"].removeprefix("Basic ")).decode()
    assert credentials == f"{twilio.account_sid}:{twilio.auth_token}"
    assert request.form() == {
        "To": ["+14155550100"],
        "From": ["+15005550006"],
        "Body": ["Your code is 1234"],
        "MediaUrl": ["https://cdn.example.com/a.png", "https://cdn.example.com/b.png"],
    }
    assert request.headers["i-twilio-idempotency-token"] == "dlv-sms-1"
    assert request.headers["idempotency-key"] == "dlv-sms-1"
    assert sent.provider_message_id is not None
    assert sent.provider_message_id.startswith("SM")
    assert len(sent.provider_message_id) == 34
    assert sent.recipient == "+14155550100"


def test_sms_sender_override_and_messaging_service(twilio: TwilioStandin, sms: SmsChannel) -> None:
    sms.send(_sms(_sms_settings(twilio), **{"from": "+15005550001"}))
    service_only = _sms_settings(twilio, from_number=None, messaging_service_sid="MG" + "0" * 32)
    sms.send(_sms(service_only, body="via service"))

    first, second = twilio.requests
    assert first.form()["From"] == ["+15005550001"]
    assert "MessagingServiceSid" not in first.form()
    assert second.form() == {
        "To": ["+14155550100"],
        "MessagingServiceSid": ["MG" + "0" * 32],
        "Body": ["via service"],
    }


def test_sms_idempotency_key_is_stable_across_retries(twilio: TwilioStandin, sms: SmsChannel) -> None:
    settings = _sms_settings(twilio)
    twilio.fail_next(1, 503)
    error = _send_error(sms, _sms(settings, delivery_id="dlv-retry"))
    assert error.transient
    assert error.status == 503

    sms.send(_sms(settings, delivery_id="dlv-retry"))
    sms.send(_sms(settings, delivery_id="dlv-other"))

    tokens = [r.headers["i-twilio-idempotency-token"] for r in twilio.requests]
    assert tokens == ["dlv-retry", "dlv-retry", "dlv-other"]


@pytest.mark.parametrize(
    ("status", "code", "transient", "undeliverable"),
    [
        (429, 20429, True, False),
        (500, 20500, True, False),
        (503, 20503, True, False),
        (400, 21211, False, True),  # invalid 'To' number
        (400, 21614, False, True),  # not a mobile number
        (400, 21408, False, False),  # sending to that region is not enabled: our account's problem
        (403, 20003, False, False),
        (404, 20404, False, False),
    ],
)
def test_sms_error_mapping(
    twilio: TwilioStandin, sms: SmsChannel, status: int, code: int, transient: bool, undeliverable: bool
) -> None:
    twilio.fail_next(1, status, code=code, message="injected")

    error = _send_error(sms, _sms(_sms_settings(twilio)))

    assert (error.transient, error.undeliverable, error.status) == (transient, undeliverable, status)
    assert str(code) in error.message


def test_sms_provider_validation_errors_are_undeliverable(twilio: TwilioStandin, sms: SmsChannel) -> None:
    settings = _sms_settings(twilio)
    twilio.unsubscribed.add("+14155550199")

    opted_out = _send_error(sms, _sms(settings, to="+14155550199"))
    bad_number = _send_error(sms, _sms(settings, to="0800-NOT-A-NUMBER"))

    assert (opted_out.transient, opted_out.undeliverable) == (False, True)
    assert "21610" in opted_out.message
    assert (bad_number.transient, bad_number.undeliverable) == (False, True)
    assert "21211" in bad_number.message


def test_sms_bad_credentials_fail_without_retry(twilio: TwilioStandin, sms: SmsChannel) -> None:
    error = _send_error(sms, _sms(_sms_settings(twilio, auth_token="wrong")))

    assert (error.transient, error.undeliverable, error.status) == (False, False, 401)
    assert "20003" in error.message


def test_sms_settings_may_be_the_workspace_json(twilio: TwilioStandin, sms: SmsChannel) -> None:
    settings = _sms_settings(twilio).model_dump()
    outgoing = Outgoing(
        delivery_id="d",
        workspace_id=1,
        channel="sms",
        content={"to": "+14155550100", "body": "x"},
        settings=settings,
    )

    assert sms.send(outgoing).recipient == "+14155550100"


def test_sms_unreachable_provider_is_transient(sms: SmsChannel) -> None:
    settings = SmsSettings(
        api_url=unused_port_url(), account_sid="AC" + "1" * 32, auth_token="t", from_number="+15005550006"
    )

    error = _send_error(sms, _sms(settings))

    assert error.transient


def test_sms_missing_settings_or_recipient_send_nothing(twilio: TwilioStandin, sms: SmsChannel) -> None:
    no_credentials = _send_error(sms, _sms(SmsSettings(api_url=twilio.url, from_number="+15005550006")))
    no_sender = _send_error(sms, _sms(_sms_settings(twilio, from_number=None)))
    no_phone = _send_error(sms, _sms(_sms_settings(twilio), to=""))

    assert (no_credentials.transient, no_credentials.undeliverable) == (False, False)
    assert (no_sender.transient, no_sender.undeliverable) == (False, False)
    assert (no_phone.transient, no_phone.undeliverable) == (False, True)
    assert twilio.requests == []


# ======================================================================================================
# Push (FCM HTTP v1 via google-auth + httpx, APNs over HTTP/2)
# ======================================================================================================


@pytest.fixture
def fcm() -> Iterator[FcmStandin]:
    with FcmStandin() as standin:
        yield standin
        assert standin.errors == []


@pytest.fixture
def apns() -> Iterator[ApnsStandin]:
    with ApnsStandin() as standin:
        yield standin
        assert standin.errors == []


@pytest.fixture
def push() -> Iterator[PushChannel]:
    channel = PushChannel()
    yield channel
    channel.close()


def _push_settings(fcm: FcmStandin | None = None, apns: ApnsStandin | None = None) -> PushSettings:
    settings = PushSettings()
    if fcm is not None:
        settings.fcm = FcmSettings(api_url=fcm.url, service_account=fcm.service_account, timeout_seconds=5.0)
    if apns is not None:
        settings.apns = ApnsSettings(
            api_url=apns.url,
            team_id=apns.team_id,
            key_id=apns.key_id,
            private_key=apns.private_key,
            topic=apns.topic,
            timeout_seconds=5.0,
        )
    return settings


def _push(
    settings: PushSettings, devices: list[dict[str, str]], delivery_id: str = "dlv-push-1", **content: Any
) -> Outgoing:
    body: dict[str, Any] = {"devices": devices, "title": "Hello", "message": "Your order shipped"}
    body.update(content)
    return Outgoing(delivery_id=delivery_id, workspace_id=1, channel="push", content=body, settings=settings)


ANDROID = "fcm-token-1"
ANDROID_2 = "fcm-token-2"


def test_fcm_request_is_a_v1_message_with_oauth_token(fcm: FcmStandin, push: PushChannel) -> None:
    outgoing = _push(
        _push_settings(fcm=fcm),
        [{"token": ANDROID, "platform": "android"}],
        image_url="https://cdn.example.com/box.png",
        link="shop://orders/42",
        sound="chime",
        custom_data={"order_id": "42"},
    )

    sent = push.send(outgoing)

    token_request, send_request = fcm.requests
    assert token_request.path == "/token"
    form = token_request.form()
    assert form["grant_type"] == [JWT_BEARER_GRANT]
    claims = jwt.decode(form["assertion"][0], options={"verify_signature": False})
    assert claims["iss"] == fcm.service_account["client_email"]
    assert claims["aud"] == GOOGLE_TOKEN_AUDIENCE
    assert claims["scope"] == FCM_SCOPE

    assert send_request.path == f"/v1/projects/{fcm.project_id}/messages:send"
    assert send_request.headers["authorization"].startswith("Bearer ya29.")
    assert send_request.headers["content-type"] == "application/json"
    assert send_request.json() == {
        "message": {
            "token": ANDROID,
            "notification": {
                "title": "Hello",
                "body": "Your order shipped",
                "image": "https://cdn.example.com/box.png",
            },
            "data": {
                "order_id": "42",
                "link": "shop://orders/42",
                "CIO-Delivery-ID": "dlv-push-1",
                "CIO-Delivery-Token": ANDROID,
            },
            "android": {"notification": {"sound": "chime"}},
        }
    }
    assert sent.recipient == ANDROID
    assert sent.provider_message_id is not None
    assert sent.provider_message_id.startswith(f"projects/{fcm.project_id}/messages/")


def test_apns_request_is_http2_with_provider_token(apns: ApnsStandin, push: PushChannel) -> None:
    device = apns_device_token()
    outgoing = _push(
        _push_settings(apns=apns),
        [{"token": device, "platform": "ios"}],
        image_url="https://cdn.example.com/box.png",
        link="shop://orders/42",
        sound="default",
        custom_data={"order_id": "42"},
    )

    sent = push.send(outgoing)

    [request] = apns.requests
    assert request.http_version == "2"
    assert request.method == "POST"
    assert request.path == f"/3/device/{device}"
    assert request.headers["apns-topic"] == apns.topic
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-id"] == apns_id("dlv-push-1", device)
    assert uuid.UUID(request.headers["apns-id"]).version == 5
    scheme, _, provider_token = request.headers["authorization"].partition(" ")
    assert scheme == "bearer"
    assert jwt.get_unverified_header(provider_token) == {"alg": "ES256", "kid": apns.key_id, "typ": "JWT"}
    claims = jwt.decode(provider_token, options={"verify_signature": False})
    assert claims["iss"] == apns.team_id
    assert abs(claims["iat"] - time.time()) < 60
    assert request.json() == {
        "aps": {
            "alert": {"title": "Hello", "body": "Your order shipped"},
            "sound": "default",
            "mutable-content": 1,
        },
        "CIO": {"push": {"link": "shop://orders/42", "image": "https://cdn.example.com/box.png"}},
        "order_id": "42",
        "CIO-Delivery-ID": "dlv-push-1",
        "CIO-Delivery-Token": device,
    }
    assert sent == Sent(provider_message_id=request.headers["apns-id"], recipient=device)


def test_apns_payload_without_image_has_no_mutable_content(apns: ApnsStandin, push: PushChannel) -> None:
    device = apns_device_token()
    push.send(_push(_push_settings(apns=apns), [{"token": device, "platform": "ios"}]))

    assert apns.requests[0].json()["aps"] == {"alert": {"title": "Hello", "body": "Your order shipped"}}
    assert "CIO" not in apns.requests[0].json()


def test_custom_payload_replaces_the_generated_one_per_platform(
    fcm: FcmStandin, apns: ApnsStandin, push: PushChannel
) -> None:
    ios_a, ios_b = apns_device_token(), apns_device_token()
    devices = [
        {"token": ANDROID, "platform": "android"},
        {"token": ios_a, "platform": "ios"},
        {"token": ios_b, "platform": "ios"},
    ]
    custom_payload = {
        "android": {"message": {"data": {"screen": "promo"}, "android": {"priority": "high"}}},
        "ios": {"aps": {"alert": "Sale!", "badge": 3}, "screen": "promo"},
    }

    push.send(_push(_push_settings(fcm, apns), devices, custom_payload=custom_payload))

    [android] = fcm.sends
    assert android.json() == {
        "message": {
            "token": ANDROID,
            "data": {"screen": "promo", "CIO-Delivery-ID": "dlv-push-1", "CIO-Delivery-Token": ANDROID},
            "android": {"priority": "high"},
        }
    }
    bodies = {r.path.rsplit("/", 1)[1]: r.json() for r in apns.requests}
    assert bodies[ios_a] == {
        "aps": {"alert": "Sale!", "badge": 3},
        "screen": "promo",
        "CIO-Delivery-ID": "dlv-push-1",
        "CIO-Delivery-Token": ios_a,
    }
    assert bodies[ios_b]["CIO-Delivery-Token"] == ios_b


def test_custom_payload_for_one_platform_leaves_the_other_generated(
    fcm: FcmStandin, apns: ApnsStandin, push: PushChannel
) -> None:
    device = apns_device_token()
    devices = [{"token": ANDROID, "platform": "android"}, {"token": device, "platform": "ios"}]
    # Rendered Liquid arrives as text: JSON text is accepted too.
    custom_payload = '{"ios": {"aps": {"content-available": 1}, "refresh": "inbox"}}'

    push.send(_push(_push_settings(fcm, apns), devices, custom_payload=custom_payload))

    assert fcm.sends[0].json()["message"]["notification"] == {"title": "Hello", "body": "Your order shipped"}
    [ios] = apns.requests
    assert ios.json()["aps"] == {"content-available": 1}
    # A silent push must be typed background and sent at low priority.
    assert ios.headers["apns-push-type"] == "background"
    assert ios.headers["apns-priority"] == "5"


def test_apns_id_is_stable_across_retries_and_distinct_per_device(
    apns: ApnsStandin, push: PushChannel
) -> None:
    first, second = apns_device_token(), apns_device_token()
    settings = _push_settings(apns=apns)
    devices = [{"token": first, "platform": "ios"}, {"token": second, "platform": "ios"}]
    apns.fail_next(2, 503, reason="ServiceUnavailable")

    error = _send_error(push, _push(settings, devices, delivery_id="dlv-a"))
    assert error.transient
    push.send(_push(settings, devices, delivery_id="dlv-a"))
    push.send(_push(settings, [{"token": first, "platform": "ios"}], delivery_id="dlv-b"))

    ids = [(r.path.rsplit("/", 1)[1], r.headers["apns-id"]) for r in apns.requests]
    assert ids[:2] == ids[2:4]
    assert ids[0][1] != ids[1][1]
    assert ids[4] == (first, apns_id("dlv-b", first))
    assert ids[4][1] != ids[0][1]


def test_fcm_token_is_fetched_once_and_reused(fcm: FcmStandin, push: PushChannel) -> None:
    settings = _push_settings(fcm=fcm)
    for n in range(3):
        push.send(_push(settings, [{"token": ANDROID, "platform": "android"}], delivery_id=f"d{n}"))

    assert len(fcm.token_requests) == 1
    assert len(fcm.sends) == 3
    assert len({r.headers["authorization"] for r in fcm.sends}) == 1


def test_fcm_token_is_renewed_when_it_expires(fcm: FcmStandin, push: PushChannel) -> None:
    # google-auth renews a few minutes before expiry: a one-minute token is stale as soon as it arrives.
    fcm.token_lifetime = 60
    settings = _push_settings(fcm=fcm)
    for n in range(2):
        push.send(_push(settings, [{"token": ANDROID, "platform": "android"}], delivery_id=f"d{n}"))

    assert len(fcm.token_requests) == 2


def test_fcm_rejected_token_is_renewed_once(fcm: FcmStandin, push: PushChannel) -> None:
    settings = _push_settings(fcm=fcm)
    push.send(_push(settings, [{"token": ANDROID, "platform": "android"}], delivery_id="d1"))
    fcm.revoke_tokens()

    sent = push.send(_push(settings, [{"token": ANDROID, "platform": "android"}], delivery_id="d2"))

    assert sent.recipient == ANDROID
    assert len(fcm.token_requests) == 2
    assert [r.headers["authorization"] == fcm.sends[0].headers["authorization"] for r in fcm.sends] == [
        True,
        True,
        False,
    ]


def test_fcm_service_account_with_a_foreign_key_fails(fcm: FcmStandin, push: PushChannel) -> None:
    # Same account name, but a key the token endpoint does not know: the assertion's signature fails.
    impostor = make_service_account(f"{fcm.url}/token", fcm.project_id)
    impostor["client_email"] = fcm.service_account["client_email"]
    settings = _push_settings(fcm=fcm)
    settings.fcm = FcmSettings(api_url=fcm.url, service_account=impostor)

    error = _send_error(push, _push(settings, [{"token": ANDROID, "platform": "android"}]))

    assert (error.transient, error.undeliverable) == (False, False)
    assert "invalid_grant" in error.message
    assert fcm.sends == []


def test_fcm_token_endpoint_down_is_transient(fcm: FcmStandin, push: PushChannel) -> None:
    # google-auth retries a 5xx from the token endpoint twice (with a second or two of backoff) itself.
    # Once no token can be had, the other Android devices are not tried (nor is the token fetched again).
    fcm.fail_next_token(3, 503)
    devices = [{"token": ANDROID, "platform": "android"}, {"token": ANDROID_2, "platform": "android"}]

    error = _send_error(push, _push(_push_settings(fcm=fcm), devices))

    assert error.transient
    assert len(fcm.token_requests) == 3
    assert fcm.sends == []
    assert ANDROID_2 in error.message


def test_apns_provider_token_is_reused_then_renewed(
    apns: ApnsStandin, push: PushChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _push_settings(apns=apns)
    devices = [{"token": apns_device_token(), "platform": "ios"}]
    real_clock = time.time
    # The first token is made 55 minutes ago: APNs still takes it (under an hour), but it is past our 50.
    monkeypatch.setattr(push_module, "_clock", lambda: real_clock() - 55 * 60)
    push.send(_push(settings, devices, delivery_id="d1"))
    monkeypatch.setattr(push_module, "_clock", real_clock)
    push.send(_push(settings, devices, delivery_id="d2"))
    push.send(_push(settings, devices, delivery_id="d3"))

    auths = [r.headers["authorization"] for r in apns.requests]
    assert auths[0] != auths[1]
    assert auths[1] == auths[2]


def test_apns_expired_provider_token_is_renewed_and_resent(apns: ApnsStandin, push: PushChannel) -> None:
    device = apns_device_token()
    apns.fail_next(1, 403, reason="ExpiredProviderToken")

    sent = push.send(_push(_push_settings(apns=apns), [{"token": device, "platform": "ios"}]))

    first, second = apns.requests
    assert first.headers["authorization"] != second.headers["authorization"]
    assert first.headers["apns-id"] == second.headers["apns-id"]
    assert sent.recipient == device


def test_every_device_gone_is_undeliverable(fcm: FcmStandin, apns: ApnsStandin, push: PushChannel) -> None:
    gone_ios, gone_android = apns_device_token(), "fcm-gone"
    apns.unregistered.add(gone_ios)
    fcm.unregistered.add(gone_android)
    devices = [
        {"token": gone_ios, "platform": "ios"},
        {"token": "not-hex", "platform": "ios"},  # APNs: 400 BadDeviceToken
        {"token": gone_android, "platform": "android"},  # FCM: 404 UNREGISTERED
        {"token": "not a token!", "platform": "android"},  # FCM: 400 INVALID_ARGUMENT on message.token
    ]

    error = _send_error(push, _push(_push_settings(fcm, apns), devices))

    assert (error.transient, error.undeliverable) == (False, True)
    for reason in ("Unregistered", "BadDeviceToken", "UNREGISTERED", "INVALID_ARGUMENT"):
        assert reason in error.message


def test_a_transient_failure_with_no_success_is_transient(
    fcm: FcmStandin, apns: ApnsStandin, push: PushChannel
) -> None:
    gone = apns_device_token()
    apns.unregistered.add(gone)
    fcm.fail_next(1, 503)
    devices = [{"token": gone, "platform": "ios"}, {"token": ANDROID, "platform": "android"}]

    error = _send_error(push, _push(_push_settings(fcm, apns), devices))

    assert error.transient


def test_partial_success_is_sent_and_logs_the_failures(
    fcm: FcmStandin, apns: ApnsStandin, push: PushChannel, caplog: pytest.LogCaptureFixture
) -> None:
    ok_ios, gone_ios = apns_device_token(), apns_device_token()
    apns.unregistered.add(gone_ios)
    devices = [
        {"token": ok_ios, "platform": "ios"},
        {"token": gone_ios, "platform": "ios"},
        {"token": ANDROID, "platform": "android"},
        {"token": ANDROID, "platform": "android"},  # listed twice, sent once
        {"token": "x1", "platform": "windows"},
    ]

    with caplog.at_level(logging.WARNING, logger="tidings.messaging.channels.push"):
        sent = push.send(_push(_push_settings(fcm, apns), devices))

    assert sent.recipient == f"{ok_ios},{ANDROID}"
    assert sent.provider_message_id is not None
    assert sent.provider_message_id.split(",")[0] == apns_id("dlv-push-1", ok_ios)
    assert len(fcm.sends) == 1
    logged = caplog.text
    assert gone_ios in logged
    assert "Unregistered" in logged
    assert "unknown platform 'windows'" in logged


@pytest.mark.parametrize(("status", "reason"), [(429, "TooManyRequests"), (500, "InternalServerError")])
def test_apns_overload_is_transient(apns: ApnsStandin, push: PushChannel, status: int, reason: str) -> None:
    apns.fail_next(1, status, reason=reason)

    error = _send_error(
        push, _push(_push_settings(apns=apns), [{"token": apns_device_token(), "platform": "ios"}])
    )

    assert error.transient
    assert reason in error.message


@pytest.mark.parametrize(
    ("status", "error_code", "transient", "undeliverable"),
    [
        (429, "QUOTA_EXCEEDED", True, False),
        (500, "INTERNAL", True, False),
        (403, "SENDER_ID_MISMATCH", False, True),
        (400, "INVALID_ARGUMENT", False, False),  # not about the token: our payload
        (403, None, False, False),
    ],
)
def test_fcm_error_mapping(
    fcm: FcmStandin,
    push: PushChannel,
    status: int,
    error_code: str | None,
    transient: bool,
    undeliverable: bool,
) -> None:
    fcm.fail_next(1, status, error_code=error_code)

    error = _send_error(push, _push(_push_settings(fcm=fcm), [{"token": ANDROID, "platform": "android"}]))

    assert (error.transient, error.undeliverable) == (transient, undeliverable)


def test_apns_bad_provider_key_fails(apns: ApnsStandin, push: PushChannel) -> None:
    settings = _push_settings(apns=apns)
    other_key = make_apns_key()
    settings.apns = settings.apns.model_copy(update={"private_key": other_key})

    error = _send_error(push, _push(settings, [{"token": apns_device_token(), "platform": "ios"}]))

    assert (error.transient, error.undeliverable, error.status) == (False, False, 403)
    assert "InvalidProviderToken" in error.message


def test_push_without_settings_or_devices(push: PushChannel) -> None:
    unconfigured = _send_error(
        push,
        _push(
            PushSettings(),
            [{"token": ANDROID, "platform": "android"}, {"token": apns_device_token(), "platform": "ios"}],
        ),
    )
    no_devices = _send_error(push, _push(PushSettings(), []))

    assert (unconfigured.transient, unconfigured.undeliverable) == (False, False)
    assert "fcm" in unconfigured.message
    assert "apns" in unconfigured.message
    assert (no_devices.transient, no_devices.undeliverable) == (False, True)


def test_push_providers_unreachable_is_transient(push: PushChannel) -> None:
    down = unused_port_url()
    settings = PushSettings(
        fcm=FcmSettings(api_url=down, service_account=make_service_account(f"{down}/token")),
        apns=ApnsSettings(
            api_url=down, team_id="T", key_id="K", private_key=make_apns_key(), topic="io.tidings.app"
        ),
    )
    devices = [{"token": ANDROID, "platform": "android"}, {"token": apns_device_token(), "platform": "ios"}]

    error = _send_error(push, _push(settings, devices))

    assert error.transient


# ======================================================================================================
# Webhook (outbound guard)
# ======================================================================================================


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as standin:
        yield standin
        assert standin.errors == []


@pytest.fixture
def webhook() -> Iterator[WebhookChannel]:
    channel = WebhookChannel(allow_private=True)
    yield channel
    channel.close()


def _hook(url: str, delivery_id: str = "dlv-hook-1", **content: Any) -> Outgoing:
    body: dict[str, Any] = {"url": url}
    body.update(content)
    return Outgoing(
        delivery_id=delivery_id,
        workspace_id=1,
        channel="webhook",
        content=body,
        settings=WebhookChannelSettings(timeout_seconds=5.0),
    )


def test_webhook_request_carries_method_headers_body_and_delivery_id(
    receiver: WebhookReceiver, webhook: WebhookChannel
) -> None:
    url = f"{receiver.url}/hooks/order?source=tidings"
    outgoing = _hook(
        url,
        method="post",
        headers={"Authorization": "Bearer abc", "X-Custom": "1", "X-CIO-Delivery-Id": "forged"},
        body='{"order": 42}',
    )

    sent = webhook.send(outgoing)

    [request] = receiver.requests
    assert (request.method, request.path, request.query) == ("POST", "/hooks/order", "source=tidings")
    assert request.headers["authorization"] == "Bearer abc"
    assert request.headers["x-custom"] == "1"
    assert request.headers["x-cio-delivery-id"] == "dlv-hook-1"
    assert request.headers["content-type"] == "application/json"
    assert request.body == b'{"order": 42}'
    assert sent == Sent(provider_message_id=None, recipient=url)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_webhook_methods(receiver: WebhookReceiver, webhook: WebhookChannel, method: str) -> None:
    body = "plain words" if method != "GET" else None
    webhook.send(_hook(f"{receiver.url}/x", method=method, body=body))

    [request] = receiver.requests
    assert request.method == method
    assert request.headers["x-cio-delivery-id"] == "dlv-hook-1"
    if body is not None:
        assert request.body == b"plain words"
        assert request.headers["content-type"] == "text/plain; charset=utf-8"
    else:
        assert request.body == b""


def test_webhook_delivery_id_is_stable_across_retries(
    receiver: WebhookReceiver, webhook: WebhookChannel
) -> None:
    receiver.fail_next(1, 503)
    error = _send_error(webhook, _hook(receiver.url, delivery_id="dlv-r", body="{}"))
    assert error.transient
    webhook.send(_hook(receiver.url, delivery_id="dlv-r", body="{}"))

    assert [r.headers["x-cio-delivery-id"] for r in receiver.requests] == ["dlv-r", "dlv-r"]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "sent"),
        (201, "sent"),
        (204, "sent"),
        (408, "transient"),
        (429, "transient"),
        (500, "transient"),
        (503, "transient"),
        (301, "failed"),  # redirects are not followed
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (410, "failed"),
    ],
)
def test_webhook_status_mapping(
    receiver: WebhookReceiver, webhook: WebhookChannel, status: int, outcome: str
) -> None:
    receiver.status = status
    outgoing = _hook(receiver.url, body="{}")
    if outcome == "sent":
        assert webhook.send(outgoing).recipient == receiver.url
        return
    error = _send_error(webhook, outgoing)
    assert error.transient is (outcome == "transient")
    assert not error.undeliverable
    assert error.status == status


def test_webhook_to_a_private_address_is_refused_for_good(receiver: WebhookReceiver) -> None:
    channel = WebhookChannel(allow_private=False)
    try:
        error = _send_error(channel, _hook(f"{receiver.url}/x", body="{}"))
    finally:
        channel.close()

    assert (error.transient, error.undeliverable) == (False, False)
    assert "private or local address" in error.message
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/file",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "javascript:alert(1)",
        "/relative",
    ],
)
def test_webhook_non_http_schemes_are_refused(webhook: WebhookChannel, url: str) -> None:
    error = _send_error(webhook, _hook(url))

    assert (error.transient, error.undeliverable) == (False, False)
    assert "refused" in error.message


def test_webhook_bad_method_and_missing_url(webhook: WebhookChannel, receiver: WebhookReceiver) -> None:
    bad_method = _send_error(webhook, _hook(receiver.url, method="TRACE"))
    no_url = _send_error(webhook, _hook(""))

    assert not bad_method.transient
    assert not no_url.transient
    assert receiver.requests == []


def test_webhook_unreachable_is_transient(webhook: WebhookChannel) -> None:
    error = _send_error(webhook, _hook(f"{unused_port_url()}/x", body="{}"))

    assert error.transient

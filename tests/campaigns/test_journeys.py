"""Whole journeys driven by Customer.io's Python client: triggers, delays, branches and waits, with the
email arriving at a real SMTP server and time moved by the server's clock (never slept past)."""

from __future__ import annotations

from collections.abc import Callable

from customerio.track import CustomerIO

from tests.campaigns.conftest import advance, create, email_block, eventually, journeys, mail_to, no_mail_to
from tests.harness import Api
from tests.messaging.smtp_sink import SmtpSink


def test_event_triggered_journey_with_a_delay(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = create(
        api,
        {
            "name": "Onboarding",
            "trigger": {"type": "event", "event": "signed_up"},
            "steps": [
                email_block("welcome", "Welcome {{ event.plan }}"),
                {"id": "wait", "type": "delay", "duration": "1d"},
                email_block("tips", "Tips for {{ customer.first_name }}"),
            ],
        },
    )
    address = email("ada")
    cio.identify("ada", email=address, first_name="Ada")
    cio.track("ada", "signed_up", data={"plan": "pro"})
    [first] = mail_to(sink, address)
    assert first.message["Subject"] == "Welcome pro"
    no_mail_to(sink, address, expected=1, settle=0.5)
    advance(api, 86400 + 1)
    second = mail_to(sink, address, 2)[1]
    assert second.message["Subject"] == "Tips for Ada"
    [journey] = eventually(
        lambda: [j for j in journeys(api, campaign["id"]) if j["state"] == "completed"], what="completion"
    )
    outcomes = [(s["block"], s["outcome"]) for s in journey["steps"]]
    assert outcomes[0] == ("trigger", "entered")
    assert [b for b, _ in outcomes[1:]] == ["welcome", "wait", "wait", "tips"]
    assert all(s["delivery_id"] for s in journey["steps"] if s["block"] in ("welcome", "tips"))

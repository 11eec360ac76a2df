"""Customer.io's official Node client (customerio-node) drives a journey through its TrackClient and
triggers a broadcast through its APIClient with each recipient style; the mail arrives at a real SMTP
server."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from tests.campaigns.conftest import create, email_block
from tests.clients.test_node_clients import run_node
from tests.harness import Api
from tests.mail import eventually, mail_to
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import ok


def test_node_client_starts_a_journey(api: Api, sink: SmtpSink, email: Callable[[str], str]) -> None:
    create(
        api,
        {
            "name": "From node",
            "trigger": {"type": "event", "event": "node_signup"},
            "steps": [email_block("hi", "Hello {{ customer.first_name }} on {{ event.plan }}")],
        },
    )
    person = f"node-{secrets.token_hex(4)}"
    steps = run_node(api, "campaigns.js", "journey", NODE_PERSON=person, NODE_EVENT="node_signup")
    assert steps["identify"]["ok"], steps
    assert steps["track"]["ok"], steps
    assert mail_to(sink, f"{person}@node.example.com")[0].message["Subject"] == "Hello Node on node"


def test_node_client_triggers_broadcasts(api: Api, sink: SmtpSink) -> None:
    broadcast = create(
        api,
        {
            "name": "Node news",
            "trigger": {"type": "broadcast"},
            "steps": [email_block("news", "News {{ trigger.headline }}")],
        },
    )
    tag = secrets.token_hex(3)
    people = [f"nb{i}-{tag}" for i in range(4)]
    for index, person in enumerate(people):
        cohort = "yes" if index == 3 else "no"
        ok(
            api.track.put(
                f"/api/v1/customers/{person}", json={"email": f"{person}@example.com", "node_cohort": cohort}
            )
        )
    steps = run_node(
        api, "campaigns.js", "broadcast", NODE_BROADCAST=str(broadcast["id"]), NODE_PEOPLE=",".join(people)
    )
    for name in ("emails", "ids", "perUserData", "filter"):
        assert steps[name]["ok"], steps
        assert isinstance(steps[name]["value"]["id"], int)
    assert steps["unknownBroadcast"]["error"]["statusCode"] == 404
    expected = ["News by email", "News by id", "News personal", "News by filter"]
    for person, subject in zip(people, expected, strict=True):
        assert mail_to(sink, f"{person}@example.com")[0].message["Subject"] == subject
    eventually(
        lambda: len(ok(api.app.get(f"/v1/broadcasts/{broadcast['id']}/triggers"))["triggers"]) == 4,
        what="four triggers listed",
    )

"""The workflow blocks end to end: people updated and events sent from journeys (which trigger other
campaigns), the webhook action storing its answer, time windows in the person's time zone, splits,
holdouts, A/B tests that pick a winner, and batch updates of related objects."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from customerio.track import CustomerIO

from tests.campaigns.conftest import create, email_block, journeys
from tests.harness import Api
from tests.mail import advance, eventually, mail_to, no_mail_to
from tests.messaging.smtp_sink import SmtpSink


class _Endpoint(BaseHTTPRequestHandler):
    calls: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        type(self).calls.append({"headers": dict(self.headers), "body": body, "path": self.path})
        answer = json.dumps({"score": 42, "items": [{"id": f"item-{body['who']}"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Endpoint.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Endpoint.calls
    server.shutdown()
    server.server_close()


def test_people_updates_events_and_the_webhook_action(
    api: Api,
    cio: CustomerIO,
    sink: SmtpSink,
    email: Callable[[str], str],
    endpoint: tuple[str, list[dict[str, Any]]],
) -> None:
    url, calls = endpoint
    follow_up = create(
        api,
        {
            "name": "Follow-up",
            "trigger": {"type": "event", "event": "scored"},
            "steps": [email_block("result", "Scored {{ event.score }} as {{ customer.stage }}")],
        },
    )
    create(
        api,
        {
            "name": "Scoring",
            "trigger": {"type": "event", "event": "applied"},
            "steps": [
                {
                    "id": "score",
                    "type": "http_request",
                    "url": f"{url}/score",
                    "body": {"who": "{{ customer.id }}"},
                    "store": {"score": "score", "first": "items.0.id"},
                },
                {
                    "id": "note",
                    "type": "set_journey_attributes",
                    "attributes": {"label": "s{{ journey.score }}"},
                },
                {"id": "stage", "type": "update_person", "attributes": {"stage": "{{ journey.label }}"}},
                {
                    "id": "emit",
                    "type": "send_event",
                    "event": "scored",
                    "data": {"score": "{{ journey.score }}"},
                },
                email_block("done", "{{ journey.first }} {{ customer.stage }}"),
            ],
        },
    )
    applicant = email("applicant")
    cio.identify("applicant", email=applicant)
    cio.track("applicant", "applied")
    subjects = sorted(m.message["Subject"] for m in mail_to(sink, applicant, 2))
    assert subjects == ["Scored 42 as s42", "item-applicant s42"]
    [call] = calls
    assert call["body"] == {"who": "applicant"}
    assert call["headers"]["Idempotency-Key"].startswith("journey-")
    assert api.attributes("applicant").json()["customer"]["attributes"]["stage"] == "s42"
    assert len(journeys(api, follow_up["id"])) == 1


def test_time_window_waits_for_the_persons_local_hours(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    now = advance(api, 0)
    local = datetime.fromtimestamp(now, ZoneInfo("Asia/Tokyo"))
    opens = (local.hour + 2) % 24
    create(
        api,
        {
            "name": "Business hours",
            "trigger": {"type": "event", "event": "ping"},
            "steps": [
                {
                    "id": "hours",
                    "type": "time_window",
                    "start": f"{opens:02d}:00",
                    "end": f"{(opens + 1) % 24:02d}:00",
                },
                email_block("inside", "Inside hours"),
            ],
        },
    )
    tokyo = email("tokyo")
    cio.identify("tokyo", email=tokyo, timezone="Asia/Tokyo")
    cio.track("tokyo", "ping")
    no_mail_to(sink, tokyo, settle=0.5)
    advance(api, 2 * 3600 + 60 - local.minute * 60 - local.second)
    assert mail_to(sink, tokyo)[0].message["Subject"] == "Inside hours"


def test_splits_and_holdouts_route_people(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    create(
        api,
        {
            "name": "Routing",
            "trigger": {"type": "event", "event": "route"},
            "steps": [
                {"id": "hold", "type": "holdout", "percent": 100, "steps": [email_block("held", "Never")]},
                {
                    "id": "cohort",
                    "type": "random_split",
                    "cohorts": [
                        {"percent": 0, "steps": [email_block("none", "Nobody")]},
                        {"percent": 100, "steps": [email_block("all", "Everybody")]},
                    ],
                },
                {
                    "id": "by_plan",
                    "type": "split",
                    "branches": [
                        {
                            "condition": {"attribute": {"field": "plan", "operator": "eq", "value": "gold"}},
                            "steps": [email_block("gold", "Gold")],
                        },
                    ],
                    "else": [email_block("other", "Other")],
                },
            ],
        },
    )
    gold, plain = email("gold"), email("plain")
    cio.identify("gold", email=gold, plan="gold")
    cio.identify("plain", email=plain)
    cio.track("gold", "route")
    cio.track("plain", "route")
    assert sorted(m.message["Subject"] for m in mail_to(sink, gold, 2)) == ["Everybody", "Gold"]
    assert sorted(m.message["Subject"] for m in mail_to(sink, plain, 2)) == ["Everybody", "Other"]
    no_mail_to(sink, gold, expected=2, settle=0.3)


def test_ab_test_sends_the_winner_after_the_test(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    campaign = create(
        api,
        {
            "name": "Subject lines",
            "trigger": {"type": "event", "event": "go"},
            "reentry": "always",
            "steps": [
                {
                    "id": "test",
                    "type": "ab_test",
                    "variants": [
                        {"content": email_block("a", "Variant A")["content"]},
                        {"content": email_block("b", "Variant B")["content"]},
                    ],
                    "winner": {"metric": "opened", "after": "1h"},
                }
            ],
        },
    )
    testers = [email(f"tester{i}") for i in range(8)]
    for index, address in enumerate(testers):
        cio.identify(f"tester{index}", email=address)
        cio.track(f"tester{index}", "go")
    mails = [mail_to(sink, address)[0] for address in testers]
    subjects = {m.message["Subject"] for m in mails}
    assert subjects <= {"Variant A", "Variant B"}
    # Everyone who got the first tester's variant opens it: that variant wins once the test hour is over
    # (the other, if anyone drew it, has no opens).
    favourite = str(mails[0].message["Subject"])
    for mail in mails:
        if mail.message["Subject"] == favourite:
            part = mail.message.get_body(("html",))
            assert part is not None
            pixel = re.search(r'<img src="([^"]+/o/[^"]+)"', part.get_content())
            assert pixel is not None
            assert httpx.get(pixel.group(1).replace("&amp;", "&")).status_code == 200
    advance(api, 3601)
    latecomer = email("latecomer")
    cio.identify("latecomer", email=latecomer)
    cio.track("latecomer", "go")
    assert mail_to(sink, latecomer)[0].message["Subject"] == favourite
    actions = api.app.get(f"/v1/campaigns/{campaign['id']}/actions").json()["actions"]
    test_action = next(a for a in actions if a["type"] == "ab_test")
    assert test_action["state"]["winner"] == ("Variant A", "Variant B").index(favourite)
    eventually(lambda: len(journeys(api, campaign["id"], state="completed")) == 9, what="nine journeys")


def test_batch_update_of_related_objects(
    api: Api, cio: CustomerIO, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    create(
        api,
        {
            "name": "Touch accounts",
            "trigger": {"type": "event", "event": "contacted"},
            "steps": [
                {
                    "id": "touch",
                    "type": "update_related",
                    "object_type_id": "1",
                    "attributes": {"last_contact": "{{ customer.id }}"},
                }
            ],
        },
    )
    relation = {
        "action": "add_relationships",
        "relationships": [{"identifiers": {"object_type_id": "1", "object_id": "globex"}}],
    }
    cio.identify("liaison", email=email("liaison"), cio_relationships=relation)
    cio.track("liaison", "contacted")

    def touched() -> bool:
        response = api.app.get("/v1/objects/1/globex/attributes")
        return (
            response.status_code == 200
            and response.json()["object"]["attributes"].get("last_contact") == "liaison"
        )

    eventually(touched, what="the related object to be updated")

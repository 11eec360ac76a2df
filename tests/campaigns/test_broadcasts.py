"""API-triggered broadcasts (``POST /v1/campaigns/{id}/triggers``): every audience style reaching the
right people at a real SMTP server with ``{{trigger.*}}`` from data and per-user data, unknown and
repeated recipients, data files served over HTTP, and the requests that are refused."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from customerio.track import CustomerIO
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.campaigns.conftest import create, email_block
from tests.harness import Api, run_cli
from tests.mail import eventually, mail_to, no_mail_to
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import ok
from tidings.broadcasts import service as broadcasts
from tidings.campaigns import service as campaigns
from tidings.config import Settings
from tidings.db import Database
from tidings.models import BroadcastTrigger, Job, Journey, Person
from tidings.workspaces.service import create_workspace

Json = dict[str, Any]


class Files:
    """A tiny HTTP server for data files: path → (status, body)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, bytes]] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = files.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    running = Files()
    yield running
    running.close()


def broadcast(api: Api, *, audience: Json | None = None, activate: bool = True) -> Json:
    trigger: Json = {"type": "broadcast"}
    if audience is not None:
        trigger["audience"] = audience
    return create(
        api,
        {
            "name": "News",
            "trigger": trigger,
            "steps": [
                email_block(
                    "news",
                    "{{ trigger.headline | default: 'News' }} for {{ customer.first_name }}",
                    "<p>{{ trigger.extra | default: '-' }}</p>",
                )
            ],
        },
        activate=activate,
    )


def fire(api: Api, broadcast_id: int, body: Json) -> httpx.Response:
    return api.app.post(f"/v1/campaigns/{broadcast_id}/triggers", json=body)


def finished(api: Api, broadcast_id: int, trigger_id: int) -> Json:
    """Wait until the trigger is processed or failed; return it."""

    def done() -> Json | None:
        view: Json = ok(api.app.get(f"/v1/campaigns/{broadcast_id}/triggers/{trigger_id}"))
        return view if view["state"] in ("processed", "failed") else None

    found: Json = eventually(done, what=f"trigger {trigger_id} to finish")
    return found


def errors(api: Api, broadcast_id: int, trigger_id: int, **params: Any) -> Json:
    page: Json = ok(api.app.get(f"/v1/campaigns/{broadcast_id}/triggers/{trigger_id}/errors", params=params))
    return page


def detail(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["errors"][0]["detail"]
    return message


@pytest.fixture
def people(cio: CustomerIO, email: Callable[[str], str]) -> dict[str, str]:
    """Three people (ids ada, bob, cy), first names as their ids' capitalised forms; → id → address."""
    addresses = {}
    for person in ("ada", "bob", "cy"):
        addresses[person] = email(person)
        cio.identify(
            person,
            email=addresses[person],
            first_name=person.capitalize(),
            plan="pro" if person != "cy" else "free",
        )
    return addresses


def subject(sink: SmtpSink, address: str) -> str:
    [message] = mail_to(sink, address)
    return str(message.message["Subject"])


def test_default_audience_with_data(api: Api, people: dict[str, str], sink: SmtpSink) -> None:
    news = broadcast(api, audience={"attribute": {"field": "plan", "operator": "eq", "value": "pro"}})
    created = ok(fire(api, news["id"], {"data": {"headline": "Launch"}}))
    assert set(created) == {"id"}
    assert isinstance(created["id"], int)
    assert subject(sink, people["ada"]) == "Launch for Ada"
    assert subject(sink, people["bob"]) == "Launch for Bob"
    no_mail_to(sink, people["cy"], settle=0.5)
    view = finished(api, news["id"], created["id"])
    assert view["id"] == created["id"]
    assert view["broadcast_id"] == news["id"]
    assert view["state"] == "processed"
    assert view["recipients"] == 2
    assert view["errors"] == 0
    assert view["created_at"] <= view["processed_at"]
    listed = ok(api.app.get(f"/v1/broadcasts/{news['id']}/triggers"))["triggers"]
    assert [t["id"] for t in listed] == [created["id"]]
    assert ok(api.app.get(f"/v1/campaigns/{news['id']}/triggers"))["triggers"] == listed


def test_empty_body_reaches_everyone_without_an_audience(
    api: Api, people: dict[str, str], sink: SmtpSink
) -> None:
    news = broadcast(api)
    ok(fire(api, news["id"], {}))
    for name, address in people.items():
        assert subject(sink, address) == f"News for {name.capitalize()}"


def test_recipients_filter(api: Api, people: dict[str, str], sink: SmtpSink) -> None:
    news = broadcast(api, audience={"attribute": {"field": "plan", "operator": "eq", "value": "pro"}})
    body = {
        "recipients": {"attribute": {"field": "plan", "operator": "eq", "value": "free"}},
        "data": {"headline": "Upgrade"},
    }
    trigger_id = ok(fire(api, news["id"], body))["id"]
    assert subject(sink, people["cy"]) == "Upgrade for Cy"
    assert finished(api, news["id"], trigger_id)["recipients"] == 1
    no_mail_to(sink, people["ada"], settle=0.3)


def test_emails_and_duplicates(api: Api, people: dict[str, str], sink: SmtpSink) -> None:
    news = broadcast(api)
    ada = people["ada"]
    first = ok(
        fire(api, news["id"], {"emails": [ada, ada.upper(), people["bob"]], "data": {"headline": "One"}})
    )
    assert finished(api, news["id"], first["id"])["recipients"] == 2
    assert subject(sink, ada) == "One for Ada"
    assert subject(sink, people["bob"]) == "One for Bob"
    no_mail_to(sink, ada, expected=1, settle=0.5)
    no_mail_to(sink, people["cy"], settle=0)
    second = ok(
        fire(
            api,
            news["id"],
            {"emails": [ada, ada], "email_add_duplicates": True, "data": {"headline": "Two"}},
        )
    )
    assert finished(api, news["id"], second["id"])["recipients"] == 2
    received = mail_to(sink, ada, 3)
    assert [m.message["Subject"] for m in received[1:]] == ["Two for Ada", "Two for Ada"]


def test_ids_with_missing_people(api: Api, people: dict[str, str], sink: SmtpSink) -> None:
    news = broadcast(api)
    failed = ok(fire(api, news["id"], {"ids": ["ada", "nobody", 42]}))
    view = finished(api, news["id"], failed["id"])
    assert view["state"] == "failed"
    assert view["recipients"] == 0
    assert view["errors"] == 2
    page = errors(api, news["id"], failed["id"])
    assert page["errors"] == ["no person with id 'nobody'", "no person with id '42'"]
    assert page["next"] == 0
    first = errors(api, news["id"], failed["id"], limit=1)
    assert first["errors"] == ["no person with id 'nobody'"]
    assert first["next"]
    rest = errors(api, news["id"], failed["id"], limit=1, start=first["next"])
    assert rest["errors"] == ["no person with id '42'"]
    assert rest["next"] == 0
    no_mail_to(sink, people["ada"], settle=0.5)

    ignored = ok(
        fire(
            api,
            news["id"],
            {"ids": ["ada", "nobody"], "id_ignore_missing": True, "data": {"headline": "Hey"}},
        )
    )
    view = finished(api, news["id"], ignored["id"])
    assert view["state"] == "processed"
    assert view["recipients"] == 1
    assert view["errors"] == 0
    assert errors(api, news["id"], ignored["id"]) == {"errors": [], "details": [], "next": 0}
    assert subject(sink, people["ada"]) == "Hey for Ada"


def test_emails_missing_fail_unless_ignored(api: Api, people: dict[str, str], sink: SmtpSink) -> None:
    news = broadcast(api)
    stranger = "stranger@example.com"
    failed = ok(fire(api, news["id"], {"emails": [people["bob"], stranger]}))
    assert finished(api, news["id"], failed["id"])["state"] == "failed"
    assert errors(api, news["id"], failed["id"])["errors"] == [f"no person with email '{stranger}'"]
    ignored = ok(fire(api, news["id"], {"emails": [people["bob"], stranger], "email_ignore_missing": True}))
    assert finished(api, news["id"], ignored["id"])["recipients"] == 1
    mail_to(sink, people["bob"])


def test_per_user_data(api: Api, people: dict[str, str], sink: SmtpSink) -> None:
    news = broadcast(api)
    body = {
        "per_user_data": [
            {"id": "ada", "data": {"extra": "for-ada", "headline": "Mine"}},
            {"email": people["bob"], "data": {"extra": "for-bob"}},
        ],
        "data": {"headline": "Shared", "extra": "shared"},
    }
    trigger_id = ok(fire(api, news["id"], body))["id"]
    [ada] = mail_to(sink, people["ada"])
    [bob] = mail_to(sink, people["bob"])
    assert ada.message["Subject"] == "Mine for Ada"
    assert "for-ada" in ada.raw.decode()
    assert bob.message["Subject"] == "Shared for Bob"
    assert "for-bob" in bob.raw.decode()
    assert finished(api, news["id"], trigger_id)["recipients"] == 2
    no_mail_to(sink, people["cy"], settle=0.3)


def test_data_file(api: Api, people: dict[str, str], sink: SmtpSink, files: Files) -> None:
    news = broadcast(api)
    lines = [
        {"id": "ada", "data": {"headline": "Filed"}},
        {"email": people["cy"], "data": {"headline": "Also filed"}},
        {"id": "ghost", "data": {}},
    ]
    path = f"/{news['id']}-{api.creds.site_id}.ndjson"
    files.files[path] = (200, b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    body = {"data_file_url": files.url(path), "id_ignore_missing": True, "data": {"extra": "x"}}
    trigger_id = ok(fire(api, news["id"], body))["id"]
    assert subject(sink, people["ada"]) == "Filed for Ada"
    assert subject(sink, people["cy"]) == "Also filed for Cy"
    view = finished(api, news["id"], trigger_id)
    assert view["state"] == "processed"
    assert view["recipients"] == 2
    no_mail_to(sink, people["bob"], settle=0.3)

    # Without the flag the unknown id fails the whole file; a bad line is reported too.
    files.files[path] = (200, b'{"id": "bob"}\n{"id": "ghost"}\nnot json\n')
    failed = ok(fire(api, news["id"], {"data_file_url": files.url(path)}))
    assert finished(api, news["id"], failed["id"])["state"] == "failed"
    assert errors(api, news["id"], failed["id"])["errors"] == [
        "no person with id 'ghost'",
        "line 3 is not valid JSON",
    ]
    no_mail_to(sink, people["bob"], settle=0.3)


def test_data_file_download_failure(api: Api, people: dict[str, str], files: Files) -> None:
    news = broadcast(api)
    files.files["/forbidden"] = (403, b"no")
    trigger_id = ok(fire(api, news["id"], {"data_file_url": files.url("/forbidden")}))["id"]
    view = finished(api, news["id"], trigger_id)
    message = "failed to download data file, server responded with code 403 Forbidden"
    assert view["state"] == "failed"
    assert view["failure"] == message
    assert errors(api, news["id"], trigger_id)["errors"] == [message]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"recipients": {}}, "empty recipients filter is not valid"),
        ({"emails": ["a@example.com"], "ids": ["1"]}, "one way only"),
        ({"ids": ["1"], "email_ignore_missing": True}, "email_ignore_missing applies only"),
        ({"email_add_duplicates": True}, "email_add_duplicates applies only"),
        ({"recipients": {"segment": {"id": 1}}, "id_ignore_missing": True}, "id_ignore_missing"),
        ({"data": [1]}, "data must be an object"),
        ({"emails": []}, "emails must be a non-empty list"),
        ({"ids": [None]}, "ids[0]"),
        ({"per_user_data": [{"data": {}}]}, "exactly one of id or email"),
        ({"per_user_data": [{"id": "a", "data": "x"}]}, "per_user_data[0].data must be an object"),
        ({"data_file_url": "ftp://example.com/x"}, "data_file_url"),
        ({"recipients": {"nonsense": 1}}, "recipients"),
        ({"recipients": {"segment": {"id": 999999}}}, "segment 999999 does not exist"),
        ({"audience": {}}, "audience is not a field"),
        ({"ids": ["a"], "id_ignore_missing": "yes"}, "must be true or false"),
    ],
)
def test_bad_bodies_are_refused(api: Api, body: Json, words: str) -> None:
    news = broadcast(api)
    assert words in detail(fire(api, news["id"], body))
    assert ok(api.app.get(f"/v1/broadcasts/{news['id']}/triggers"))["triggers"] == []


def test_not_a_broadcast(api: Api) -> None:
    campaign = create(
        api, {"name": "Ev", "trigger": {"type": "event", "event": "x"}, "steps": [email_block("a", "A")]}
    )
    assert "broadcast" in detail(fire(api, campaign["id"], {}), 404)
    assert "not found" in detail(fire(api, 999999, {}), 404)
    assert detail(api.app.get(f"/v1/campaigns/{campaign['id']}/triggers/1"), 404)
    assert detail(api.app.get(f"/v1/broadcasts/{campaign['id']}"), 404)
    draft = broadcast(api, activate=False)
    assert "only an active broadcast" in detail(fire(api, draft["id"], {}), 409)
    news = broadcast(api)
    assert detail(api.app.get(f"/v1/campaigns/{news['id']}/triggers/999999"), 404)


def test_broadcast_read_endpoints(api: Api) -> None:
    news = broadcast(api)
    create(api, {"name": "Ev", "trigger": {"type": "event", "event": "x"}, "steps": [email_block("a", "A")]})
    listed = ok(api.app.get("/v1/broadcasts"))["broadcasts"]
    assert [b["id"] for b in listed] == [news["id"]]
    one = ok(api.app.get(f"/v1/broadcasts/{news['id']}"))["broadcast"]
    assert one["type"] == "triggered_broadcast"
    assert one["active"] is True
    [action] = ok(api.app.get(f"/v1/broadcasts/{news['id']}/actions"))["actions"]
    assert action["broadcast_id"] == news["id"]
    assert action["type"] == "email"
    single = ok(api.app.get(f"/v1/broadcasts/{news['id']}/actions/{action['id']}"))["action"]
    assert single["id"] == action["id"]
    assert detail(api.app.get(f"/v1/broadcasts/{news['id']}/actions/999999"), 404)


# -- in-process: chunks and crash recovery --------------------------------------------------------------

NOW = 1_800_000_000


class Crash(Exception):
    pass


def test_expansion_goes_in_chunks_and_resumes_after_a_crash(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broadcasts, "CHUNK", 2)
    db = Database(database_url)
    settings = Settings()
    try:
        workspace_id: int = db.run(lambda s: create_workspace(s, "b", now=NOW)).workspace_id

        def setup(session: Session) -> int:
            for index in range(5):
                session.add(
                    Person(
                        workspace_id=workspace_id,
                        cio_id=f"c{index}",
                        customer_id=f"p{index}",
                        email=f"p{index}@example.com",
                        email_key=f"p{index}@example.com",
                        created_at=NOW,
                        updated_at=NOW,
                    )
                )
            document = {"name": "B", "trigger": {"type": "broadcast"}, "steps": [email_block("a", "A")]}
            broadcast_id: int = campaigns.create_campaign(session, workspace_id, document, now=NOW)["id"]
            campaigns.change_state(session, workspace_id, broadcast_id, "activate", now=NOW)
            return broadcast_id

        broadcast_id = db.run(setup)
        body = {"ids": ["p0", "p1", "p2", "p0", "p3", "p4"], "data": {"n": 1}}
        trigger_id = db.run(lambda s: broadcasts.trigger(s, workspace_id, broadcast_id, body, NOW))["id"]

        def next_job() -> Json | None:
            with db.session() as session:
                job = session.scalars(select(Job).where(Job.kind == broadcasts.EXPAND_JOB)).first()
                if job is None:
                    return None
                payload = dict(job.payload)
                session.delete(job)
                return payload

        def crashing(payload: Json) -> None:
            with db.session() as session:
                broadcasts.expand(session, payload, NOW, settings)
                raise Crash

        runs = 0
        while (payload := next_job()) is not None:
            runs += 1
            # Every run first dies after doing its work: nothing of it may stay.
            with pytest.raises(Crash):
                crashing(payload)
            with db.session() as session:
                broadcasts.expand(session, payload, NOW, settings)
        # check: 3 chunks of the 5 distinct ids, then send: 3 chunks and the run that finds none left.
        assert runs == 7
        with db.read_session() as session:
            row = session.get(BroadcastTrigger, trigger_id)
            assert row is not None
            assert (row.state, row.recipients, row.errors) == ("processed", 5, 0)
            found = session.execute(
                select(Journey.person_id, Journey.trigger, Journey.state).where(
                    Journey.broadcast_trigger_id == trigger_id
                )
            ).all()
            assert len(found) == 5
            assert len({person for person, _, _ in found}) == 5
            assert all(trigger == {"data": {"n": 1}} and state == "pending" for _, trigger, state in found)
    finally:
        db.close()


def test_broadcast_actions_change_content_and_translations(
    api: Api, people: dict[str, str], sink: SmtpSink
) -> None:
    news = broadcast(api)
    [action] = ok(api.app.get(f"/v1/broadcasts/{news['id']}/actions"))["actions"]
    changed = ok(
        api.app.put(
            f"/v1/broadcasts/{news['id']}/actions/{action['id']}",
            json={"subject": "Edited {{ trigger.headline }}"},
        )
    )["action"]
    assert changed["subject"] == "Edited {{ trigger.headline }}"
    french = ok(
        api.app.put(
            f"/v1/broadcasts/{news['id']}/actions/{action['id']}/language/fr", json={"subject": "Nouvelles"}
        )
    )["action"]
    assert french["subject"] == "Nouvelles"
    assert french["language"] == "fr"
    assert (
        ok(api.app.get(f"/v1/broadcasts/{news['id']}/actions/{action['id']}/language/fr"))["action"][
            "subject"
        ]
        == "Nouvelles"
    )
    assert api.app.get(f"/v1/broadcasts/{news['id']}/actions/{action['id']}/language/de").status_code == 404
    bad = api.app.put(f"/v1/broadcasts/{news['id']}/actions/{action['id']}", json={"subject": "{% if %}"})
    assert bad.status_code == 400
    ok(fire(api, news["id"], {"ids": ["ada"], "data": {"headline": "now"}}))
    assert subject(sink, people["ada"]) == "Edited now"


def test_trigger_rate_limit_when_a_workspace_sets_one(api: Api, people: dict[str, str]) -> None:
    news = broadcast(api)
    run_cli(
        api.server.database_url,
        "workspace",
        "configure",
        api.creds.site_id,
        "--set",
        "rate_limits.broadcast_triggers=1",
    )
    ok(fire(api, news["id"], {"ids": ["ada"]}))
    limited = fire(api, news["id"], {"ids": ["bob"]})
    assert limited.status_code == 429
    assert "per 10 seconds" in limited.json()["errors"][0]["detail"]
    assert int(limited.headers["Retry-After"]) >= 1

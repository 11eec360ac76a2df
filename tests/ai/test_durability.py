"""Two things a shared server cannot show: an account whose credits really run out (a server of its own,
starting with 3 credits), and a worker killed while a model call is in flight (the API server runs
without a worker; ``tidings worker`` processes are started and SIGKILLed around the call)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.ai.conftest import KEY, Json
from tests.ai.standins import Hang, StandIn
from tests.campaigns.conftest import journeys
from tests.harness import TIDINGS, Api, Server, launch_server, stop_server
from tests.mail import eventually, ok

MODELS = [
    {"id": "haiku", "provider": "anthropic", "model": "claude-haiku-4-5", "class": "quick", "credits": 2}
]
BLOCK: Json = {
    "id": "tag",
    "type": "llm",
    "model": "haiku",
    "prompt": "Tag {{ customer.id }}",
    "output_fields": [
        {"name": "tag", "type": "text"},
        {"name": "tier", "type": "single_select", "options": ["gold", "plain"], "fallback": "plain"},
    ],
}


def _environment(llm: StandIn) -> dict[str, str]:
    return {
        "TIDINGS_AI_MODELS": json.dumps(MODELS),
        "TIDINGS_ANTHROPIC_API_KEY": KEY,
        "TIDINGS_ANTHROPIC_BASE_URL": llm.anthropic_base_url,
        "TIDINGS_AI_INITIAL_CREDITS": "3",
        "TIDINGS_WORKER_POLL_SECONDS": "0.05",
    }


def _campaign(api: Api, event: str) -> int:
    campaign = ok(
        api.app.post(
            "/v1/campaigns",
            json={"name": event, "trigger": {"type": "event", "event": event}, "steps": [BLOCK]},
        )
    )["campaign"]
    ok(api.app.post(f"/v1/campaigns/{campaign['id']}/activate"))
    campaign_id: int = campaign["id"]
    return campaign_id


def _enter(api: Api, event: str) -> str:
    person = f"p-{uuid.uuid4().hex[:8]}"
    assert (
        api.track.put(f"/api/v1/customers/{person}", json={"email": f"{person}@example.com"}).status_code
        == 200
    )
    assert api.track.post(f"/api/v1/customers/{person}/events", json={"name": event}).status_code == 200
    return person


def _journey_of(api: Api, campaign_id: int, person: str, state: str) -> Json:
    rows: list[Any] = api.server.sql("SELECT id FROM people WHERE customer_id = :id", id=person)
    person_id = rows[0][0]

    def found() -> Json | None:
        return next(
            (j for j in journeys(api, campaign_id) if j["person_id"] == person_id and j["state"] == state),
            None,
        )

    result: Json = eventually(found, what=f"a {state} journey for {person}", deadline=30)
    return result


def _balance(api: Api) -> float:
    return float(ok(api.app.get("/v1/ai/credits"))["credits"]["balance"])


def test_an_empty_balance_fails_the_action_until_credits_are_added(database_url: str, tmp_path: Path) -> None:
    with StandIn(api_key=KEY) as llm:
        llm.answer = lambda request: {"tag": "vip", "tier": "gold"}
        server = launch_server(database_url, "credits", tmp_path, (), _environment(llm))
        api = Api(server, server.new_workspace())
        try:
            assert _balance(api) == 3
            campaign = _campaign(api, "tag-me")
            first = _journey_of(api, campaign, _enter(api, "tag-me"), "completed")
            assert first["attributes"] == {"tag": "vip", "tier": "gold"}
            assert _balance(api) == 1

            # One credit left, the model costs two: every attempt finds the balance empty.
            second = _journey_of(api, campaign, _enter(api, "tag-me"), "completed")
            activity = next(s for s in second["steps"] if s["block"] == "tag")["detail"]
            assert activity["failure"].startswith("no_credits")
            assert activity["attempts"] == 3
            assert second["attributes"] == {"tier": "plain"}
            assert _balance(api) == 1
            assert len(llm.requests) == 1
            refused = api.app.post(
                "/v1/ai/llm/preview", json={"prompt": "x", "output_fields": [{"name": "a", "type": "text"}]}
            )
            assert refused.status_code == 402

            ok(api.app.post("/v1/ai/credits", json={"credits": 10, "note": "top-up"}))
            third = _journey_of(api, campaign, _enter(api, "tag-me"), "completed")
            assert third["attributes"] == {"tag": "vip", "tier": "gold"}
            assert _balance(api) == 9
        finally:
            api.close()
            stop_server(server)


def _worker(server: Server, llm: StandIn, log: Path, offset: int) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        **_environment(llm),
        "TIDINGS_DATABASE_URL": server.database_url,
        "TIDINGS_WORKER_LEASE_SECONDS": "30",
        "TIDINGS_CLOCK_OFFSET_SECONDS": str(offset),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(TIDINGS), "worker"], env=environment, stdout=out, stderr=subprocess.STDOUT
        )


def test_a_worker_killed_mid_call_costs_one_attempt_not_the_action(database_url: str, tmp_path: Path) -> None:
    with StandIn(api_key=KEY) as llm:
        server = launch_server(database_url, "crash", tmp_path, ("--no-worker",), _environment(llm))
        api = Api(server, server.new_workspace())
        first = second = None
        try:
            campaign = _campaign(api, "crash-me")
            llm.script(Hang(60))  # the first call never comes back while its worker lives
            llm.answer = lambda request: {"tag": "after-crash", "tier": "gold"}
            person = _enter(api, "crash-me")
            first = _worker(server, llm, tmp_path / "worker-1.log", 0)
            eventually(lambda: llm.in_flight == 1, what="the model call in flight", deadline=30)
            calling = _journey_of(api, campaign, person, "calling")
            assert calling["block"] == "tag"
            first.kill()
            first.wait()
            # A worker whose clock is past the lease takes the journey over and makes the call again.
            second = _worker(server, llm, tmp_path / "worker-2.log", 45)
            done = _journey_of(api, campaign, person, "completed")
            activity = next(s for s in done["steps"] if s["block"] == "tag" and s["detail"])["detail"]
            assert activity["attempts"] == 2
            assert activity["fields"] == {"tag": "after-crash", "tier": "gold"}
            assert done["attributes"] == {"tag": "after-crash", "tier": "gold"}
            assert len(llm.requests) == 2
            time.sleep(0.3)
            assert len(journeys(api, campaign)) == 1
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
            api.close()
            stop_server(server)

"""The assistant and the AI segment builder, driven by a stand-in model server that answers in each
provider's wire format with scripted tool calls: the loop (tool calls made, their results fed back, the
final answer), the governance (live data, the AI toggle), the audit trail, credits, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ai.conftest import KEY, MODELS
from tests.ai.standins import CallTools, Reply, Say, StandIn
from tests.conftest import BACKENDS, serve, workspace_api
from tests.harness import TIDINGS, Api, Server
from tests.mail import ok

Json = dict[str, Any]


@pytest.fixture(scope="module")
def llm() -> Iterator[StandIn]:
    with StandIn(api_key=KEY) as running:
        yield running


@pytest.fixture(scope="module", params=BACKENDS)
def assistant_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, llm: StandIn
) -> Iterator[Server]:
    yield from serve(
        request.param,
        tmp_path_factory.mktemp(f"assistant-{request.param}"),
        TIDINGS_AI_MODELS=json.dumps(MODELS),
        TIDINGS_ANTHROPIC_API_KEY=KEY,
        TIDINGS_ANTHROPIC_BASE_URL=llm.anthropic_base_url,
        TIDINGS_GOOGLE_API_KEY=KEY,
        TIDINGS_GOOGLE_BASE_URL=llm.google_base_url,
        TIDINGS_OPENAI_API_KEY=KEY,
        TIDINGS_OPENAI_BASE_URL=llm.openai_base_url,
        TIDINGS_AI_INITIAL_CREDITS="1000",
    )


@pytest.fixture
def assist(assistant_server: Server, llm: StandIn) -> Iterator[Api]:
    llm.clear()
    llm.answer = None
    yield from workspace_api(assistant_server)


def _ask(api: Api, instruction: str, *, track: bool = True, **extra: Any) -> Json:
    headers = (
        {"X-Tidings-Site-Id": api.creds.site_id, "X-Tidings-Track-Key": api.creds.track_api_key}
        if track
        else {}
    )
    return ok(api.app.post("/v1/assistant", json={"instruction": instruction, **extra}, headers=headers))


def _balance(api: Api) -> float:
    return float(ok(api.app.get("/v1/ai/credits"))["credits"]["balance"])


@pytest.mark.parametrize("model", ["claude-haiku", "gemini-flash", "local"])
def test_the_loop_calls_tools_feeds_results_back_and_answers(assist: Api, llm: StandIn, model: str) -> None:
    ok(assist.app.post("/v1/segments", json={"segment": {"name": "VIP buyers"}}))
    ok(assist.app.put("/v1/ai/business_context", json={"company": "Acme Tea"}))
    ok(assist.app.put("/v1/ai/settings", json={"compliance_prompt": "Be formal."}))
    try:
        llm.script(CallTools([("list_segments", {"limit": 10})]), Say("You have one segment: VIP buyers."))
        before = _balance(assist)
        reply = _ask(assist, "Which segments do I have?", model=model)
    finally:
        ok(assist.app.put("/v1/ai/settings", json={"compliance_prompt": ""}))
    assert reply["answer"] == "You have one segment: VIP buyers."
    assert [(c["tool"], c["ok"]) for c in reply["calls"]] == [("list_segments", True)]
    assert reply["calls"][0]["result"]["items"][0]["name"] == "VIP buyers"
    assert reply["steps"] == 2
    cost = float(next(m["credits"] for m in MODELS if m["id"] == model))  # type: ignore[arg-type]
    assert reply["credits_used"] == 2 * cost
    assert _balance(assist) == before - 2 * cost
    first, second = llm.requests
    assert "list_segments" in first.tools
    assert "suppress_person" in first.tools
    assert "Be formal." in first.system_text
    assert "Acme Tea" in first.system_text
    assert first.prompt_text == "Which segments do I have?"
    assert any("VIP buyers" in content for _, content in second.tool_results)
    entries = ok(assist.app.get("/v1/audit_log", params={"action": "agent.assistant"}))["entries"]
    mine = [e for e in entries if e["workspace_id"] == assist.creds.workspace_id]
    assert [e["target"] for e in mine] == ["list_segments"]
    ledger = ok(assist.app.get("/v1/ai/credits/ledger", params={"limit": 2}))["entries"]
    assert {e["kind"] for e in ledger} == {"assistant"}


def test_live_data_needs_the_setting_and_refusals_reach_the_model(assist: Api, llm: StandIn) -> None:
    person = f"p-{uuid.uuid4().hex[:8]}"
    assert (
        assist.track.put(f"/api/v1/customers/{person}", json={"email": f"{person}@example.com"}).status_code
        == 200
    )
    llm.script(CallTools([("suppress_person", {"identifier": person})]), Say("I was not allowed to."))
    refused = _ask(assist, f"Suppress {person}", model="claude-haiku")
    assert refused["calls"][0]["ok"] is False
    assert "allow_agent_edit_live_data" in refused["calls"][0]["error"]
    assert any("refused" in content for _, content in llm.requests[1].tool_results)
    assert assist.attributes(person).status_code == 200

    # A dry run is always allowed: it shows the change.
    llm.script(CallTools([("suppress_person", {"identifier": person, "dry_run": True})]), Say("Here it is."))
    shown = _ask(assist, f"Show what suppressing {person} would do", model="claude-haiku")
    assert shown["calls"][0]["ok"] is True
    assert shown["calls"][0]["dry_run"] is True
    assert assist.attributes(person).status_code == 200

    ok(assist.app.put("/v1/ai/settings", json={"allow_agent_edit_live_data": True}))
    try:
        llm.script(CallTools([("suppress_person", {"identifier": person})]), Say("Done."))
        done = _ask(assist, f"Suppress {person}", model="claude-haiku")
    finally:
        ok(assist.app.put("/v1/ai/settings", json={"allow_agent_edit_live_data": False}))
    assert done["calls"][0]["ok"] is True
    assert done["answer"] == "Done."
    assert assist.attributes(person).status_code == 404


def test_the_ai_toggle_refuses_the_assistant_and_the_segment_builder(assist: Api, llm: StandIn) -> None:
    ok(assist.app.put("/v1/ai/settings", json={"ai_enabled": False}))
    try:
        asked = assist.app.post("/v1/assistant", json={"instruction": "Hi"})
        built = assist.app.post("/v1/ai/segment_builder", json={"description": "pro users"})
    finally:
        ok(assist.app.put("/v1/ai/settings", json={"ai_enabled": True}))
    assert asked.status_code == 403
    assert built.status_code == 403
    assert "ai_enabled" in asked.json()["errors"][0]["detail"]
    assert llm.requests == []


def test_the_segment_builder_returns_only_checked_conditions(assist: Api, llm: StandIn) -> None:
    assert assist.track.put("/api/v1/customers/seg-1", json={"plan": "pro", "seats": 3}).status_code == 200
    llm.script(
        Reply({"conditions_json": '{"attribute": {"field": "plan", "operator": "no"}}', "explanation": "x"}),
        Reply({
            "conditions_json": '{"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}',
            "explanation": "People on the pro plan",
        }),
    )  # fmt: skip
    built = ok(
        assist.app.post("/v1/ai/segment_builder", json={"description": "people on pro", "model": "local"})
    )
    assert built["conditions"] == {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}
    assert built["explanation"] == "People on the pro plan"
    assert built["attempts"] == 2
    assert built["credits_used"] == 1.0
    first, second = llm.requests
    assert '"plan"' in first.prompt_text  # the workspace's attributes went along
    assert "refused" in second.prompt_text
    assert "operator" in second.prompt_text
    segment = ok(
        assist.app.post("/v1/segments", json={"segment": {"name": "Pro", "conditions": built["conditions"]}})
    )
    assert segment["segment"]["name"] == "Pro"


def test_tidings_ask_prints_the_answer(assist: Api, llm: StandIn) -> None:
    llm.script(CallTools([("list_campaigns", {})]), Say("No campaigns yet."))
    env = {
        **os.environ,
        "TIDINGS_MCP_URL": assist.server.base_url,
        "TIDINGS_MCP_APP_KEY": assist.creds.app_api_key,
    }
    done = subprocess.run(
        [str(TIDINGS), "ask", "What campaigns run?", "--model", "claude-haiku", "--json"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    reply = json.loads(done.stdout)
    assert reply["answer"] == "No campaigns yet."
    assert reply["calls"][0]["tool"] == "list_campaigns"

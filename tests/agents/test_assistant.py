"""The assistant and the AI segment builder, driven by a stand-in model server that answers in each
provider's wire format with scripted tool calls: the loop (tool calls made, their results fed back, the
final answer), the governance (live data, the AI toggle), the audit trail, credits, conversations (kept per
key, replayed to the model, capped), streaming over Server-Sent Events, and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ai.conftest import KEY, MODELS
from tests.ai.standins import GOOGLE_SIGNATURE, CallTools, Fail, Reply, Say, StandIn
from tests.conftest import BACKENDS, serve, workspace_api
from tests.harness import TIDINGS, Api, Server, run_cli
from tests.mail import ok
from tidings.agents.conversations import MAX_MESSAGES, keep_recent

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


def _tidings_ask(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIDINGS_MCP_URL": api.server.base_url, "TIDINGS_MCP_APP_KEY": api.creds.app_api_key}
    return subprocess.run(
        [str(TIDINGS), "ask", *args], env=env, capture_output=True, text=True, check=True, timeout=120
    )


def test_tidings_ask_prints_the_answer(assist: Api, llm: StandIn) -> None:
    llm.script(CallTools([("list_campaigns", {})]), Say("No campaigns yet."))
    done = _tidings_ask(assist, "What campaigns run?", "--model", "claude-haiku", "--json")
    reply = json.loads(done.stdout)
    assert reply["answer"] == "No campaigns yet."
    assert reply["calls"][0]["tool"] == "list_campaigns"


def test_tidings_ask_prints_the_conversation_and_continues_it(assist: Api, llm: StandIn) -> None:
    llm.script(Say("You have no campaigns."))
    first = _tidings_ask(assist, "Do I have campaigns?", "--model", "local")
    assert first.stdout.strip() == "You have no campaigns."
    printed = re.search(r"conversation (\S+)", first.stderr)
    assert printed is not None, first.stderr
    llm.clear()
    llm.script(Say("Still none."))
    second = _tidings_ask(assist, "And now?", "--conversation", printed.group(1), "--json")
    reply = json.loads(second.stdout)
    assert reply["conversation_id"] == printed.group(1)
    assert reply["answer"] == "Still none."
    (request,) = llm.requests
    assert request.prompt_text == "Do I have campaigns?\nAnd now?"
    assert request.model_turns == [("You have no campaigns.", [])]


# -- conversations ---------------------------------------------------------------------------------------


def _other_key(api: Api) -> httpx.Client:
    """A second App API key of the same workspace, with every permission."""
    created = json.loads(
        run_cli(
            api.server.database_url, "keys", "create", str(api.creds.workspace_id), "--kind", "app",
            "--permissions", "read,read_pii,write,write_live", "--json",
        ).stdout
    )  # fmt: skip
    return httpx.Client(
        base_url=api.server.base_url, headers={"Authorization": f"Bearer {created['secret']}"}, timeout=30
    )


def _not_found(response: httpx.Response, conversation_id: str) -> None:
    assert response.status_code == 404, response.text
    detail = f"conversation {conversation_id} not found"
    assert response.json() == {"errors": [{"detail": detail, "status": "404", "code": "not_found"}]}


@pytest.mark.parametrize("model", ["claude-haiku", "gemini-flash", "local"])
def test_a_conversation_replays_its_instructions_calls_results_and_answers(
    assist: Api, llm: StandIn, model: str
) -> None:
    ok(assist.app.post("/v1/segments", json={"segment": {"name": "VIP buyers"}}))
    llm.script(CallTools([("list_segments", {"limit": 10})]), Say("You have one segment: VIP buyers."))
    first = _ask(assist, "Which segments do I have?", model=model)
    conversation = first["conversation_id"]
    llm.clear()
    llm.script(Say("It is called VIP buyers."))
    # No model named: the conversation's model answers again.
    second = _ask(assist, "What was its name again?", conversation_id=conversation)
    assert second["conversation_id"] == conversation
    assert second["model"] == model
    assert second["answer"] == "It is called VIP buyers."
    (request,) = llm.requests
    assert request.prompt_text == "Which segments do I have?\nWhat was its name again?"
    assert request.model_turns == [("", ["list_segments"]), ("You have one segment: VIP buyers.", [])]
    assert any("VIP buyers" in content for _, content in request.tool_results)
    if model == "gemini-flash":
        # Gemini's thought signature was stored with its call, and went back with it.
        assert GOOGLE_SIGNATURE in json.dumps(request.body)

    stored = ok(assist.app.get(f"/v1/assistant/conversations/{conversation}"))["conversation"]
    assert stored["title"] == "Which segments do I have?"
    assert stored["model"] == model
    messages = stored["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    (call,) = messages[1]["tool_calls"]
    (result,) = messages[2]["results"]
    assert (call["name"], call["arguments"]) == ("list_segments", {"limit": 10})
    assert (result["call_id"], result["is_error"]) == (call["id"], False)
    assert "VIP buyers" in result["content"]
    assert messages[5]["text"] == "It is called VIP buyers."


def test_a_request_stopped_at_max_steps_is_kept_in_its_conversation(assist: Api, llm: StandIn) -> None:
    llm.script(CallTools([("list_segments", {})]))
    stopped = _ask(assist, "List everything", model="claude-haiku", max_steps=1)
    assert stopped["stopped"] == "max_steps"
    llm.clear()
    llm.script(Say("Carrying on."))
    _ask(assist, "Carry on", conversation_id=stopped["conversation_id"])
    (request,) = llm.requests
    assert request.prompt_text == "List everything\nCarry on"
    assert request.model_turns == [("", ["list_segments"])]
    assert len(request.tool_results) == 1


def test_conversations_are_listed_newest_first_read_and_deleted(assist: Api, llm: StandIn) -> None:
    llm.script(Say("One."), Say("Two."))
    older = _ask(assist, "First question", model="local")["conversation_id"]
    newer = _ask(assist, "Second question, " + "at length " * 20, model="local")["conversation_id"]
    listed = ok(assist.app.get("/v1/assistant/conversations"))
    assert [c["id"] for c in listed["conversations"]] == [newer, older]
    assert listed["next"] == ""
    latest = listed["conversations"][0]
    assert set(latest) == {"id", "title", "model", "created_at", "updated_at"}
    assert len(latest["title"]) == 80
    assert latest["title"].startswith("Second question, at length")
    assert latest["title"].endswith("…")

    page = ok(assist.app.get("/v1/assistant/conversations", params={"limit": 1}))
    assert [c["id"] for c in page["conversations"]] == [newer]
    rest = ok(assist.app.get("/v1/assistant/conversations", params={"limit": 1, "start": page["next"]}))
    assert [c["id"] for c in rest["conversations"]] == [older]
    assert rest["next"] == ""
    assert assist.app.get("/v1/assistant/conversations", params={"start": "nope"}).status_code == 400

    assert ok(assist.app.delete(f"/v1/assistant/conversations/{older}")) == {}
    _not_found(assist.app.get(f"/v1/assistant/conversations/{older}"), older)
    _not_found(assist.app.delete(f"/v1/assistant/conversations/{older}"), older)
    _not_found(assist.app.post("/v1/assistant", json={"instruction": "Hi", "conversation_id": older}), older)
    remaining = ok(assist.app.get("/v1/assistant/conversations"))["conversations"]
    assert [c["id"] for c in remaining] == [newer]


def test_only_the_key_that_started_a_conversation_reads_or_continues_it(assist: Api, llm: StandIn) -> None:
    llm.script(Say("Hello."))
    conversation = _ask(assist, "Hi", model="local")["conversation_id"]
    llm.clear()
    with _other_key(assist) as other:
        _not_found(other.get(f"/v1/assistant/conversations/{conversation}"), conversation)
        continued = other.post("/v1/assistant", json={"instruction": "And?", "conversation_id": conversation})
        _not_found(continued, conversation)
        _not_found(other.delete(f"/v1/assistant/conversations/{conversation}"), conversation)
        assert ok(other.get("/v1/assistant/conversations"))["conversations"] == []
    assert llm.requests == []
    kept = ok(assist.app.get(f"/v1/assistant/conversations/{conversation}"))["conversation"]
    assert [m.get("text") for m in kept["messages"]] == ["Hi", "Hello."]


def test_an_unknown_conversation_is_not_found_before_any_model_call(assist: Api, llm: StandIn) -> None:
    unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    body = {"instruction": "Hi", "conversation_id": unknown}
    _not_found(assist.app.post("/v1/assistant", json=body), unknown)
    # Streaming too: nothing was streamed yet, so the error keeps its status.
    _not_found(assist.app.post("/v1/assistant", json=body, headers={"Accept": "text/event-stream"}), unknown)
    _not_found(assist.app.get(f"/v1/assistant/conversations/{unknown}"), unknown)
    assert llm.requests == []


def test_the_stored_history_keeps_the_latest_whole_requests() -> None:
    def request(label: str, steps: int, *, answered: bool = True) -> list[Json]:
        calls = [{"role": "assistant", "tool_calls": [{}]}, {"role": "tool", "results": [{}]}] * steps
        answer = [{"role": "assistant", "text": label, "tool_calls": []}] if answered else []
        return [{"role": "user", "text": label}, *calls, *answer]

    # 12, 20, 8 and 12 messages: the last three are exactly MAX_MESSAGES.
    first, second, third, fourth = (request(str(n), steps) for n, steps in enumerate((5, 9, 3, 5)))
    assert len(second + third + fourth) == MAX_MESSAGES
    assert keep_recent(first + second + third + fourth) == second + third + fourth
    # A request longer than the cap (20 steps stopped at max_steps) is kept whole, alone.
    longest = request("long", 20, answered=False)
    assert len(longest) > MAX_MESSAGES
    assert keep_recent(fourth + longest) == longest


# -- streaming -------------------------------------------------------------------------------------------

SSE = {"Accept": "text/event-stream"}


def _stream(api: Api, body: Json, headers: dict[str, str] | None = None) -> list[tuple[str, Json]]:
    """POST /v1/assistant read as Server-Sent Events: (event, data) in order."""
    events: list[tuple[str, Json]] = []
    with api.app.stream("POST", "/v1/assistant", json=body, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_streaming_sends_text_and_tool_calls_as_they_happen_then_the_reply(assist: Api, llm: StandIn) -> None:
    ok(assist.app.post("/v1/segments", json={"segment": {"name": "VIP buyers"}}))
    script = (
        CallTools([("list_segments", {"limit": 10}), ("list_campaigns", {})], text="Let me look."),
        Say("One segment, no campaigns."),
    )
    llm.script(*script)
    events = _stream(assist, {"instruction": "What is there?", "model": "claude-haiku"}, SSE)
    assert [name for name, _ in events] == ["text", "tool_call", "tool_call", "text", "done"]
    done = events[-1][1]
    assert [data for name, data in events if name == "tool_call"] == done["calls"]
    assert [c["tool"] for c in done["calls"]] == ["list_segments", "list_campaigns"]
    assert [data for name, data in events if name == "text"] == [
        {"text": "Let me look."},
        {"text": "One segment, no campaigns."},
    ]
    assert done["answer"] == "One segment, no campaigns."
    stored = ok(assist.app.get(f"/v1/assistant/conversations/{done['conversation_id']}"))["conversation"]
    assert len(stored["messages"]) == 4

    # Without streaming, the same request answers with what done carried (in a new conversation).
    llm.script(*script)
    plain = _ask(assist, "What is there?", model="claude-haiku")
    assert plain["conversation_id"] != done["conversation_id"]
    assert {**plain, "conversation_id": ""} == {**done, "conversation_id": ""}

    # "stream": true asks for the same as the Accept header.
    llm.script(Say("Hi."))
    events = _stream(assist, {"instruction": "Hello", "model": "local", "stream": True})
    assert [name for name, _ in events] == ["text", "done"]


def test_streaming_errors_keep_their_status_until_the_first_event_then_end_the_stream(
    assist: Api, llm: StandIn
) -> None:
    # No credits for the first turn, or bad input: nothing was streamed, so the usual JSON error.
    broke = assist.app.post("/v1/assistant", json={"instruction": "Hi", "model": "pricey"}, headers=SSE)
    assert broke.status_code == 402
    assert broke.json()["errors"][0]["code"] == "out_of_credits"
    blank = assist.app.post("/v1/assistant", json={"instruction": " ", "model": "local"}, headers=SSE)
    assert blank.status_code == 400
    assert blank.json()["errors"][0]["code"] == "invalid_input"

    # A failure after the first event ends the 200 stream with an error event in the App API envelope.
    llm.script(CallTools([("list_campaigns", {})]), Fail(400, "context too long"))
    events = _stream(assist, {"instruction": "Any campaigns?", "model": "claude-haiku"}, SSE)
    assert [name for name, _ in events] == ["tool_call", "error"]
    (error,) = events[-1][1]["errors"]
    assert (error["status"], error["code"]) == ("502", "upstream_failed")
    assert "context too long" in error["detail"]
    # A request that failed adds nothing: no conversation was started.
    assert ok(assist.app.get("/v1/assistant/conversations"))["conversations"] == []

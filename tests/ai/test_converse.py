"""Tool-calling turns (``providers.converse``) against the stand-in providers, through each official SDK:
tools offered and tool calls read in each provider's own format, results fed back in it, and failures
mapped as for ``generate``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ai.standins import GOOGLE_SIGNATURE, CallTools, Fail, Refuse, Say, StandIn, model_for
from tidings.ai import providers
from tidings.ai.catalogue import ModelSpec, Provider
from tidings.ai.providers import Message, ProviderError, ToolCall, ToolResult, ToolSpec, Turn
from tidings.config import Settings

PROVIDERS: list[Provider] = ["anthropic", "openai", "google"]

SYSTEM = "You help Acme's marketers. Use the tools to look things up."
QUESTION = "How many emails did alice@example.com get last week?"
LOOKUP = ToolSpec(
    name="lookup_contact",
    description="Find a contact by email address.",
    input_schema={
        "type": "object",
        "properties": {"email": {"type": "string"}},
        "required": ["email"],
        "additionalProperties": False,
    },
)
COUNT = ToolSpec(
    name="count_sends",
    description="Count the emails a contact was sent in the last days.",
    input_schema={
        "type": "object",
        "properties": {
            "contact_id": {"type": "string"},
            "days": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["contact_id", "days"],
    },
)
TOOLS = [LOOKUP, COUNT]
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("lookup_contact", {"email": "alice@example.com"}),
    ("count_sends", {"contact_id": "c_42", "days": 7, "tags": ["spring", "news"]}),
]
SAFETY = {"harassment": "block_low_and_above", "dangerous_content": "off"}


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    with StandIn(api_key="test-key") as running:
        yield running


@pytest.fixture
def llm(server: StandIn) -> Iterator[StandIn]:
    server.clear()
    yield server
    server.clear()
    server.answer = None
    server.delay = 0.0


def converse(
    model: ModelSpec,
    messages: list[Message],
    tools: list[ToolSpec] = TOOLS,
    *,
    system: str = SYSTEM,
    safety: dict[str, str] | None = None,
) -> Turn:
    async def call() -> Turn:
        try:
            return await providers.converse(model, system, messages, tools, safety=safety)
        finally:
            await providers.aclose_clients()

    return asyncio.run(call())


def failure(model: ModelSpec, messages: list[Message] | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        converse(model, messages if messages is not None else [{"role": "user", "text": QUESTION}])
    return caught.value


def first_turn(llm: StandIn, provider: Provider) -> tuple[list[Message], Turn]:
    """The opening turn, in which the model asks for both tools (with a word first)."""
    llm.script(CallTools(CALLS, text="Let me look that up."))
    messages: list[Message] = [{"role": "user", "text": QUESTION}]
    return messages, converse(model_for(llm, provider), messages)


RESULTS = [
    '{"id": "c_42", "name": "Alice"}',
    '{"error": "the send log is being rebuilt"}',
]


def with_results(messages: list[Message], turn: Turn) -> list[Message]:
    """The conversation after running ``turn``'s calls: the first works, the second fails."""
    first, second = turn.tool_calls
    return [
        *messages,
        {"role": "assistant", "text": turn.text, "tool_calls": turn.tool_calls},
        {
            "role": "tool",
            "results": [
                ToolResult(first.id, first.name, RESULTS[0]),
                ToolResult(second.id, second.name, RESULTS[1], is_error=True),
            ],
        },
    ]


# --- Tool calls out ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_calls_are_read(llm: StandIn, provider: Provider) -> None:
    _, turn = first_turn(llm, provider)

    assert [(call.name, call.arguments) for call in turn.tool_calls] == CALLS
    ids = [call.id for call in turn.tool_calls]
    assert all(ids)
    assert len(set(ids)) == 2
    assert turn.text == "Let me look that up."
    assert turn.stop_reason == {"anthropic": "tool_use", "openai": "tool_calls", "google": "STOP"}[provider]
    assert turn.input_tokens is not None
    assert turn.output_tokens is not None
    assert turn.output_tokens > 0
    (sent,) = llm.requests
    assert sent.tools == ["lookup_contact", "count_sends"]
    if provider == "google":
        # Gemini gave no ids: ours are made up, and unique across turns too.
        assert all(call_id.startswith("call_") for call_id in ids)
        assert [call.signature for call in turn.tool_calls] == [GOOGLE_SIGNATURE, None]
    else:
        assert ids[0].startswith("toolu_" if provider == "anthropic" else "call_")
        assert [call.signature for call in turn.tool_calls] == [None, None]


def test_tools_are_offered_in_each_providers_shape(llm: StandIn) -> None:
    for provider in PROVIDERS:
        converse(model_for(llm, provider), [{"role": "user", "text": QUESTION}])
    anthropic, openai, google = (r.body for r in llm.requests)

    assert anthropic["tools"] == [
        {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in TOOLS
    ]
    assert openai["tools"] == [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
        }
        for t in TOOLS
    ]
    (gemini_tool,) = google["tools"]
    # google-genai 3.4 writes this one field in snake case, which the API's JSON parsing accepts as well
    # as camel case.
    assert [
        (d["name"], d["description"], d.get("parametersJsonSchema", d.get("parameters_json_schema")))
        for d in gemini_tool["functionDeclarations"]
    ] == [(t.name, t.description, t.input_schema) for t in TOOLS]
    # Free text and tool calls: no structured-output schema.
    assert "output_config" not in anthropic
    assert "response_format" not in openai
    assert "responseJsonSchema" not in google.get("generationConfig", {})
    assert "responseMimeType" not in google.get("generationConfig", {})
    assert google["generationConfig"]["maxOutputTokens"] == 321


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stand_in_finishes_a_tool_turn_by_default(llm: StandIn, provider: Provider) -> None:
    turn = converse(model_for(llm, provider), [{"role": "user", "text": QUESTION}])

    assert turn.text == "ok"
    assert turn.tool_calls == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_tools_means_no_tools_parameter(llm: StandIn, provider: Provider) -> None:
    llm.script(Say("Hello."))

    turn = converse(model_for(llm, provider), [{"role": "user", "text": "Hi"}], tools=[])

    assert turn.text == "Hello."
    assert "tools" not in llm.requests[0].body
    assert llm.requests[0].tools == []


# --- Results back --------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_results_are_fed_back_and_the_final_answer_comes_back(llm: StandIn, provider: Provider) -> None:
    messages, turn = first_turn(llm, provider)
    llm.script(Say("Alice got 3 emails last week."))

    final = converse(model_for(llm, provider), with_results(messages, turn))

    assert final.text == "Alice got 3 emails last week."
    assert final.tool_calls == []
    assert final.stop_reason == {"anthropic": "end_turn", "openai": "stop", "google": "STOP"}[provider]
    _, sent = llm.requests
    first, second = turn.tool_calls
    # Anthropic and OpenAI match results to calls by id; Gemini by name (and order).
    keys = [first.name, second.name] if provider == "google" else [first.id, second.id]
    assert [key for key, _ in sent.tool_results] == keys
    assert [json.loads(text) for _, text in sent.tool_results] == [json.loads(r) for r in RESULTS]
    assert sent.system_text == SYSTEM
    assert sent.prompt_text.startswith(QUESTION)


def test_anthropic_gets_tool_use_and_tool_result_blocks(llm: StandIn) -> None:
    messages, turn = first_turn(llm, "anthropic")

    converse(model_for(llm, "anthropic"), with_results(messages, turn))

    first, second = turn.tool_calls
    assert llm.requests[1].body["messages"] == [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look that up."},
                {"type": "tool_use", "id": first.id, "name": first.name, "input": first.arguments},
                {"type": "tool_use", "id": second.id, "name": second.name, "input": second.arguments},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": first.id, "content": RESULTS[0], "is_error": False},
                {"type": "tool_result", "tool_use_id": second.id, "content": RESULTS[1], "is_error": True},
            ],
        },
    ]


def test_openai_gets_tool_calls_and_tool_messages(llm: StandIn) -> None:
    messages, turn = first_turn(llm, "openai")

    converse(model_for(llm, "openai"), with_results(messages, turn))

    first, second = turn.tool_calls
    sent = llm.requests[1].body["messages"]
    assert sent[:2] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    assistant = sent[2]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == "Let me look that up."
    assert [
        (c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in assistant["tool_calls"]
    ] == [(call.id, "function", call.name, call.arguments) for call in (first, second)]
    assert sent[3:] == [
        {"role": "tool", "tool_call_id": first.id, "content": RESULTS[0]},
        {"role": "tool", "tool_call_id": second.id, "content": RESULTS[1]},
    ]


def test_gemini_gets_function_calls_with_their_signature_and_function_responses(llm: StandIn) -> None:
    messages, turn = first_turn(llm, "google")

    converse(model_for(llm, "google"), with_results(messages, turn))

    first, second = turn.tool_calls
    assert llm.requests[1].body["contents"] == [
        {"role": "user", "parts": [{"text": QUESTION}]},
        {
            "role": "model",
            "parts": [
                {"text": "Let me look that up."},
                # The signature goes back exactly as it came; the made-up ids do not go at all.
                {
                    "functionCall": {"name": first.name, "args": first.arguments},
                    "thoughtSignature": GOOGLE_SIGNATURE,
                },
                {"functionCall": {"name": second.name, "args": second.arguments}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": first.name, "response": {"output": json.loads(RESULTS[0])}}},
                {"functionResponse": {"name": second.name, "response": {"error": json.loads(RESULTS[1])}}},
            ],
        },
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_longer_conversation_keeps_its_order(llm: StandIn, provider: Provider) -> None:
    """A second question after a finished tool loop: every turn goes back, in order, and a plain-text
    tool result reaches Gemini as text."""
    call = ToolCall("call_a", "lookup_contact", {"email": "bob@example.com"})
    messages: list[Message] = [
        {"role": "user", "text": "Who is bob@example.com?"},
        {"role": "assistant", "text": None, "tool_calls": [call]},
        {"role": "tool", "results": [ToolResult("call_a", "lookup_contact", "Bob, since 2021")]},
        {"role": "assistant", "text": "Bob, a contact since 2021.", "tool_calls": []},
        {"role": "user", "text": "And alice@example.com?"},
    ]

    converse(model_for(llm, provider), messages)

    (sent,) = llm.requests
    assert sent.tool_results == [
        ("lookup_contact" if provider == "google" else "call_a", "Bob, since 2021"),
    ]
    assert sent.prompt_text.splitlines() == ["Who is bob@example.com?", "And alice@example.com?"]


# --- System text and safety ----------------------------------------------------------------------------


def test_system_text_goes_to_each_providers_system_field_and_safety_only_to_gemini(llm: StandIn) -> None:
    for provider in PROVIDERS:
        converse(model_for(llm, provider), [{"role": "user", "text": QUESTION}], safety=SAFETY)
    anthropic, openai, google = llm.requests

    assert anthropic.body["system"] == SYSTEM
    assert openai.body["messages"][0] == {"role": "system", "content": SYSTEM}
    assert google.body["systemInstruction"]["parts"] == [{"text": SYSTEM}]
    for request in (anthropic, openai, google):
        assert request.system_text == SYSTEM
    assert google.safety_settings == {
        "HARM_CATEGORY_HARASSMENT": "BLOCK_LOW_AND_ABOVE",
        "HARM_CATEGORY_DANGEROUS_CONTENT": "OFF",
    }
    for request in (anthropic, openai):
        raw = json.dumps(request.body).lower()
        assert "safety" not in raw
        assert "harm" not in raw


def test_unknown_safety_setting_is_a_bad_request(llm: StandIn) -> None:
    with pytest.raises(ProviderError) as caught:
        converse(model_for(llm, "google"), [{"role": "user", "text": QUESTION}], safety={"rudeness": "off"})

    assert caught.value.kind == "bad_request"
    assert llm.requests == []


# --- Failures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_is_rate_limited(llm: StandIn, provider: Provider) -> None:
    llm.script(Fail(429, "Too many requests, slow down", retry_after=7))

    error = failure(model_for(llm, provider))

    assert error.kind == "rate_limited"
    assert error.retry_after == 7
    assert error.answered is False
    assert "slow down" in error.message
    assert len(llm.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("status", "kind"), [(500, "unavailable"), (401, "auth"), (400, "bad_request")])
def test_http_errors_map_like_generate(llm: StandIn, provider: Provider, status: int, kind: str) -> None:
    llm.script(Fail(status, "not like that"))

    error = failure(model_for(llm, provider))

    assert error.kind == kind
    assert f"HTTP {status}" in error.message
    assert len(llm.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_refusal_is_refused_and_answered(llm: StandIn, provider: Provider) -> None:
    llm.script(Refuse("No."))

    error = failure(model_for(llm, provider))

    assert error.kind == "refused"
    assert error.answered is True


@pytest.mark.parametrize(
    ("provider", "changes"),
    [("anthropic", {"api_key": None}), ("google", {"api_key": None}), ("openai", {"base_url": None})],
)
def test_unconfigured_provider(llm: StandIn, provider: Provider, changes: dict[str, Any]) -> None:
    error = failure(model_for(llm, provider, **changes))

    assert error.kind == "not_configured"
    assert llm.requests == []


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "text": "no"}],
        [{"role": "user"}],
        [{"role": "assistant", "text": None, "tool_calls": [{"id": "x", "name": "y", "arguments": {}}]}],
        [{"role": "tool", "results": ["not a result"]}],
    ],
)
def test_malformed_conversation_is_a_bad_request(llm: StandIn, messages: list[Message]) -> None:
    error = failure(model_for(llm, "openai"), messages)

    assert error.kind == "bad_request"
    assert llm.requests == []


@pytest.mark.parametrize("arguments", ["{not json", '["a", "list"]'])
def test_openai_arguments_that_are_not_an_object_are_invalid_but_answered(arguments: str) -> None:
    with pytest.raises(ProviderError) as caught:
        providers._openai_arguments("lookup_contact", arguments)

    assert caught.value.kind == "invalid_output"
    assert caught.value.answered is True


def test_openai_empty_arguments_are_no_arguments() -> None:
    assert providers._openai_arguments("now", "") == {}


def test_gemini_made_up_ids_are_unique_across_turns(llm: StandIn) -> None:
    llm.script(CallTools(CALLS), CallTools(CALLS))
    question: list[Message] = [{"role": "user", "text": QUESTION}]

    ids = [call.id for _ in range(2) for call in converse(model_for(llm, "google"), question).tool_calls]

    assert len(set(ids)) == 4


def test_turns_are_bounded_by_the_concurrency_limit(llm: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "get_settings", lambda: Settings(ai_concurrency=2))
    llm.delay = 0.1
    question: list[Message] = [{"role": "user", "text": QUESTION}]

    async def burst() -> list[Turn]:
        calls = [
            providers.converse(model_for(llm, p), SYSTEM, question, TOOLS)
            for p in PROVIDERS
            for _ in range(4)
        ]
        try:
            return await asyncio.gather(*calls)
        finally:
            await providers.aclose_clients()

    turns = asyncio.run(burst())

    assert [turn.text for turn in turns] == ["ok"] * 12
    for provider in PROVIDERS:
        assert llm.peak_for(provider) == 2, provider

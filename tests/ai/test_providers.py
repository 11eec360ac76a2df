"""The provider layer against the stand-in providers, through each official SDK: what reaches the wire,
and how every kind of failure comes back."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ai.standins import Fail, Hang, RawText, Refuse, Reply, StandIn, count_tokens, model_for
from tidings.ai import providers
from tidings.ai.catalogue import ModelSpec, Provider
from tidings.ai.providers import Answer, Generation, ProviderError
from tidings.config import Settings

PROVIDERS: list[Provider] = ["anthropic", "openai", "google"]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subject": {"type": "string"},
        "tone": {"type": "string", "enum": ["warm", "formal"]},
        "score": {"type": "integer"},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["subject", "tone", "score", "urgent", "tags"],
    "additionalProperties": False,
}
REQUEST = Generation(
    system="You write subject lines for Acme. Never promise discounts.",
    prompt="A subject line for our spring newsletter.",
    schema=SCHEMA,
    schema_name="subject_line",
)


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


def run(model: ModelSpec, request: Generation = REQUEST) -> Answer:
    async def call() -> Answer:
        try:
            return await providers.generate(model, request)
        finally:
            await providers.aclose_clients()

    return asyncio.run(call())


def failure(model: ModelSpec, request: Generation = REQUEST) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        run(model, request)
    return caught.value


# --- Success and what is sent --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_answer_is_parsed_with_token_counts(llm: StandIn, provider: Provider) -> None:
    wanted = {"subject": "Spring is here", "tone": "warm", "score": 7, "urgent": False, "tags": ["spring"]}
    llm.script(Reply(wanted))

    answer = run(model_for(llm, provider))

    assert answer.data == wanted
    assert json.loads(answer.text) == wanted
    (sent,) = llm.requests
    assert sent.provider == provider
    assert sent.model == f"{provider}-model-1"
    assert answer.input_tokens == count_tokens(f"{REQUEST.system}\n{REQUEST.prompt}")
    assert answer.output_tokens == count_tokens(answer.text)
    assert sent.max_output_tokens == 321


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stand_in_answers_to_the_schema_by_default(llm: StandIn, provider: Provider) -> None:
    answer = run(model_for(llm, provider))

    assert answer.data == {"subject": "text", "tone": "warm", "score": 1, "urgent": True, "tags": []}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_answer_function_sees_the_request(llm: StandIn, provider: Provider) -> None:
    llm.answer = lambda request: {"echo": request.prompt_text, "system": request.system_text}

    answer = run(model_for(llm, provider))

    assert answer.data == {"echo": REQUEST.prompt, "system": REQUEST.system}


def test_schema_goes_where_each_provider_reads_it(llm: StandIn) -> None:
    for provider in PROVIDERS:
        run(model_for(llm, provider))
    anthropic, openai, google = (r.body for r in llm.requests)

    assert anthropic["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert openai["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "subject_line", "schema": SCHEMA, "strict": True},
    }
    config = google["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert (config.get("responseJsonSchema") or config.get("responseSchema")) == SCHEMA
    assert config["maxOutputTokens"] == 321


def test_system_text_goes_to_each_providers_system_field(llm: StandIn) -> None:
    for provider in PROVIDERS:
        run(model_for(llm, provider))
    anthropic, openai, google = (r.body for r in llm.requests)

    assert anthropic["system"] == REQUEST.system
    assert anthropic["messages"] == [{"role": "user", "content": REQUEST.prompt}]
    assert openai["messages"] == [
        {"role": "system", "content": REQUEST.system},
        {"role": "user", "content": REQUEST.prompt},
    ]
    assert google["systemInstruction"]["parts"] == [{"text": REQUEST.system}]
    assert google["contents"] == [{"role": "user", "parts": [{"text": REQUEST.prompt}]}]
    for request in llm.requests:
        assert request.system_text == REQUEST.system
        assert request.prompt_text == REQUEST.prompt


SAFETY = {
    "harassment": "block_low_and_above",
    "hate_speech": "block_medium_and_above",
    "sexually_explicit": "block_only_high",
    "dangerous_content": "off",
}


def test_safety_settings_reach_gemini_with_its_enum_names(llm: StandIn) -> None:
    run(model_for(llm, "google"), Generation(REQUEST.system, REQUEST.prompt, SCHEMA, safety=SAFETY))

    (sent,) = llm.requests
    assert sent.body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_LOW_AND_ABOVE"},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_MEDIUM_AND_ABOVE"},
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "threshold": "BLOCK_ONLY_HIGH"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "OFF"},
    ]


def test_gemini_gets_no_safety_settings_when_none_are_given(llm: StandIn) -> None:
    run(model_for(llm, "google"), Generation(REQUEST.system, REQUEST.prompt, SCHEMA, safety={}))

    assert "safetySettings" not in llm.requests[0].body


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_safety_settings_are_not_sent_to_other_providers(llm: StandIn, provider: Provider) -> None:
    run(model_for(llm, provider), Generation(REQUEST.system, REQUEST.prompt, SCHEMA, safety=SAFETY))

    raw = json.dumps(llm.requests[0].body).lower()
    assert "safety" not in raw
    assert "harm" not in raw
    assert "block_low_and_above" not in raw


def test_openai_compatible_endpoint_without_key_gets_a_placeholder(llm: StandIn) -> None:
    llm.api_key = None
    try:
        answer = run(model_for(llm, "openai", api_key=None))
    finally:
        llm.api_key = "test-key"

    assert answer.data["subject"] == "text"
    assert llm.requests[0].api_key == "not-needed"


# --- Failures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_carries_retry_after(llm: StandIn, provider: Provider) -> None:
    llm.script(Fail(429, "Too many requests, slow down", retry_after=7))

    error = failure(model_for(llm, provider))

    assert error.kind == "rate_limited"
    assert error.retry_after == 7
    assert error.answered is False
    assert "429" in error.message
    assert "slow down" in error.message
    # The SDK's own retries are off: the caller decides, and counts attempts.
    assert len(llm.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [500, 529])
def test_server_errors_are_unavailable(llm: StandIn, provider: Provider, status: int) -> None:
    llm.script(Fail(status, "Overloaded" if status == 529 else "Internal error"))

    error = failure(model_for(llm, provider))

    assert error.kind == "unavailable"
    assert error.answered is False
    assert str(status) in error.message
    assert len(llm.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("status", "kind"), [(401, "auth"), (403, "auth"), (400, "bad_request"), (404, "bad_request")]
)
def test_client_errors(llm: StandIn, provider: Provider, status: int, kind: str) -> None:
    llm.script(Fail(status, "not like that"))

    error = failure(model_for(llm, provider))

    assert error.kind == kind
    assert error.answered is False
    assert error.retry_after is None
    assert f"HTTP {status}" in error.message
    assert "not like that" in error.message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_wrong_key_is_an_auth_error(llm: StandIn, provider: Provider) -> None:
    error = failure(model_for(llm, provider, api_key="wrong-key"))

    assert error.kind == "auth"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_slow_answer_times_out(llm: StandIn, provider: Provider) -> None:
    llm.script(Hang(3))
    started = time.monotonic()

    error = failure(model_for(llm, provider, timeout=0.3))

    assert error.kind == "timeout"
    assert error.answered is False
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unreachable_provider_is_unavailable(llm: StandIn, provider: Provider) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}" + ("/v1" if provider == "openai" else "")

    error = failure(model_for(llm, provider, base_url=base_url))

    assert error.kind == "unavailable"
    assert error.answered is False


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("text", ["Sure! Here is your subject line: Spring!", '["not", "an", "object"]'])
def test_output_that_is_not_a_json_object_is_invalid_but_answered(
    llm: StandIn, provider: Provider, text: str
) -> None:
    llm.script(RawText(text))

    error = failure(model_for(llm, provider))

    assert error.kind == "invalid_output"
    assert error.answered is True


@pytest.mark.parametrize("provider", PROVIDERS)
def test_refusal_is_refused_and_answered(llm: StandIn, provider: Provider) -> None:
    llm.script(Refuse("I can't write that."))

    error = failure(model_for(llm, provider))

    assert error.kind == "refused"
    assert error.answered is True


def test_gemini_prompt_block_is_refused_without_an_answer(llm: StandIn) -> None:
    llm.script(Refuse(prompt=True))

    error = failure(model_for(llm, "google"))

    assert error.kind == "refused"
    assert error.answered is False
    assert "SAFETY" in error.message


@pytest.mark.parametrize(
    ("provider", "changes"),
    [("anthropic", {"api_key": None}), ("google", {"api_key": None}), ("openai", {"base_url": None})],
)
def test_unconfigured_provider(llm: StandIn, provider: Provider, changes: dict[str, Any]) -> None:
    error = failure(model_for(llm, provider, **changes))

    assert error.kind == "not_configured"
    assert error.answered is False
    assert llm.requests == []


def test_retry_after_formats() -> None:
    assert providers._retry_after({"retry-after": "2.5"}) == 2.5
    assert providers._retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    found = providers._retry_after({"retry-after": later})
    assert found is not None
    assert 25 < found <= 30
    assert providers._retry_after({"retry-after": "soon"}) is None
    assert providers._retry_after({}) is None


def test_gemini_retry_delay_without_a_header_comes_from_retry_info() -> None:
    from google.genai import errors  # noqa: PLC0415

    body = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}],
        }
    }
    assert providers._google_retry_delay(errors.ClientError(429, body)) == 12


# --- Concurrency ---------------------------------------------------------------------------------------


def test_calls_in_flight_are_bounded_per_provider(llm: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "get_settings", lambda: Settings(ai_concurrency=2))
    llm.delay = 0.1

    async def burst() -> list[Answer]:
        calls = [providers.generate(model_for(llm, p), REQUEST) for p in PROVIDERS for _ in range(5)]
        try:
            return await asyncio.gather(*calls)
        finally:
            await providers.aclose_clients()

    answers = asyncio.run(burst())

    assert len(answers) == 15
    for provider in PROVIDERS:
        assert llm.peak_for(provider) == 2, provider
    # The limit is per provider: three providers may have three times as many calls out at once.
    assert llm.peak_in_flight == 6

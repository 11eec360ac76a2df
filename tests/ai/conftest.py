"""A server per backend wired to the stand-in model providers (tests/ai/standins.py) and a real SMTP
server, with a small model catalogue covering the three providers; a fresh workspace per test.

Every workspace of a server belongs to one account, so AI settings and credits are shared: tests that
change settings go through ``ai_settings``, which puts the defaults back afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.ai.standins import StandIn
from tests.conftest import BACKENDS, workspace_api
from tests.harness import Api, Server
from tests.mail import ok, serve_with_mail, unique_addresses
from tests.messaging.smtp_sink import SmtpSink

Json = dict[str, Any]
KEY = "sk-test-stand-in"
MODELS = [
    {"id": "gemini-flash", "provider": "google", "model": "gemini-2.5-flash", "class": "quick", "credits": 1},
    {"id": "claude-haiku", "provider": "anthropic", "model": "claude-haiku-4-5", "class": "quick",
     "credits": 2},
    {"id": "claude-sonnet", "provider": "anthropic", "model": "claude-sonnet-4-5", "class": "reasoning",
     "credits": 5},
    {"id": "local", "provider": "openai", "model": "llama3.1", "class": "quick", "credits": 0.5},
    # Costs more than any balance a test will hold: calls to it find the credits used up.
    {"id": "pricey", "provider": "anthropic", "model": "claude-opus", "class": "reasoning",
     "credits": 5_000_000},
]  # fmt: skip
DEFAULTS: Json = {
    "ai_enabled": True,
    "allow_agent_edit_live_data": False,
    "safety": {"harassment": None, "hate_speech": None, "sexually_explicit": None, "dangerous_content": None},
    "compliance_prompt": "",
    "mcp_enabled": True,
}


@pytest.fixture(scope="package")
def llm() -> Iterator[StandIn]:
    with StandIn(api_key=KEY) as running:
        yield running


@pytest.fixture(scope="package")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture(scope="package", params=BACKENDS)
def ai_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink, llm: StandIn
) -> Iterator[Server]:
    backend: str = request.param
    yield from serve_with_mail(
        backend,
        tmp_path_factory.mktemp(f"ai-{backend}"),
        sink,
        TIDINGS_OUTBOUND_ALLOW_PRIVATE="true",
        TIDINGS_AI_MODELS=json.dumps(MODELS),
        TIDINGS_ANTHROPIC_API_KEY=KEY,
        TIDINGS_ANTHROPIC_BASE_URL=llm.anthropic_base_url,
        TIDINGS_GOOGLE_API_KEY=KEY,
        TIDINGS_GOOGLE_BASE_URL=llm.google_base_url,
        TIDINGS_OPENAI_API_KEY=KEY,
        TIDINGS_OPENAI_BASE_URL=llm.openai_base_url,
        TIDINGS_AI_TIMEOUT_SECONDS="3",
        TIDINGS_AI_INITIAL_CREDITS="1000",
    )


@pytest.fixture
def api(ai_server: Server, llm: StandIn) -> Iterator[Api]:
    llm.clear()
    llm.answer = None
    yield from workspace_api(ai_server)
    llm.answer = None


@pytest.fixture
def ai_settings(api: Api) -> Iterator[Callable[..., Json]]:
    """Change the account's AI settings for one test; the defaults come back afterwards."""

    def change(**changes: Any) -> Json:
        found: Json = ok(api.app.put("/v1/ai/settings", json=changes))["ai_settings"]
        return found

    try:
        yield change
    finally:
        ok(api.app.put("/v1/ai/settings", json=DEFAULTS))


@pytest.fixture
def email() -> Callable[[str], str]:
    return unique_addresses()

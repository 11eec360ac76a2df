"""The LLM action's authoring helpers over HTTP: the processed prompt (free, lists every Liquid error with
its position), a preview response (spends credits, changes no data) and output fields generated from a
prompt, for loose prompts and for a saved campaign's block."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tests.ai.conftest import Json
from tests.ai.standins import Fail, RawText, Recorded, StandIn
from tests.campaigns.conftest import create
from tests.harness import Api
from tests.mail import ok

FIELDS: list[Json] = [
    {"name": "score", "type": "integer", "description": "Readiness 0-100", "target": "customer"},
    {"name": "summary", "type": "text", "description": "One line"},
]


def _person(api: Api, **attributes: Any) -> str:
    person_id = f"p-{uuid.uuid4().hex[:8]}"
    assert api.track.put(f"/api/v1/customers/{person_id}", json=attributes).status_code == 200
    return person_id


def _balance(api: Api) -> float:
    return float(ok(api.app.get("/v1/ai/credits"))["credits"]["balance"])


def test_processed_prompt_renders_the_sample_and_lists_every_error(api: Api, llm: StandIn) -> None:
    person = _person(api, first_name="Ada", plan="pro")
    before = _balance(api)
    rendered = ok(
        api.app.post(
            "/v1/ai/llm/processed_prompt",
            json={
                "prompt": "{{ customer.first_name }} on {{ customer.plan }} bought {{ event.item }}; "
                "mood {{ journey.mood | default: 'unknown' }}",
                "person": {"id": person},
                "trigger": {"event": {"name": "purchase", "data": {"item": "tea"}}},
            },
        )
    )
    assert rendered == {"prompt": "Ada on pro bought tea; mood unknown", "errors": []}

    broken = ok(
        api.app.post(
            "/v1/ai/llm/processed_prompt",
            json={
                "prompt": "Hello {{ customer.first_name }}\nYour {{ customer.seats }} seats\n"
                "and {{ event.plan_name }}",
                "person": {"id": person},
            },
        )
    )
    assert broken["prompt"] is None
    errors = broken["errors"]
    assert [(e["variable"], e["line"]) for e in errors] == [("customer.seats", 2), ("event.plan_name", 3)]
    assert all(e["column"] is not None and "line" in e["message"] for e in errors)
    # Rendering costs nothing and calls no model.
    assert llm.requests == []
    assert _balance(api) == before


def test_processed_prompt_refuses_bad_input_clearly(api: Api) -> None:
    missing = api.app.post("/v1/ai/llm/processed_prompt", json={"person": {"id": "x"}})
    assert missing.status_code == 400
    assert "prompt" in missing.json()["errors"][0]["detail"]
    nobody = api.app.post("/v1/ai/llm/processed_prompt", json={"prompt": "Hi", "person": {"id": "nobody"}})
    assert nobody.status_code == 404
    shape = api.app.post("/v1/ai/llm/processed_prompt", json={"prompt": "Hi", "person": {"phone": "1"}})
    assert shape.status_code == 400
    syntax = ok(api.app.post("/v1/ai/llm/processed_prompt", json={"prompt": "Hi {% if %}"}))
    assert syntax["prompt"] is None
    assert syntax["errors"][0]["line"] == 1


def test_preview_spends_credits_and_changes_nothing(api: Api, llm: StandIn) -> None:
    llm.answer = lambda request: {"score": 91, "summary": "Ready to grow"}
    person = _person(api, first_name="Bo", seats_used=19)
    before = _balance(api)
    preview = ok(
        api.app.post(
            "/v1/ai/llm/preview",
            json={
                "prompt": "Score {{ customer.first_name }} who uses {{ customer.seats_used }} seats",
                "model": "claude-sonnet",
                "output_fields": FIELDS,
                "person": {"id": person},
            },
        )
    )["preview"]
    assert preview["model"] == "claude-sonnet"
    assert preview["credits_used"] == 5
    assert preview["attributes"] == {"journey": {"summary": "Ready to grow"}, "customer": {"score": 91}}
    assert preview["problems"] == []
    assert llm.requests[0].prompt_text == "Score Bo who uses 19 seats"
    assert llm.requests[0].model == "claude-sonnet-4-5"
    assert _balance(api) == before - 5
    ledger = ok(api.app.get("/v1/ai/credits/ledger", params={"limit": 1}))["entries"][0]
    assert ledger["kind"] == "preview"
    assert ledger["model"] == "claude-sonnet"
    # The person's profile did not change.
    attributes = ok(api.attributes(person))["customer"]["attributes"]
    assert "score" not in attributes


def test_preview_reports_invalid_output_and_provider_failures(api: Api, llm: StandIn) -> None:
    body: Json = {"prompt": "Score it", "model": "gemini-flash", "output_fields": FIELDS}
    llm.answer = lambda request: {"score": "lots", "summary": None}
    invalid = ok(api.app.post("/v1/ai/llm/preview", json=body))["preview"]
    assert invalid["attributes"] == {"journey": {}, "customer": {}}
    assert [p.split(":")[0] for p in invalid["problems"]] == ["score", "summary"]

    before = _balance(api)
    llm.script(Fail(503, "down for maintenance"))
    failed = api.app.post("/v1/ai/llm/preview", json=body)
    assert failed.status_code == 502
    assert "unavailable" in failed.json()["errors"][0]["detail"]
    assert _balance(api) == before  # not answered: free

    llm.script(RawText("no json here"))
    garbled = api.app.post("/v1/ai/llm/preview", json=body)
    assert garbled.status_code == 502
    assert "invalid_output" in garbled.json()["errors"][0]["detail"]
    assert _balance(api) == before - 1  # answered: paid

    unrendered = api.app.post("/v1/ai/llm/preview", json={**body, "prompt": "{{ customer.nope }}"})
    assert unrendered.status_code == 400
    assert "customer.nope" in unrendered.json()["errors"][0]["detail"]
    bad_fields = api.app.post("/v1/ai/llm/preview", json={**body, "output_fields": [{"name": "1x"}]})
    assert bad_fields.status_code == 400


def test_preview_of_a_saved_campaign_block(api: Api, llm: StandIn) -> None:
    llm.answer = lambda request: {"tone": "warm"}
    campaign = create(
        api,
        {
            "name": "Saved",
            "trigger": {"type": "event", "event": "signup"},
            "steps": [
                {
                    "id": "tone",
                    "type": "llm",
                    "model": "local",
                    "prompt": "Pick a tone for {{ customer.first_name }} from {{ event.source }}",
                    "output_fields": [
                        {"name": "tone", "type": "single_select", "options": ["warm", "formal"]}
                    ],
                }
            ],
        },
        activate=False,
    )
    person = _person(api, first_name="Cy")
    sample = {"campaign_id": campaign["id"], "block": "tone", "person": {"id": person}}
    processed = ok(
        api.app.post(
            "/v1/ai/llm/processed_prompt", json={**sample, "trigger": {"event": {"data": {"source": "ads"}}}}
        )
    )
    assert processed["prompt"] == "Pick a tone for Cy from ads"
    preview = ok(
        api.app.post(
            "/v1/ai/llm/preview", json={**sample, "trigger": {"event": {"data": {"source": "blog"}}}}
        )
    )["preview"]
    assert preview["model"] == "local"
    assert preview["attributes"]["journey"] == {"tone": "warm"}
    assert llm.requests[-1].prompt_text == "Pick a tone for Cy from blog"
    missing = api.app.post("/v1/ai/llm/preview", json={"campaign_id": campaign["id"], "block": "nope"})
    assert missing.status_code == 400


def test_generate_fields_proposes_checked_fields(api: Api, llm: StandIn) -> None:
    def propose(request: Recorded) -> Json:
        assert request.schema is not None
        assert "fields" in request.schema["properties"]
        return {
            "fields": [
                {"name": "sentiment", "type": "single_select", "description": "How they feel",
                 "required": True, "options": ["positive", "negative"]},
                {"name": "summary", "type": "text", "description": "A line", "required": False,
                 "options": None},
                {"name": "bad name!", "type": "text", "description": "", "required": True, "options": None},
            ]
        }  # fmt: skip

    llm.answer = propose
    before = _balance(api)
    found = ok(
        api.app.post(
            "/v1/ai/llm/generate_fields",
            json={"prompt": "Classify the review {{ event.text }} and summarise it", "model": "claude-haiku"},
        )
    )
    assert found["model"] == "claude-haiku"
    assert found["credits_used"] == 2
    assert [f["name"] for f in found["output_fields"]] == ["sentiment", "summary"]
    assert found["output_fields"][0]["options"] == ["positive", "negative"]
    assert found["output_fields"][1]["required"] is False
    assert len(found["skipped"]) == 1
    assert "Classify the review" in llm.requests[0].prompt_text
    assert _balance(api) == before - 2


def test_preview_and_generation_honour_the_ai_toggle(
    api: Api, llm: StandIn, ai_settings: Callable[..., Json]
) -> None:
    ai_settings(ai_enabled=False)
    for path, body in (
        ("/v1/ai/llm/preview", {"prompt": "x", "output_fields": FIELDS}),
        ("/v1/ai/llm/generate_fields", {"prompt": "x"}),
    ):
        response = api.app.post(path, json=body)
        assert response.status_code == 403
        assert response.json()["errors"][0]["code"] == "forbidden"
    assert llm.requests == []

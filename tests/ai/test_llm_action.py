"""The LLM action end to end: a campaign whose journeys prompt a model (a stand-in speaking each provider's
wire format, reached through the provider's official SDK inside Tidings), store the answer as journey or
customer attributes, branch on it and mail the result to a real SMTP server; retries, fallbacks, the AI
toggle, credits, conditions, and what reaches the provider (compliance prompt, business context, Gemini
safety settings only for Gemini)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from tests.ai.conftest import Json
from tests.ai.standins import Fail, Hang, RawText, Recorded, Reply, StandIn
from tests.campaigns.conftest import create, email_block, journeys
from tests.harness import Api
from tests.mail import eventually, mail_to, ok
from tests.messaging.smtp_sink import Received, SmtpSink


def _person(api: Api, address: str, **attributes: Any) -> str:
    person_id = f"p-{uuid.uuid4().hex[:8]}"
    response = api.track.put(f"/api/v1/customers/{person_id}", json={"email": address, **attributes})
    assert response.status_code == 200, response.text
    return person_id


def _event(api: Api, person_id: str, name: str, **data: Any) -> None:
    response = api.track.post(f"/api/v1/customers/{person_id}/events", json={"name": name, "data": data})
    assert response.status_code == 200, response.text


def _finished(api: Api, campaign_id: int, count: int = 1) -> list[Json]:
    def done() -> list[Json] | None:
        found = journeys(api, campaign_id)
        finished = [j for j in found if j["state"] in ("completed", "exited", "failed")]
        return finished if len(finished) >= count else None

    found: list[Json] = eventually(done, what=f"{count} finished journeys", deadline=30)
    return found


def _llm_step(journey: Json, block: str = "classify") -> Json:
    entries = [s for s in journey["steps"] if s["block"] == block and not s["outcome"].startswith("calling")]
    assert len(entries) == 1, journey["steps"]
    entry: Json = entries[0]
    return entry


def _subject(message: Received) -> str:
    return str(message.message["Subject"])


def _html(message: Received) -> str:
    body = message.message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def _ledger(api: Api) -> list[Json]:
    entries: list[Json] = ok(api.app.get("/v1/ai/credits/ledger", params={"limit": 50}))["entries"]
    return entries


def _balance(api: Api) -> float:
    return float(ok(api.app.get("/v1/ai/credits"))["credits"]["balance"])


def _sentiment(request: Recorded) -> Json:
    positive = "love" in request.prompt_text.lower()
    return {
        "sentiment": "positive" if positive else "negative",
        "reply": "So glad you like it!" if positive else "We are sorry to hear that.",
    }


CLASSIFY: Json = {
    "id": "classify",
    "type": "llm",
    "model": "claude-haiku",
    "prompt": "Classify the sentiment of this review by {{ customer.first_name }}: {{ event.text }}",
    "output_fields": [
        {
            "name": "sentiment",
            "type": "single_select",
            "options": ["positive", "negative", "neutral"],
            "description": "How the customer feels",
        },
        {"name": "reply", "type": "text", "description": "A one-line answer to the review"},
    ],
}


def _review_campaign(api: Api, classify: Json = CLASSIFY, trigger: str = "review") -> Json:
    return create(
        api,
        {
            "name": f"Reviews {uuid.uuid4().hex[:6]}",
            "trigger": {"type": "event", "event": trigger},
            "steps": [
                classify,
                {
                    "id": "route",
                    "type": "branch",
                    "condition": {"journey": {"field": "sentiment", "operator": "eq", "value": "positive"}},
                    "yes": [email_block("thanks", "Thank you!", "<p>{{ journey.reply }}</p>")],
                    "no": [
                        email_block("sorry", "Sorry, {{ customer.first_name }}", "<p>{{ journey.reply }}</p>")
                    ],
                },
            ],
        },
    )


def test_sentiment_routes_each_person_to_their_email(
    api: Api, llm: StandIn, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    llm.answer = _sentiment
    campaign = _review_campaign(api)
    happy = _person(api, email("happy"), first_name="Ada")
    cross = _person(api, email("cross"), first_name="Bo")
    before = _balance(api)
    _event(api, happy, "review", text="I love this product")
    _event(api, cross, "review", text="It broke on day one")

    thanks = mail_to(sink, email("happy"))[0]
    sorry = mail_to(sink, email("cross"))[0]
    assert _subject(thanks) == "Thank you!"
    assert "So glad you like it!" in _html(thanks)
    assert _subject(sorry) == "Sorry, Bo"
    assert "We are sorry to hear that." in _html(sorry)

    finished = _finished(api, campaign["id"], 2)
    for journey in finished:
        assert journey["state"] == "completed"
        activity = _llm_step(journey)["detail"]
        assert activity["model"] == "claude-haiku"
        assert activity["attempts"] == 1
        assert activity["credits"] == 2
        assert activity["duration_ms"] >= 0
        assert activity["fields"]["sentiment"] in ("positive", "negative")
        assert journey["attributes"]["sentiment"] == activity["fields"]["sentiment"]
    # The prompt's Liquid was rendered with the person and the trigger's data before it left.
    prompts = sorted(r.prompt_text for r in llm.requests)
    assert prompts == [
        "Classify the sentiment of this review by Ada: I love this product",
        "Classify the sentiment of this review by Bo: It broke on day one",
    ]
    # The output schema went along as Anthropic's structured-output format.
    schema = llm.requests[0].schema
    assert schema is not None
    assert schema["properties"]["sentiment"]["enum"] == ["positive", "negative", "neutral"]
    # Each run spent the model's credits, in the ledger with its campaign and journey.
    assert _balance(api) == before - 4
    runs = [e for e in _ledger(api) if e["kind"] == "run" and e["campaign_id"] == campaign["id"]]
    assert sorted(e["journey_id"] for e in runs) == sorted(j["id"] for j in finished)
    assert all(e["credits"] == -2 and e["model"] == "claude-haiku" for e in runs)


def test_customer_targets_update_the_profile_and_the_data_index(
    api: Api, llm: StandIn, email: Callable[[str], str]
) -> None:
    llm.answer = lambda request: {"expansion_score": 87, "ready": True, "topics": ["billing", "seats"]}
    block: Json = {
        "id": "score",
        "type": "llm",
        "model": "local",
        "prompt": "Seats used {{ customer.seats_used }} of {{ customer.seats }}",
        "output_fields": [
            {"name": "expansion_score", "type": "integer", "target": "customer",
             "description": "0-100 readiness to buy more seats"},
            {"name": "ready", "type": "boolean", "target": "customer", "description": "Ready to upsell"},
            {"name": "topics", "type": "multi_select", "options": ["billing", "seats", "support"]},
        ],
    }  # fmt: skip
    campaign = create(
        api, {"name": "Scoring", "trigger": {"type": "event", "event": "usage"}, "steps": [block]}
    )
    person = _person(api, email("acct"), seats_used=9, seats=10)
    _event(api, person, "usage")
    journey = _finished(api, campaign["id"])[0]
    assert journey["state"] == "completed"
    assert journey["attributes"] == {"topics": ["billing", "seats"]}
    attributes = ok(api.attributes(person))["customer"]["attributes"]
    # The attributes endpoint shows values as Customer.io does (text).
    assert str(attributes["expansion_score"]) == "87"
    assert str(attributes["ready"]).lower() == "true"
    assert llm.requests[0].provider == "openai"
    assert llm.requests[0].prompt_text == "Seats used 9 of 10"
    index = {a["name"]: a for a in ok(api.app.get("/v1/data_index"))["attributes"]}
    assert index["expansion_score"]["description"] == "0-100 readiness to buy more seats"
    assert index["expansion_score"]["type"] == "integer"
    assert index["expansion_score"]["source"] == {
        "campaign_id": campaign["id"],
        "block": "score",
        "set_by": "llm_action",
    }
    assert "topics" not in index  # a journey attribute is not a customer attribute


def test_three_attempts_then_success_spend_only_answered_calls(
    api: Api, llm: StandIn, email: Callable[[str], str]
) -> None:
    campaign = _review_campaign(api, trigger="review-retry")
    person = _person(api, email("retry"), first_name="Cy")
    before = _balance(api)
    # A rate limit (not answered: free), malformed output (answered: paid), then a good answer.
    llm.script(Fail(429, "slow down", retry_after=0.2), RawText("this is not JSON"), Reply(
        {"sentiment": "neutral", "reply": "Noted."}
    ))  # fmt: skip
    _event(api, person, "review-retry", text="meh")
    journey = _finished(api, campaign["id"])[0]
    activity = _llm_step(journey)["detail"]
    assert activity["attempts"] == 3
    assert activity["fields"] == {"sentiment": "neutral", "reply": "Noted."}
    assert activity["credits"] == 4
    assert _balance(api) == before - 4
    assert len(llm.requests) == 3
    calling = [s["outcome"] for s in journey["steps"] if s["outcome"].startswith("calling")]
    assert calling == [f"calling claude-haiku (attempt {n} of 3)" for n in (1, 2, 3)]


def test_after_three_failures_fallbacks_apply_and_other_fields_stay(
    api: Api, llm: StandIn, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    classify = {
        **CLASSIFY,
        "output_fields": [
            {**CLASSIFY["output_fields"][0], "fallback": "neutral"},
            CLASSIFY["output_fields"][1],
        ],
    }
    campaign = create(
        api,
        {
            "name": "Fallbacks",
            "trigger": {"type": "event", "event": "review-fail"},
            "steps": [
                {"id": "seed", "type": "set_journey_attributes", "attributes": {"reply": "Earlier reply"}},
                classify,
                email_block("after", "{{ journey.sentiment }}", "<p>{{ journey.reply }}</p>"),
            ],
        },
    )
    person = _person(api, email("fails"), first_name="Di")
    llm.script(Fail(500, "boom"), Fail(529, "overloaded"), Fail(400, "bad request"))
    _event(api, person, "review-fail", text="hmm")
    # The journey went on to the email: the fallback and the unchanged earlier value reached it.
    message = mail_to(sink, email("fails"))[0]
    assert _subject(message) == "neutral"
    assert "Earlier reply" in _html(message)
    journey = _finished(api, campaign["id"])[0]
    assert journey["state"] == "completed"
    assert journey["attributes"] == {"reply": "Earlier reply", "sentiment": "neutral"}
    activity = _llm_step(journey)["detail"]
    assert activity["attempts"] == 3
    assert activity["credits"] == 0
    assert activity["fallbacks"] == {"sentiment": "neutral"}
    assert activity["failure"].startswith("bad_request")
    assert [e.split(":")[0] for e in activity["errors"]] == ["unavailable", "unavailable", "bad_request"]
    assert _llm_step(journey)["outcome"].startswith("failed: bad_request")


def test_ai_turned_off_uses_fallbacks_without_calling_and_refuses_previews(
    api: Api, llm: StandIn, ai_settings: Callable[..., Json], email: Callable[[str], str]
) -> None:
    classify = {
        **CLASSIFY,
        "output_fields": [
            {**CLASSIFY["output_fields"][0], "fallback": "neutral"},
            CLASSIFY["output_fields"][1],
        ],
    }
    campaign = _review_campaign(api, classify, trigger="review-off")
    ai_settings(ai_enabled=False)
    person = _person(api, email("off"), first_name="Ed")
    _event(api, person, "review-off", text="I love it")
    journey = _finished(api, campaign["id"])[0]
    activity = _llm_step(journey)["detail"]
    assert activity["failure"].startswith("ai_disabled")
    assert activity["attempts"] == 0
    assert journey["attributes"] == {"sentiment": "neutral"}
    assert journey["state"] == "completed"  # the journey continued (down the "no" branch)
    assert llm.requests == []
    response = api.app.post(
        "/v1/ai/llm/preview", json={"prompt": "Hi", "output_fields": [{"name": "x", "type": "text"}]}
    )
    assert response.status_code == 403
    assert "ai_enabled" in response.json()["errors"][0]["detail"]
    generated = api.app.post("/v1/ai/llm/generate_fields", json={"prompt": "Classify the review"})
    assert generated.status_code == 403
    # Rendering a prompt calls no model: it stays available.
    assert ok(api.app.post("/v1/ai/llm/processed_prompt", json={"prompt": "Hi"}))["prompt"] == "Hi"


def test_without_credits_the_action_fails_and_the_journey_goes_on(
    api: Api, llm: StandIn, email: Callable[[str], str]
) -> None:
    classify = {
        **CLASSIFY,
        "model": "pricey",
        "output_fields": [
            {**CLASSIFY["output_fields"][0], "fallback": "negative"},
            CLASSIFY["output_fields"][1],
        ],
    }
    campaign = _review_campaign(api, classify, trigger="review-broke")
    before = _balance(api)
    person = _person(api, email("broke"), first_name="Fa")
    _event(api, person, "review-broke", text="I love it")
    journey = _finished(api, campaign["id"])[0]
    activity = _llm_step(journey)["detail"]
    assert activity["failure"].startswith("no_credits")
    assert activity["attempts"] == 3
    assert activity["credits"] == 0
    assert journey["attributes"] == {"sentiment": "negative"}
    assert journey["state"] == "completed"
    assert llm.requests == []
    assert _balance(api) == before
    response = api.app.post(
        "/v1/ai/llm/preview",
        json={"model": "pricey", "prompt": "Hi", "output_fields": [{"name": "x", "type": "text"}]},
    )
    assert response.status_code == 402, response.text


def test_conditions_let_only_matching_people_run_the_action(
    api: Api, llm: StandIn, email: Callable[[str], str]
) -> None:
    llm.answer = _sentiment
    classify = {**CLASSIFY, "conditions": {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}}
    campaign = _review_campaign(api, classify, trigger="review-pro")
    pro = _person(api, email("pro"), first_name="Gi", plan="pro")
    free = _person(api, email("free"), first_name="Ha", plan="free")
    _event(api, pro, "review-pro", text="love")
    _event(api, free, "review-pro", text="love")
    finished = {j["person_id"]: j for j in _finished(api, campaign["id"], 2)}
    assert len(llm.requests) == 1
    assert "Gi" in llm.requests[0].prompt_text
    outcomes = sorted(_llm_step(j)["outcome"] for j in finished.values())
    assert outcomes == ["set reply, sentiment", "skipped: conditions not met"]


def test_outputs_feed_a_later_llm_action_and_its_conditions(
    api: Api, llm: StandIn, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    def answer(request: Recorded) -> Json:
        if "Write a subject" in request.prompt_text:
            mood = re.findall(r"mood: (\w+)", request.prompt_text)[0]
            return {"subject": f"About your {mood} review"}
        return _sentiment(request)

    llm.answer = answer
    campaign = create(
        api,
        {
            "name": "Chained",
            "trigger": {"type": "event", "event": "review-chain"},
            "steps": [
                {**CLASSIFY, "model": "gemini-flash"},
                {
                    "id": "subject",
                    "type": "llm",
                    "model": "local",
                    "prompt": "Write a subject line. mood: {{ journey.sentiment }}",
                    "conditions": {"journey": {"field": "sentiment", "operator": "in",
                                               "values": ["positive", "negative"]}},
                    "output_fields": [{"name": "subject", "type": "text"}],
                },
                email_block("mail", "{{ journey.subject }}"),
            ],
        },
    )  # fmt: skip
    person = _person(api, email("chain"), first_name="Io")
    _event(api, person, "review-chain", text="I love the new app")
    assert _subject(mail_to(sink, email("chain"))[0]) == "About your positive review"
    journey = _finished(api, campaign["id"])[0]
    assert _llm_step(journey, "subject")["detail"]["model"] == "local"
    assert [r.provider for r in llm.requests] == ["google", "openai"]


def test_compliance_prompt_and_business_context_reach_every_provider_and_safety_only_gemini(
    api: Api, llm: StandIn, ai_settings: Callable[..., Json], email: Callable[[str], str]
) -> None:
    ai_settings(
        compliance_prompt="Never promise refunds.",
        safety={"harassment": "block_low_and_above", "dangerous_content": "off"},
    )
    ok(
        api.app.put(
            "/v1/ai/business_context", json={"company": "Acme Tea", "audience": "Tea lovers in Europe"}
        )
    )
    llm.answer = _sentiment
    steps: list[Json] = [
        {**CLASSIFY, "id": f"with-{model}", "model": model}
        for model in ("gemini-flash", "claude-haiku", "local")
    ]
    campaign = create(
        api, {"name": "Every provider", "trigger": {"type": "event", "event": "review-all"}, "steps": steps}
    )
    person = _person(api, email("all"), first_name="Jo")
    _event(api, person, "review-all", text="love")
    _finished(api, campaign["id"])
    by_provider = {r.provider: r for r in llm.requests}
    assert set(by_provider) == {"google", "anthropic", "openai"}
    for request in by_provider.values():
        assert "Never promise refunds." in request.system_text
        assert "Acme Tea" in request.system_text
        assert "Tea lovers in Europe" in request.system_text
        assert "Never promise refunds." not in request.prompt_text
    assert by_provider["google"].safety_settings == {
        "HARM_CATEGORY_HARASSMENT": "BLOCK_LOW_AND_ABOVE",
        "HARM_CATEGORY_DANGEROUS_CONTENT": "OFF",
    }
    for provider in ("anthropic", "openai"):
        assert "safetySettings" not in by_provider[provider].body
        assert "safety" not in str(by_provider[provider].body).lower()


def test_bad_llm_blocks_are_refused_naming_the_problem(api: Api) -> None:
    def refused(block: Json) -> str:
        response = api.app.post(
            "/v1/campaigns",
            json={"name": "Bad", "trigger": {"type": "event", "event": "x"}, "steps": [block]},
        )
        assert response.status_code == 400, response.text
        detail: str = response.json()["errors"][0]["detail"]
        return detail

    base: Json = {"id": "b", "type": "llm", "prompt": "Hi", "output_fields": [{"name": "a", "type": "text"}]}
    assert "unknown model 'gpt-9'" in refused({**base, "model": "gpt-9"})
    assert "output_fields" in refused({**base, "output_fields": []})
    assert "type must be one of" in refused({**base, "output_fields": [{"name": "a", "type": "color"}]})
    assert "options" in refused({**base, "output_fields": [{"name": "a", "type": "single_select"}]})
    assert "fallback" in refused(
        {**base, "output_fields": [{"name": "a", "type": "integer", "fallback": "many"}]}
    )
    assert "appears twice" in refused(
        {**base, "output_fields": [{"name": "a", "type": "text"}, {"name": "a", "type": "number"}]}
    )
    assert "prompt" in refused({**base, "prompt": "{% if %}"})
    assert "journey" in refused(
        {**base, "conditions": {"journey": {"field": "x", "operator": "older_than", "days": 3}}}
    )


def test_a_slow_model_holds_up_no_other_journey(
    api: Api, llm: StandIn, sink: SmtpSink, email: Callable[[str], str]
) -> None:
    llm.answer = _sentiment
    llm.script(Hang(2.5))
    _review_campaign(api, trigger="review-slow")
    create(
        api,
        {
            "name": "Quick",
            "trigger": {"type": "event", "event": "ping"},
            "steps": [email_block("pong", "Pong")],
        },
    )
    slow = _person(api, email("slow"), first_name="Ka")
    quick = _person(api, email("quick"))
    _event(api, slow, "review-slow", text="I love it")
    eventually(lambda: llm.in_flight == 1, what="the model call in flight")
    _event(api, quick, "ping")
    assert _subject(mail_to(sink, email("quick"))[0]) == "Pong"
    # The other journey's mail went out while the model call was still waiting for its answer.
    assert llm.in_flight == 1
    assert _subject(mail_to(sink, email("slow"))[0]) == "Thank you!"

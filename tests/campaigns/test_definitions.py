"""Every bad definition is refused with a message naming the part at fault and, in the workflow, the
block (by id and place); over HTTP the refusal is a 400 in the App API's envelope and nothing is saved."""

from __future__ import annotations

from typing import Any

import pytest

from tests.campaigns.conftest import email_block
from tests.harness import Api
from tidings.campaigns.definition import parse
from tidings.journeys.workflow import DefinitionError

EMAIL = email_block("hello", "Hi")


def campaign(*steps: Any, **extra: Any) -> dict[str, Any]:
    return {"name": "C", "trigger": {"type": "event", "event": "e"}, "steps": list(steps), **extra}


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("no name", {"trigger": {"type": "event", "event": "e"}, "steps": [EMAIL]}, "name: is required"),
    ("unknown key", campaign(EMAIL, colour="red"), "colour: unknown field"),
    ("no trigger", {"name": "C", "steps": [EMAIL]}, "trigger: is required"),
    ("bad trigger type", campaign(EMAIL, trigger={"type": "moon"}), "trigger.type: must be one of"),
    ("event without name", campaign(EMAIL, trigger={"type": "event"}), "trigger.event: is required"),
    ("bad segment id", campaign(EMAIL, trigger={"type": "segment", "segment_id": "x"}), "trigger.segment_id"),
    ("bad reentry", campaign(EMAIL, reentry={"mode": "sometimes"}), "reentry.mode: must be one of"),
    ("every without period", campaign(EMAIL, reentry={"mode": "every"}), "reentry.every: is required"),
    ("exit on goal without goal", campaign(EMAIL, exit={"on_goal": True}), "exit.on_goal: needs a goal"),
    (
        "leave segment without segment",
        campaign(EMAIL, exit={"on_leave_segment": True}),
        "exit.on_leave_segment",
    ),
    ("bad filter", campaign(EMAIL, filters={"attribute": {}}), "filters"),
    ("steps not a list", {**campaign(), "steps": "email"}, "steps must be a list of blocks"),
    ("no steps", campaign(), "steps: must hold at least one block"),
    (
        "unknown block type",
        campaign({"id": "x", "type": "teleport"}),
        "block 'x' (steps[0].type): unknown block type",
    ),
    ("block without type", campaign({"id": "x"}), "block 'x' (steps[0].type)"),
    (
        "duplicate ids",
        campaign(EMAIL, email_block("hello", "Again")),
        "steps[1]: block id 'hello' is used twice",
    ),
    (
        "bad duration",
        campaign({"id": "wait", "type": "delay", "duration": "1 fortnight"}),
        "block 'wait' (steps[0].duration)",
    ),
    (
        "two delays",
        campaign({"id": "wait", "type": "delay", "duration": "1d", "until": 5}),
        "block 'wait' (steps[0])",
    ),
    (
        "bad liquid",
        campaign(email_block("oops", "{% if %}")),
        "block 'oops' (steps[0].content)",
    ),
    (
        "email without content or template",
        campaign({"id": "m", "type": "email"}),
        "block 'm' (steps[0]): give either template",
    ),
    (
        "unknown email field",
        campaign({"id": "m", "type": "email", "content": {"subjekt": "x"}}),
        "block 'm' (steps[0].content)",
    ),
    (
        "nested bad block names its place",
        campaign(
            {
                "id": "check",
                "type": "branch",
                "condition": {"attribute": {"field": "a", "operator": "exists"}},
                "yes": [{"id": "deep", "type": "delay"}],
            }
        ),
        "block 'deep' (steps[0].yes[0])",
    ),
    (
        "branch without condition",
        campaign({"id": "check", "type": "branch", "yes": []}),
        "block 'check' (steps[0].condition): is required",
    ),
    (
        "cohorts not adding up",
        campaign({"id": "r", "type": "random_split", "cohorts": [{"percent": 50}, {"percent": 20}]}),
        "block 'r' (steps[0].cohorts): percents must add up to 100",
    ),
    (
        "wait for both",
        campaign({"id": "w", "type": "wait_until", "event": "x", "condition": {"segment": {"id": 1}}}),
        "block 'w' (steps[0]): give either condition or event",
    ),
    (
        "timeout steps without timeout",
        campaign({"id": "w", "type": "wait_until", "event": "x", "timeout_steps": []}),
        "block 'w' (steps[0].timeout_steps)",
    ),
    (
        "bad time window",
        campaign({"id": "tw", "type": "time_window", "start": "25:00"}),
        "block 'tw' (steps[0].start)",
    ),
    (
        "bad time zone",
        campaign({"id": "tw", "type": "time_window", "timezone": "Mars/Olympus"}),
        "block 'tw' (steps[0].timezone)",
    ),
    (
        "ab test with one variant",
        campaign({"id": "ab", "type": "ab_test", "variants": [{"content": {"subject": "x"}}]}),
        "block 'ab' (steps[0].variants)",
    ),
    (
        "ab winner metric",
        campaign(
            {
                "id": "ab",
                "type": "ab_test",
                "variants": [{"content": {"subject": "a"}}, {"content": {"subject": "b"}}],
                "winner": {"metric": "vibes", "after": "1d"},
            }
        ),
        "block 'ab' (steps[0].winner.metric)",
    ),
    (
        "update person with nothing",
        campaign({"id": "u", "type": "update_person"}),
        "block 'u' (steps[0].attributes)",
    ),
    (
        "send event without name",
        campaign({"id": "s", "type": "send_event"}),
        "block 's' (steps[0].event): is required",
    ),
    (
        "http request bad method",
        campaign({"id": "h", "type": "http_request", "url": "https://x", "method": "BREW"}),
        "block 'h' (steps[0].method)",
    ),
    (
        "exit with fields",
        campaign({"id": "x", "type": "exit", "why": "because"}),
        "block 'x' (steps[0].why): unknown field",
    ),
    (
        "broadcast with reentry",
        {"name": "B", "trigger": {"type": "broadcast"}, "reentry": "always", "steps": [EMAIL]},
        "reentry: a broadcast has no re-entry rules",
    ),
]


@pytest.mark.parametrize(("case", "document", "expected"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_definitions_name_the_part_at_fault(case: str, document: dict[str, Any], expected: str) -> None:
    with pytest.raises(DefinitionError) as refused:
        parse(document)
    assert expected in refused.value.message, refused.value.message


def test_a_refused_definition_is_a_400_and_saves_nothing(api: Api) -> None:
    response = api.app.post(
        "/v1/campaigns", json=campaign({"id": "wait", "type": "delay", "duration": "soon"})
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert "block 'wait' (steps[0].duration)" in error["detail"]
    # References to other things are checked when saved: an unknown segment or message.
    response = api.app.post(
        "/v1/campaigns", json=campaign(EMAIL, trigger={"type": "segment", "segment_id": 999999})
    )
    assert response.status_code == 400
    assert "segment 999999 does not exist" in response.json()["errors"][0]["detail"]
    response = api.app.post("/v1/campaigns", json=campaign({"id": "t", "type": "email", "template": "nope"}))
    assert response.status_code == 400
    assert "block 't' (steps[0].template)" in response.json()["errors"][0]["detail"]
    assert api.app.get("/v1/campaigns").json()["campaigns"] == []
    assert api.app.get("/v1/campaigns/123456").status_code == 404
    assert api.app.post("/v1/campaigns", content=b"[1, 2]").status_code == 400


def test_state_changes_that_make_no_sense_are_conflicts(api: Api) -> None:
    created = api.app.post("/v1/campaigns", json=campaign(EMAIL)).json()["campaign"]
    assert created["state"] == "draft"
    assert api.app.post(f"/v1/campaigns/{created['id']}/pause").status_code == 409
    assert api.app.post(f"/v1/campaigns/{created['id']}/activate").status_code == 200
    assert api.app.post(f"/v1/campaigns/{created['id']}/activate").status_code == 409
    assert api.app.post(f"/v1/campaigns/{created['id']}/archive").status_code == 200
    assert api.app.put(f"/v1/campaigns/{created['id']}", json=campaign(EMAIL)).status_code == 409

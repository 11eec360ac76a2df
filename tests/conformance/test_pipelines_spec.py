"""Customer.io's Pipelines (CDP) API spec against a live Tidings, on every backend.

Customer.io answers every Pipelines call 200 ``{}`` and drops what it cannot use; with
``X-Strict-Mode: 1`` it answers 400/401 instead (the header's own description in the spec). So:

- permissive (no header): any request at all, valid or not, with good or bad credentials: 200 ``{}``;
- strict: valid data gets a documented status (200, or the 400/401/413 strict mode promises) with
  Tidings' ``{"code", "message"}`` body, Customer.io's own request samples get 200 ``{}``, and wrong
  credentials get 401;
- negative data: never a 5xx, in either mode;
- fixed edge values (U+0000, timestamps past 2038) and oversized bodies: 200 ``{}``, or in strict mode a
  documented answer (413 for the oversized ones).

The spec's server URL ends in ``/v1`` and its paths are ``/identify`` …; Tidings serves them at
``/v1/identify`` …, so the base URL is the server's plus ``/v1``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import pytest
from schemathesis import GenerationMode

from tests.conformance import (
    AS_DOCUMENTED,
    NO_SERVER_ERROR,
    PIPELINES_SPEC,
    describe,
    json_body,
    load_schema,
    read_spec,
    run_cases,
    run_each,
)
from tests.harness import Server

STRICT = "X-Strict-Mode"
CREDENTIAL_EXAMPLES = 5

# Tidings' strict-mode error body: what cdp-analytics-python reads from a non-200 answer.
STRICT_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}


def tidings_overlay(raw: dict[str, Any]) -> None:
    """Strict mode's 400/401/413, which the spec describes only in the X-Strict-Mode parameter, with
    Tidings' body for them (docs/compatibility.md)."""
    for item in raw["paths"].values():
        for operation in item.values():
            for status in ("400", "401", "413"):
                operation["responses"][status] = {
                    "description": f"Strict mode only (Tidings): {status}",
                    "content": {"application/json": {"schema": copy.deepcopy(STRICT_ERROR)}},
                }


RAW = read_spec(PIPELINES_SPEC)
tidings_overlay(RAW)
SCHEMA = load_schema(RAW)
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}
LABELS = list(OPERATIONS)


@dataclass
class Target:
    base_url: str
    auth: tuple[str, str]


@pytest.fixture
def pipelines(server: Server) -> Target:
    creds = server.new_workspace()
    return Target(f"{server.base_url}/v1", (creds.pipelines_write_key, ""))


def permissive(case: Any) -> Any:
    case.headers.pop(STRICT, None)
    return case


def strict(case: Any) -> Any:
    case.headers[STRICT] = "1"
    return case


def call(case: Any, target: Target, *, auth: tuple[str, str] | None = None) -> Any:
    return case.call(base_url=target.base_url, auth=auth or target.auth, timeout=30)


def expect_ok(case: Any, response: Any) -> None:
    assert response.status_code == 200, describe(case, response)
    assert json_body(response) == {}, describe(case, response)


def expect_strict_answer(case: Any, response: Any) -> None:
    if response.status_code == 200:
        assert json_body(response) == {}, describe(case, response)
    else:
        assert response.status_code in {400, 413}, describe(case, response)
        body = json_body(response)
        assert body["code"], describe(case, response)
        assert body["message"], describe(case, response)


# --- permissive: 200 {} for anything --------------------------------------------------------------------


@pytest.mark.parametrize("label", LABELS)
def test_valid_requests_are_200_empty(pipelines: Target, label: str) -> None:
    def check(case: Any) -> None:
        response = call(permissive(case), pipelines)
        case.validate_response(response, checks=AS_DOCUMENTED)
        expect_ok(case, response)

    run_cases(OPERATIONS[label].as_strategy(GenerationMode.POSITIVE), check)


@pytest.mark.parametrize("label", LABELS)
def test_invalid_requests_are_200_empty(pipelines: Target, label: str) -> None:
    def check(case: Any) -> None:
        response = call(permissive(case), pipelines)
        case.validate_response(response, checks=NO_SERVER_ERROR)
        expect_ok(case, response)

    run_cases(OPERATIONS[label].as_strategy(GenerationMode.NEGATIVE), check)


@pytest.mark.parametrize("label", LABELS)
def test_wrong_credentials_are_200_empty(pipelines: Target, label: str) -> None:
    def check(case: Any) -> None:
        response = call(permissive(case), pipelines, auth=("not-a-write-key", ""))
        case.validate_response(response, checks=AS_DOCUMENTED)
        expect_ok(case, response)

    run_cases(OPERATIONS[label].as_strategy(GenerationMode.POSITIVE), check, max_examples=CREDENTIAL_EXAMPLES)


# --- strict mode -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", LABELS)
def test_strict_valid_requests_get_documented_answers(pipelines: Target, label: str) -> None:
    def check(case: Any) -> None:
        response = call(strict(case), pipelines)
        case.validate_response(response, checks=AS_DOCUMENTED)
        expect_strict_answer(case, response)

    run_cases(OPERATIONS[label].as_strategy(GenerationMode.POSITIVE), check)


@pytest.mark.parametrize("label", LABELS)
def test_strict_invalid_requests_never_get_a_server_error(pipelines: Target, label: str) -> None:
    def check(case: Any) -> None:
        response = call(strict(case), pipelines)
        case.validate_response(response, checks=NO_SERVER_ERROR)

    run_cases(OPERATIONS[label].as_strategy(GenerationMode.NEGATIVE), check)


@pytest.mark.parametrize("label", LABELS)
def test_strict_wrong_credentials_are_401(pipelines: Target, label: str) -> None:
    def check(case: Any) -> None:
        response = call(strict(case), pipelines, auth=("not-a-write-key", ""))
        case.validate_response(response, checks=AS_DOCUMENTED)
        assert response.status_code == 401, describe(case, response)

    run_cases(OPERATIONS[label].as_strategy(GenerationMode.POSITIVE), check, max_examples=CREDENTIAL_EXAMPLES)


# --- the spec's examples ---------------------------------------------------------------------------------

EXAMPLE_LABELS = [label for label in LABELS if OPERATIONS[label].get_strategies_from_examples()]


@pytest.mark.parametrize("label", EXAMPLE_LABELS)
def test_spec_examples_are_200_empty(pipelines: Target, label: str) -> None:
    """Every example the spec gives (schemathesis combines property-level examples too)."""

    def check(case: Any) -> None:
        response = call(permissive(case), pipelines)
        case.validate_response(response, checks=AS_DOCUMENTED)
        expect_ok(case, response)
        strict_response = call(strict(case), pipelines)
        case.validate_response(strict_response, checks=AS_DOCUMENTED)
        expect_strict_answer(case, strict_response)

    run_each(OPERATIONS[label].get_strategies_from_examples(), check)


def _code_samples() -> list[tuple[str, str, Any]]:
    """(id, operation, body) for each JSON request sample the spec gives (`x-codeSamples`)."""
    found = []
    for path, item in read_spec(PIPELINES_SPEC)["paths"].items():
        for method, operation in item.items():
            for sample in operation.get("x-codeSamples", []):
                if sample.get("lang") == "json":
                    label = f"{method.upper()} {path}"
                    body = _strip_stray_commas(json.loads(sample["source"]))
                    found.append((f"{label} {sample['label']}", label, body))
    return found


def _strip_stray_commas(value: Any) -> Any:
    """The `/group` sample's strings end in a stray comma (``"2015-02-23T22:28:55.111Z,"``), a typo from
    a JavaScript object literal; without it the sample is what the docs mean."""
    if isinstance(value, dict):
        return {key: _strip_stray_commas(item) for key, item in value.items()}
    if isinstance(value, str):
        return value.removesuffix(",")
    return value


CODE_SAMPLES = _code_samples()


@pytest.mark.parametrize(
    ("label", "body"), [(label, body) for _, label, body in CODE_SAMPLES], ids=[i for i, _, _ in CODE_SAMPLES]
)
def test_customerio_request_samples_are_accepted_even_in_strict_mode(
    pipelines: Target, label: str, body: Any
) -> None:
    operation = OPERATIONS[label]
    # The `/batch` sample is a bare `{}`, a placeholder rather than a call; strict mode rightly refuses a
    # batch without `batch`, so that one is sent permissively only.
    for headers in ({}, {STRICT: "1"}) if body else ({},):
        case = operation.Case(body=body, headers=headers, media_type="application/json")
        response = call(case, pipelines)
        case.validate_response(response, checks=AS_DOCUMENTED)
        expect_ok(case, response)


# Values the generator reaches only by chance, as fixed requests: U+0000 in strings, timestamps past 2038.
EDGE_CASES: list[tuple[str, str, Any]] = [
    ("NUL in userId", "POST /identify", {"userId": "a\u0000b"}),
    ("NUL in a trait", "POST /identify", {"userId": "edge", "traits": {"plan": "a\u0000b"}}),
    ("NUL in event name", "POST /track", {"userId": "edge", "event": "a\u0000b"}),
    ("NUL in alias userId", "POST /alias", {"previousId": "a", "userId": "a\u0000b"}),
    ("NUL in a batch item", "POST /batch", {"batch": [{"type": "identify", "userId": "a\u0000b"}]}),
    (
        "created_at trait in ms",
        "POST /identify",
        {"userId": "edge", "traits": {"created_at": 1_700_000_000_000}},
    ),
    (
        "timestamp after 2038",
        "POST /track",
        {"userId": "edge", "event": "e", "timestamp": "2100-01-01T00:00:00Z"},
    ),
]


@pytest.mark.parametrize(
    ("label", "body"), [case[1:] for case in EDGE_CASES], ids=[case[0] for case in EDGE_CASES]
)
def test_edge_values_are_200_empty_or_documented_in_strict_mode(
    pipelines: Target, label: str, body: Any
) -> None:
    case = OPERATIONS[label].Case(body=body, media_type="application/json")
    response = call(case, pipelines)
    case.validate_response(response, checks=AS_DOCUMENTED)
    expect_ok(case, response)
    strict_case = OPERATIONS[label].Case(body=body, media_type="application/json", headers={STRICT: "1"})
    strict_response = call(strict_case, pipelines)
    strict_case.validate_response(strict_response, checks=AS_DOCUMENTED)
    expect_strict_answer(strict_case, strict_response)


# Over every Pipelines limit (32 KB for one call, 500 KB for a batch).
OVERSIZED = {"userId": "big", "padding": "x" * 600_000}


@pytest.mark.parametrize("label", LABELS)
def test_oversized_bodies_are_200_empty_or_413_in_strict_mode(pipelines: Target, label: str) -> None:
    case = OPERATIONS[label].Case(body=OVERSIZED, media_type="application/json")
    response = call(case, pipelines)
    case.validate_response(response, checks=AS_DOCUMENTED)
    expect_ok(case, response)
    strict_case = OPERATIONS[label].Case(body=OVERSIZED, media_type="application/json", headers={STRICT: "1"})
    strict_response = call(strict_case, pipelines)
    strict_case.validate_response(strict_response, checks=AS_DOCUMENTED)
    assert strict_response.status_code == 413, describe(strict_case, strict_response)
    expect_strict_answer(strict_case, strict_response)

"""Customer.io's Track API spec (v1 and v2) against a live Tidings, on every backend.

- positive data (generated, and the spec's own examples): never a 5xx, a documented status, a body
  matching the documented schema, the endpoint's error envelope, and Customer.io's ``{}`` on success;
- Customer.io's whole-request examples: accepted, 200 ``{}`` (204 for forms);
- negative data: never a 5xx (Tidings answers bad input with its documented 400s);
- credentials: wrong ones are 401 where the spec asks for them; none are needed where it does not;
- behaviour the spec states in prose (identify naming two people), fixed edge values the generator meets
  only by chance (U+0000, timestamps past 2038 or in milliseconds), and oversized bodies (413).

Tidings' deliberate deviations are laid over the spec in :func:`tidings_overlay`; each has a row in
``docs/compatibility.md``.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from schemathesis import GenerationMode

from tests.conformance import (
    AS_DOCUMENTED,
    NO_SERVER_ERROR,
    TRACK_SPEC,
    describe,
    json_body,
    load_schema,
    read_spec,
    run_cases,
    run_each,
)
from tests.harness import Server

REGION = "GET /api/v1/accounts/region"
IDENTIFY = "PUT /api/v1/customers/{identifier}"
MERGE = "POST /api/v1/merge_customers"
FORMS = "POST /api/v1/forms/{form_id}/submit"
METRICS = "POST /api/v1/metrics"
PUSH_EVENTS = "POST /api/v1/push/events"
UNSUBSCRIBE = "POST /unsubscribe/{delivery_id}"
ADD_TO_SEGMENT = "POST /api/v1/segments/{segment_id}/add_customers"
REMOVE_FROM_SEGMENT = "POST /api/v1/segments/{segment_id}/remove_customers"
ENTITY = "POST /api/v2/entity"
BATCH = "POST /api/v2/batch"

HTTP_METHODS = {"get", "put", "post", "delete"}
CREDENTIAL_EXAMPLES = 5
SEGMENT_OPERATIONS = {ADD_TO_SEGMENT, REMOVE_FROM_SEGMENT}
V2_OPERATIONS = {ENTITY, BATCH}

# --- Tidings' deliberate deviations, as an overlay on Customer.io's spec ------------------------------

V1_ERRORS = {
    "type": "object",
    "required": ["meta"],
    "properties": {
        "meta": {
            "type": "object",
            "required": ["errors"],
            "properties": {"errors": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
        }
    },
}
V1_ERROR = {
    "type": "object",
    "required": ["meta"],
    "properties": {
        "meta": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    },
}
V2_ERRORS = {
    "type": "object",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["reason", "field", "message"],
                "properties": {
                    "reason": {"type": "string"},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        }
    },
}


def envelope(label: str) -> dict[str, Any]:
    """The error body each Track endpoint answers with (customerio-api.md §1.3)."""
    if label in V2_OPERATIONS:
        return V2_ERRORS
    if label == MERGE:
        return V1_ERROR
    return V1_ERRORS


def _response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": copy.deepcopy(schema)}}}


def tidings_overlay(raw: dict[str, Any]) -> None:
    """Tidings' documented deviations from Customer.io's Track spec (docs/compatibility.md)."""
    for path, item in raw["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            label = f"{method.upper()} {path}"
            responses = operation["responses"]
            if "requestBody" in operation:
                # Request bodies larger than the endpoint allows: 413 in the endpoint's envelope.
                responses["413"] = _response("Request body too large (Tidings)", envelope(label))
            if "400" not in responses and label != REGION:
                # Customer.io documents no 400 for these. Tidings answers 400 in the endpoint's envelope for
                # input it cannot use: a suppressed identifier, a value over Customer.io's documented limits,
                # a malformed `cio_relationships`, a metric without `delivery_id`/`metric`/`event`.
                responses["400"] = _response("Invalid request (Tidings)", V1_ERRORS)
    # The forms endpoint requires Track credentials but documents no 401.
    raw["paths"]["/api/v1/forms/{form_id}/submit"]["post"]["responses"]["401"] = {
        "description": "Unauthorized"
    }
    # A self-hosted Tidings answers the region call with its own base URL, not one of Customer.io's two.
    region = raw["paths"]["/api/v1/accounts/region"]["get"]["responses"]["200"]
    del region["content"]["application/json"]["schema"]["properties"]["url"]["enum"]


RAW = read_spec(TRACK_SPEC)
tidings_overlay(RAW)
SCHEMA = load_schema(RAW)
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}
LABELS = list(OPERATIONS)
AUTHENTICATED = [label for label in LABELS if any(OPERATIONS[label].definition.raw.get("security", []))]
UNAUTHENTICATED = [label for label in LABELS if label not in AUTHENTICATED]


@dataclass
class Target:
    server: Server
    workspace_id: int
    auth: tuple[str, str]
    segment_id: int
    delivery_id: str

    @property
    def base_url(self) -> str:
        return self.server.base_url


@pytest.fixture
def track(server: Server) -> Target:
    """A fresh workspace (so suppressions and merges in one test cannot touch another) with a manual
    segment and an email delivery, so segment and unsubscribe calls can succeed."""
    creds = server.new_workspace()
    auth = (creds.site_id, creds.track_api_key)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        created = client.post(
            "/v1/segments",
            json={"segment": {"name": "conformance"}},
            headers={"Authorization": f"Bearer {creds.app_api_key}"},
        )
        created.raise_for_status()
        client.put(
            "/api/v1/customers/recipient", json={"email": "recipient@example.com"}, auth=auth
        ).raise_for_status()
    person_id = server.sql(
        "SELECT id FROM people WHERE workspace_id = :w AND customer_id = 'recipient'", w=creds.workspace_id
    )[0][0]
    delivery_id = f"dlv_conformance_{secrets.token_hex(6)}"
    # Deliveries are made by the messaging layer; one is laid down directly to be unsubscribed from.
    server.execute(
        "INSERT INTO deliveries (id, workspace_id, person_id, channel, recipient, created_at) "
        "VALUES (:d, :w, :p, 'email', 'recipient@example.com', 1)",
        d=delivery_id,
        w=creds.workspace_id,
        p=person_id,
    )
    return Target(server, creds.workspace_id, auth, created.json()["segment"]["id"], delivery_id)


def fixed_parameters(label: str, target: Target) -> dict[str, Any]:
    """Path parameters naming things that exist, so valid requests can succeed."""
    if label in SEGMENT_OPERATIONS:
        return {"path_parameters": {"segment_id": target.segment_id}}
    if label == UNSUBSCRIBE:
        return {"path_parameters": {"delivery_id": target.delivery_id}}
    return {}


def call(case: Any, target: Target, *, auth: tuple[str, str] | None = None) -> Any:
    return case.call(base_url=target.base_url, auth=auth or target.auth, timeout=30)


def error_messages(label: str, body: Any) -> list[Any]:
    """The messages in the endpoint's error envelope (customerio-api.md §1.3)."""
    try:
        if label == MERGE:
            return [body["meta"]["error"]]
        if label in V2_OPERATIONS:
            assert all(set(error) >= {"reason", "field", "message"} for error in body["errors"]), body
            return [error["message"] for error in body["errors"]]
        return list(body["meta"]["errors"])
    except (KeyError, TypeError) as exc:
        raise AssertionError(f"not the {label} error envelope: {body}") from exc


def expect_track_answer(label: str, case: Any, response: Any, target: Target) -> None:
    """What the spec's schema cannot say: Customer.io's exact success bodies and error envelopes."""
    where = describe(case, response)
    status = response.status_code
    if label == REGION:
        body = json_body(response)
        assert status == 200, where
        # Deviation: `url` is this server's own base URL (see the overlay).
        assert body == {
            "url": target.base_url,
            "region": body["region"],
            "environment_id": target.workspace_id,
        }, where
        return
    if status == 200:
        assert json_body(response) == {}, f"Track success must be {{}}{where}"
    elif status == 204:
        assert response.content == b"", where
    elif 400 <= status < 500:
        messages = error_messages(label, json_body(response))
        assert messages, f"no error message{where}"
        assert all(isinstance(m, str) and m for m in messages), where
    sent = case.body if isinstance(case.body, dict) else {}
    if contains_nul(sent):
        # Refused with a 400 on every backend (compatibility.md): PostgreSQL cannot store U+0000.
        return
    if case.path_parameters.get("segment_id") == target.segment_id and isinstance(sent.get("ids"), list):
        # A manual segment that exists and 1..1000 ids: nothing to refuse (unknown people are ignored).
        assert status == 200, where
    if case.path_parameters.get("delivery_id") == target.delivery_id and isinstance(
        sent.get("unsubscribe"), bool
    ):
        assert status == 200, where


def contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(key) or contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(contains_nul(item) for item in value)
    return False


@pytest.mark.parametrize("label", LABELS)
def test_valid_requests_get_documented_answers(track: Target, label: str) -> None:
    operation = OPERATIONS[label]

    def check(case: Any) -> None:
        response = call(case, track)
        case.validate_response(response, checks=AS_DOCUMENTED)
        expect_track_answer(label, case, response, track)

    run_cases(operation.as_strategy(GenerationMode.POSITIVE, **fixed_parameters(label, track)), check)


EXAMPLE_LABELS = [label for label in LABELS if OPERATIONS[label].get_strategies_from_examples()]


@pytest.mark.parametrize("label", EXAMPLE_LABELS)
def test_spec_examples_get_documented_answers(track: Target, label: str) -> None:
    """Every example the spec gives (schemathesis combines property-level examples too)."""
    operation = OPERATIONS[label]

    def check(case: Any) -> None:
        response = call(case, track)
        case.validate_response(response, checks=AS_DOCUMENTED)
        expect_track_answer(label, case, response, track)

    run_each(operation.get_strategies_from_examples(**fixed_parameters(label, track)), check)


@pytest.mark.parametrize("label", LABELS)
def test_invalid_requests_never_get_a_server_error(track: Target, label: str) -> None:
    operation = OPERATIONS[label]

    def check(case: Any) -> None:
        response = call(case, track)
        case.validate_response(response, checks=NO_SERVER_ERROR)

    run_cases(operation.as_strategy(GenerationMode.NEGATIVE), check)


# --- Customer.io's whole-request examples: accepted as they are ----------------------------------------


def _request_examples() -> list[tuple[str, str, Any]]:
    """(id, operation, body) for every request-level example in the spec."""
    raw = read_spec(TRACK_SPEC)
    schemas = raw["components"]["schemas"]
    found: list[tuple[str, str, Any]] = []
    for path, item in raw["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            example = media.get("example", media.get("schema", {}).get("example"))
            if example is not None:
                found.append((f"{method.upper()} {path}", f"{method.upper()} {path}", example))
    for group in ("person_operations", "object_operations", "delivery_operations"):
        branches = schemas[group].get("anyOf", [schemas[group]])
        for branch in branches:
            schema = schemas[branch["$ref"].rsplit("/", 1)[-1]] if "$ref" in branch else branch
            example = copy.deepcopy(schema["example"])
            if schema["title"] == "Person: Merge":
                # The spec's example for this branch leaves out its own required `type` and `action`.
                example = {"type": "person", "action": "merge", **example}
            found.append((f"entity {schema['title']}", ENTITY, example))
            found.append((f"batch {schema['title']}", BATCH, {"batch": [example]}))
    return found


REQUEST_EXAMPLES = _request_examples()


@pytest.mark.parametrize(
    ("label", "body"),
    [(label, body) for _, label, body in REQUEST_EXAMPLES],
    ids=[i for i, _, _ in REQUEST_EXAMPLES],
)
def test_customerio_request_examples_are_accepted(track: Target, label: str, body: Any) -> None:
    operation = OPERATIONS[label]
    path_parameters = {"identifier": "conformance@example.com"} if "{identifier}" in operation.path else {}
    path_parameters.update(fixed_parameters(label, track).get("path_parameters", {}))
    case = operation.Case(path_parameters=path_parameters, body=body, media_type="application/json")
    response = call(case, track)
    case.validate_response(response, checks=AS_DOCUMENTED)
    assert response.status_code == (204 if label == FORMS else 200), describe(case, response)
    expect_track_answer(label, case, response, track)


# --- Documented behaviour the schema cannot express -----------------------------------------------------

# The spec's own identify example, sent to its own example path identifier.
IDENTIFY_EXAMPLE = RAW["paths"]["/api/v1/customers/{identifier}"]["put"]["requestBody"]["content"][
    "application/json"
]["example"]


@pytest.mark.parametrize("shape", ["v1", "v2 entity", "v2 batch"])
def test_identify_naming_two_different_people_is_answered(track: Target, shape: str) -> None:
    """The spec (v1 identify): "If the identifier in the path and request body belong to different people,
    your request may return `200 OK` but produce an *Attribute Update Failure*". v2 says nothing; there any
    documented answer will do (a 400 or a 207 naming the item)."""
    path_person, body_person = "person@example.com", IDENTIFY_EXAMPLE["email"]
    for email in (path_person, body_person):
        OPERATIONS[IDENTIFY].Case(path_parameters={"identifier": email}, body={}).call(
            base_url=track.base_url, auth=track.auth
        )
    if shape == "v1":
        case = OPERATIONS[IDENTIFY].Case(path_parameters={"identifier": path_person}, body=IDENTIFY_EXAMPLE)
    else:
        entity = {"type": "person", "action": "identify", "identifiers": {"email": path_person}}
        entity["attributes"] = {"email": body_person}
        body = entity if shape == "v2 entity" else {"batch": [entity]}
        case = OPERATIONS[ENTITY if shape == "v2 entity" else BATCH].Case(body=body)
    response = call(case, track)
    case.validate_response(response, checks=AS_DOCUMENTED)
    expect_track_answer(case.operation.label, case, response, track)
    if shape == "v1":
        assert response.status_code == 200, describe(case, response)


# Values the generator reaches only by chance, as fixed requests: Unix timestamps past 2038 or in
# milliseconds (the spec says only "integer"), and U+0000 in strings. Any documented answer will do.
EVENTS = "POST /api/v1/customers/{identifier}/events"
DEVICES = "PUT /api/v1/customers/{identifier}/devices"
MS = 1_700_000_000_000
AFTER_2038 = 2_200_000_000
EDGE_CASES: list[tuple[str, str, dict[str, Any], Any]] = [
    ("identify created_at after 2038", IDENTIFY, {"identifier": "edge"}, {"created_at": AFTER_2038}),
    ("identify created_at in ms", IDENTIFY, {"identifier": "edge"}, {"created_at": MS}),
    ("event timestamp in ms", EVENTS, {"identifier": "edge"}, {"name": "e", "timestamp": MS}),
    (
        "anonymous event timestamp in ms",
        "POST /api/v1/events",
        {},
        {"name": "e", "anonymous_id": "a", "timestamp": MS},
    ),
    (
        "device last_used in ms",
        DEVICES,
        {"identifier": "edge"},
        {"device": {"id": "t", "platform": "ios", "last_used": MS}},
    ),
    (
        "metric timestamp in ms",
        METRICS,
        {},
        {"delivery_id": "RPILAgUBcRhIBqSfeiIwdIYJKxTY", "metric": "opened", "timestamp": MS},
    ),
    (
        "push event timestamp in ms",
        PUSH_EVENTS,
        {},
        {"delivery_id": "RPILAgUBcRhIBqSfeiIwdIYJKxTY", "event": "opened", "timestamp": MS},
    ),
    (
        "v2 event timestamp in ms",
        ENTITY,
        {},
        {"type": "person", "action": "event", "identifiers": {"id": "edge"}, "name": "e", "timestamp": MS},
    ),
    (
        "v2 created_at after 2038",
        ENTITY,
        {},
        {
            "type": "person",
            "action": "identify",
            "identifiers": {"id": "edge"},
            "attributes": {"created_at": AFTER_2038},
        },
    ),
    ("NUL in path identifier", IDENTIFY, {"identifier": "a\u0000b"}, {}),
    ("NUL in attribute value", IDENTIFY, {"identifier": "edge"}, {"plan": "a\u0000b"}),
    ("NUL in attribute name", IDENTIFY, {"identifier": "edge"}, {"a\u0000b": "plan"}),
    ("NUL in event name", EVENTS, {"identifier": "edge"}, {"name": "a\u0000b"}),
    ("NUL in event data", EVENTS, {"identifier": "edge"}, {"name": "e", "data": {"k": "a\u0000b"}}),
    (
        "NUL in device token",
        DEVICES,
        {"identifier": "edge"},
        {"device": {"id": "a\u0000b", "platform": "ios"}},
    ),
    ("NUL in segment ids", ADD_TO_SEGMENT, {}, {"ids": ["a\u0000b"]}),
    ("NUL in form field", FORMS, {"form_id": "edge"}, {"data": {"id": "edge", "k": "a\u0000b"}}),
    (
        "NUL in metric href",
        METRICS,
        {},
        {"delivery_id": "RPILAgUBcRhIBqSfeiIwdIYJKxTY", "metric": "clicked", "href": "a\u0000b"},
    ),
    (
        "NUL in v2 identifier",
        ENTITY,
        {},
        {"type": "person", "action": "identify", "identifiers": {"id": "a\u0000b"}},
    ),
]


@pytest.mark.parametrize(
    ("label", "path_parameters", "body"),
    [case[1:] for case in EDGE_CASES],
    ids=[case[0] for case in EDGE_CASES],
)
def test_edge_values_get_documented_answers(
    track: Target, label: str, path_parameters: dict[str, Any], body: Any
) -> None:
    path_parameters = {**path_parameters, **fixed_parameters(label, track).get("path_parameters", {})}
    case = OPERATIONS[label].Case(path_parameters=path_parameters, body=body, media_type="application/json")
    response = call(case, track)
    case.validate_response(response, checks=AS_DOCUMENTED)
    expect_track_answer(label, case, response, track)


# Over every Track endpoint's limit (1 MB for v1 bodies, 32 KB for an entity, 500 KB for a batch).
OVERSIZED = {"padding": "x" * 1_100_000}
BODY_LABELS = [label for label in LABELS if OPERATIONS[label].body]


@pytest.mark.parametrize("label", BODY_LABELS)
def test_oversized_bodies_are_413_in_the_endpoints_envelope(track: Target, label: str) -> None:
    # Deviation (compatibility.md): Customer.io drops these or answers 400; Tidings says 413.
    case = OPERATIONS[label].Case(
        body=OVERSIZED, media_type="application/json", **fixed_parameters(label, track)
    )
    if "{identifier}" in case.path:
        case.path_parameters["identifier"] = "big@example.com"
    if "{form_id}" in case.path:
        case.path_parameters["form_id"] = "big"
    if "{device_id}" in case.path:
        case.path_parameters["device_id"] = "big"
    response = call(case, track)
    case.validate_response(response, checks=AS_DOCUMENTED)
    assert response.status_code == 413, describe(case, response)
    assert error_messages(label, json_body(response)), describe(case, response)


# --- Credentials ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", AUTHENTICATED)
def test_wrong_credentials_are_401(track: Target, label: str) -> None:
    operation = OPERATIONS[label]
    site_id, _ = track.auth

    def check(case: Any) -> None:
        response = call(case, track, auth=(site_id, "not-the-key"))
        case.validate_response(response, checks=AS_DOCUMENTED)
        assert response.status_code == 401, describe(case, response)

    strategy = operation.as_strategy(GenerationMode.POSITIVE, **fixed_parameters(label, track))
    run_cases(strategy, check, max_examples=CREDENTIAL_EXAMPLES)


@pytest.mark.parametrize("label", UNAUTHENTICATED)
def test_no_credentials_needed_where_the_spec_needs_none(track: Target, label: str) -> None:
    """The spec: `/unsubscribe/{delivery_id}`, `/api/v1/metrics` and `/api/v1/push/events` take no auth."""
    operation = OPERATIONS[label]

    def check(case: Any) -> None:
        response = case.call(base_url=track.base_url, timeout=30)
        case.validate_response(response, checks=AS_DOCUMENTED)
        assert response.status_code != 401, describe(case, response)
        expect_track_answer(label, case, response, track)

    run_cases(operation.as_strategy(GenerationMode.POSITIVE, **fixed_parameters(label, track)), check)

"""Conformance: Customer.io's own OpenAPI files, run by schemathesis against a live Tidings.

The spec files in ``specs/`` are Customer.io's published documents, byte for byte. They are read into
memory and adjusted there, never on disk:

- every ``oneOf`` is read as ``anyOf``. Customer.io writes ``oneOf`` for "one of these shapes" even where
  the shapes overlap (the three plain-string branches of a Track path identifier, metric kinds whose
  ``metric`` enums share values, merge sides without ``required``), which makes the keyword unsatisfiable:
  no value matches exactly one branch, so schemathesis could generate nothing. ``anyOf`` keeps every
  shape the authors meant.
- each test module may lay an overlay of Tidings' deliberate deviations over the spec (each one is a row
  in ``docs/compatibility.md``), so the standard checks hold Tidings to its documented behaviour.

Every generated request goes through :func:`run_cases`: a small, deterministic Hypothesis run per
operation, so a conformance module stays well under a few minutes per backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

SPECS = Path(__file__).resolve().parent / "specs"
TRACK_SPEC = SPECS / "customerio-track-api.openapi.json"
PIPELINES_SPEC = SPECS / "customerio-pipelines-api.openapi.json"

#: Every response: never a 5xx.
NO_SERVER_ERROR = [not_a_server_error]
#: Valid requests: no 5xx, a documented status, and a body matching the documented schema.
AS_DOCUMENTED = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

MAX_EXAMPLES = 25

SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # Shrinking a failure replays requests; keep it, but bounded.
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    # Generated bodies from big schemas (Track v2 entities) are large and slow to build by design, and
    # some operations filter many draws (path identifiers that must survive URL encoding).
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    print_blob=False,
)


def read_spec(path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    _one_of_as_any_of(raw)
    return raw


def _one_of_as_any_of(node: Any) -> None:
    if isinstance(node, dict):
        if "oneOf" in node:
            node["anyOf"] = node.pop("oneOf")
        for value in node.values():
            _one_of_as_any_of(value)
    elif isinstance(node, list):
        for value in node:
            _one_of_as_any_of(value)


def load_schema(raw: dict[str, Any]) -> Any:
    """A schemathesis schema for ``raw``, independent of any schemathesis config file on disk."""
    return schemathesis.openapi.from_dict(raw, config=schemathesis.Config())


def run_cases(
    strategy: st.SearchStrategy[Any], test: Callable[[Any], None], *, max_examples: int = MAX_EXAMPLES
) -> None:
    """Run ``test`` on the cases ``strategy`` draws, under :data:`SETTINGS`."""

    @hypothesis.settings(SETTINGS, max_examples=max_examples)
    @given(case=strategy)
    def run(case: Any) -> None:
        test(case)

    run()


def run_each(strategies: list[st.SearchStrategy[Any]], test: Callable[[Any], None]) -> None:
    """Run ``test`` once on a case from each strategy (the spec's explicit examples)."""

    @hypothesis.settings(SETTINGS, max_examples=1, phases=[Phase.generate])
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        for strategy in strategies:
            test(data.draw(strategy))

    run()


def describe(case: Any, response: Any) -> str:
    """The request and the answer, for a failure message."""
    body = "<none>" if type(case.body).__name__ == "NotSet" else json.dumps(case.body, default=str)[:2000]
    return (
        f"\n{case.method} {response.request.url}\n"
        f"request body: {body}\n"
        f"response: {response.status_code} {response.text[:2000]}"
    )


def json_body(response: Any) -> Any:
    try:
        return json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"response is not JSON: {response.content[:500]!r}") from exc

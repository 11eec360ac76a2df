"""Fixtures and helpers for segment tests: a server per backend whose clock the tests may move
(``POST /_tidings/clock``), so these tests do not share the session server, and a fresh workspace per test.

Real-time membership changes commit with the change itself, so tests assert right after a 200. Only bulk
builds and time-window timers run in the worker; :func:`wait_built` and :func:`wait_for_timers` poll for
those with a deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, serve, workspace_api
from tests.harness import Api, Server

DAY = 86400
DEADLINE_SECONDS = 15.0
# Builds step through 25 people keys at a time, so every build here runs in several steps, with real-time
# writes landing between them, and match each step in parts of 5 keys.
SERVER_ENV = {
    "TIDINGS_CLOCK_CONTROL": "true",
    "TIDINGS_WORKER_POLL_SECONDS": "0.1",
    "TIDINGS_SEGMENT_BUILD_STEP": "25",
    "TIDINGS_SEGMENT_BUILD_PART": "5",
}

Json = dict[str, Any]


@pytest.fixture(scope="package", params=BACKENDS)
def clock_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server of each backend with clock control on, for the segment tests only."""
    backend: str = request.param
    yield from serve(backend, tmp_path_factory.mktemp(f"segments-{backend}"), **SERVER_ENV)


@pytest.fixture
def api(clock_server: Server) -> Iterator[Api]:
    yield from workspace_api(clock_server)


@pytest.fixture
def other_api(clock_server: Server) -> Iterator[Api]:
    """A second workspace on the same server, for isolation tests."""
    yield from workspace_api(clock_server)


# -- helpers -------------------------------------------------------------------------------------------


def ok(response: httpx.Response) -> Json:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    body: Json = response.json() if response.content.strip() else {}
    return body


def app_error(response: httpx.Response, status: int | tuple[int, ...]) -> str:
    """Assert an App API error envelope with this status; return its detail."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, response.text
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert errors[0]["status"] == str(response.status_code)
    detail: str = errors[0]["detail"]
    return detail


def wait_until(check: Callable[[], bool], what: str, timeout: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def server_now(api: Api) -> int:
    """The server's clock (moved by earlier tests), not the local one."""
    return advance(api, 0)


def advance(api: Api, seconds: float) -> int:
    now: int = ok(api.app.post("/_tidings/clock", json={"advance": seconds}))["now"]
    return now


def get_segment(api: Api, segment_id: int) -> Json:
    segment: Json = ok(api.app.get(f"/v1/segments/{segment_id}"))["segment"]
    return segment


def create_segment(api: Api, name: str, conditions: Json | None = None, *, wait: bool = True) -> int:
    spec: Json = {"name": name}
    if conditions is not None:
        spec["conditions"] = conditions
    segment_id: int = ok(api.app.post("/v1/segments", json={"segment": spec}))["segment"]["id"]
    if conditions is not None and wait:
        wait_built(api, segment_id)
    return segment_id


def wait_built(api: Api, segment_id: int) -> Json:
    """Poll until the bulk build of a data-driven segment finished (the worker runs it)."""
    found: Json = {}

    def finished() -> bool:
        found.update(get_segment(api, segment_id))
        return bool(found["state"] == "finished")

    wait_until(finished, f"segment {segment_id} to finish building")
    return found


def membership_page(api: Api, segment_id: int, **params: Any) -> Json:
    return ok(api.app.get(f"/v1/segments/{segment_id}/membership", params=params))


def members(api: Api, segment_id: int, *, limit: int = 1000) -> set[str]:
    """The ids of everyone in a segment, read page by page."""
    found: list[str] = []
    start = ""
    for _ in range(1000):
        params: Json = {"limit": limit}
        if start:
            params["start"] = start
        page = membership_page(api, segment_id, **params)
        found.extend(page["ids"])
        start = page["next"]
        if not start:
            break
    assert len(found) == len(set(found)), f"a member appeared twice: {found}"
    return set(found)


def search(api: Api, condition: Json, *, limit: int = 1000) -> set[str]:
    """The ids of everyone ``POST /v1/customers`` finds with this filter, page by page."""
    found: list[str] = []
    start = ""
    for _ in range(1000):
        params: Json = {"limit": limit}
        if start:
            params["start"] = start
        page = ok(api.app.post("/v1/customers", params=params, json={"filter": condition}))
        found.extend(page["ids"])
        start = page["next"]
        if not start:
            break
    assert len(found) == len(set(found)), f"a person appeared twice: {found}"
    return set(found)


def segments_of(api: Api, identifier: str, id_type: str = "id") -> set[int]:
    response = api.app.get(f"/v1/customers/{identifier}/segments", params={"id_type": id_type})
    return {segment["id"] for segment in ok(response)["segments"]}


def segment_activities(api: Api, identifier: str, id_type: str = "id") -> list[tuple[str, int]]:
    """(entered_segment | exited_segment, segment id) from a person's activity log, oldest first."""
    log = api.activities(identifier, id_type, limit=100)
    return [
        (item["type"], int(item["data"]["segment_id"]))
        for item in reversed(log)
        if item["type"] in ("entered_segment", "exited_segment")
    ]


def segment_moves(api: Api, segment_id: int) -> list[tuple[str, bool]]:
    """(customer id, entered) of every entry into and exit from the segment recorded in the workspace's
    activity logs, in order."""
    rows = api.server.sql(
        "SELECT p.customer_id, a.type, a.data FROM activities a JOIN people p ON p.id = a.person_id "
        "WHERE a.workspace_id = :w AND a.type IN ('entered_segment', 'exited_segment') ORDER BY a.id",
        w=api.creds.workspace_id,
    )
    moves = []
    for customer_id, kind, data in rows:
        document = json.loads(data) if isinstance(data, str) else data
        if int(document["segment_id"]) == segment_id:
            moves.append((customer_id, kind == "entered_segment"))
    return moves


def due_timers(api: Api, now: int) -> int:
    rows = api.server.sql(
        "SELECT count(*) FROM segment_timers WHERE workspace_id = :w AND due_at <= :now",
        w=api.creds.workspace_id,
        now=now,
    )
    count: int = rows[0][0]
    return count


def orphan_rows(api: Api) -> int:
    """Memberships and timers of this workspace whose person no longer exists."""
    count = 0
    for table in ("segment_memberships", "segment_timers"):
        rows = api.server.sql(
            f"SELECT count(*) FROM {table} WHERE workspace_id = :w "
            "AND NOT EXISTS (SELECT 1 FROM people WHERE people.id = person_id)",
            w=api.creds.workspace_id,
        )
        count += rows[0][0]
    return count


def wait_for_timers(api: Api) -> None:
    """Poll until the worker has run every timer of this workspace due at the server's current time."""
    wait_until(lambda: due_timers(api, server_now(api)) == 0, "the worker to run the due segment timers")


def identify(api: Api, identifier: str, **attributes: Any) -> None:
    ok(api.track.put(f"/api/v1/customers/{identifier}", json=attributes))


def track(api: Api, identifier: str, name: str, **body: Any) -> None:
    ok(api.track.post(f"/api/v1/customers/{identifier}/events", json={"name": name, **body}))


def attribute(field: str, operator: str, value: Any = None, **extra: Any) -> Json:
    """An attribute condition: ``{"attribute": {"field", "operator", "value"?, ...}}``."""
    body: Json = {"field": field, "operator": operator, **extra}
    if value is not None:
        body["value"] = value
    return {"attribute": body}

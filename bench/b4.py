"""B4 — real-time membership: what keeping 100 data-driven segments current adds to each write.

One server per backend with two workspaces holding the same generated people and events (SQL, as in B3):
one without segments, one with 100 data-driven segments of realistic variety, all built before measuring:

- 40 attribute conditions on 10 attributes (text, number, boolean and relative-date operators, ``in``,
  ``exists``, some inverted),
- 30 event conditions on 10 event names (performed ever, counts within windows, at most / exactly, first or
  last occurrence, an event-data filter, not performed),
- 20 ``and`` / ``or`` / ``not`` combinations of attributes and events,
- 10 ``segment`` references to earlier segments.

Then, sequentially over ONE keep-alive connection (latency, not throughput; httpx), the same request mix
goes to both workspaces, interleaved request by request so that both see the same machine: (a) identify of
a new person with 3 attributes, (b) identify changing one attribute of an existing person, (c) an event of
an existing person. The figure is the p99 latency per kind with 100 segments minus the p99 without.

Afterwards every segment's membership is compared with a fresh evaluation of its condition over the
workspace (the compiler's SQL): real-time updates kept all 100 exact.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.b3 import MARGIN_SECONDS, Dataset, Progress, div_sql, generate, hash_sql, pick_sql
from bench.load import machine_load
from bench.server import RunningServer, start_server, stop_server, throwaway_database
from tidings.db import Database
from tidings.db.migrate import upgrade
from tidings.models import Person, SegmentMembership
from tidings.segments import compiler
from tidings.segments.conditions import parse
from tidings.workspaces.schemas import NewWorkspace
from tidings.workspaces.service import create_workspace

KINDS = ("identify_new", "identify_change", "event")
KIND_LABELS = {
    "identify_new": "identify, new person (3 attributes)",
    "identify_change": "identify, one attribute changed",
    "event": "event of an existing person",
}
EVENT_NAMES = (
    "page_viewed",
    "added_to_cart",
    "purchase",
    "signed_in",
    "searched",
    "shared",
    "reviewed",
    "refunded",
    "subscribed",
    "signed_out",
)
PLANS = ("free", "pro", "team")
COUNTRIES = ("de", "fr", "us", "uk", "es", "it", "jp", "br")
LANGUAGES = ("en", "de", "fr", "es", "pt")
COMPANIES = ("Acme Inc", "Acme GmbH", "Globex Inc", "Initech", "Umbrella Ltd")
CITIES = ("Berlin", "Paris", "Lyon", "San Diego", "San Jose", "Tokyo", "Porto", "London")
DAY = 86400
HOUR = 3600
SEED = 777
POLL_SECONDS = 0.05
BUILD_TIMEOUT_SECONDS = 1800.0

Json = dict[str, Any]


# -- the data ---------------------------------------------------------------------------------------------


def b4_attributes(now: int, dialect: str, i: str) -> dict[str, str]:
    """Ten attributes, each from its own hash of the person's row number."""

    def h(n: int) -> str:
        return hash_sql(i, SEED + n)

    def boolean(value: str) -> str:
        truth = f"CASE WHEN {value} THEN 'true' ELSE 'false' END"
        return f"(CASE WHEN {value} THEN true ELSE false END)" if dialect == "postgres" else f"json({truth})"

    # Whole hours back from now, minus 1 to 1799 s: relative-date windows of whole days hold the same
    # people for 30 minutes (see bench.b3).
    company = pick_sql(div_sql(dialect, h(6), 4), COMPANIES)
    hours = f"({h(7)} % {730 * 24})"
    second = f"(1 + {div_sql(dialect, h(7), 730 * 24)} % {MARGIN_SECONDS - 1})"
    return {
        "plan": pick_sql(h(0), PLANS),
        "age": f"(18 + {h(1)} % 60)",
        "country": pick_sql(h(2), COUNTRIES),
        "score": f"({h(3)} % 1001)",
        "vip": boolean(f"{h(4)} % 10 = 0"),
        "language": pick_sql(h(5), LANGUAGES),
        "company": f"(CASE WHEN {h(6)} % 4 = 0 THEN NULL ELSE {company} END)",
        "signup_at": f"({now} - {hours} * {HOUR} - {second})",
        "city": pick_sql(h(8), CITIES),
        "lifetime_value": f"(({h(9)} % 200000) / 100.0)",
    }


# -- the 100 segments -------------------------------------------------------------------------------------


def attr(field: str, operator: str, value: Any = None, *, inverse: bool = False, **extra: Any) -> Json:
    test: Json = {"field": field, "operator": operator, **extra}
    if value is not None:
        test["value"] = value
    if inverse:
        test["inverse"] = True
    return {"attribute": test}


def event(name: str, **spec: Any) -> Json:
    return {"event": {"name": name, **spec}}


def at_least(n: int, days: float | None = None) -> Json:
    spec: Json = {"count": {"operator": "at_least", "value": n}}
    if days is not None:
        spec["within"] = {"days": days}
    return spec


ATTRIBUTE_SEGMENTS: tuple[Json, ...] = (
    attr("plan", "eq", "pro"),
    attr("plan", "eq", "team"),
    attr("plan", "in", values=["pro", "team"]),
    attr("plan", "eq", "free", inverse=True),
    attr("age", "gt", 30),
    attr("age", "lt", 25),
    attr("age", "between", values=[25, 40]),
    attr("age", "gte", 60),
    attr("country", "eq", "de"),
    attr("country", "in", values=["fr", "es", "it"]),
    attr("country", "eq", "us", inverse=True),
    attr("country", "starts_with", "u"),
    attr("score", "gt", 500),
    attr("score", "lte", 100),
    attr("score", "between", values=[200, 300]),
    attr("score", "gte", 900),
    attr("vip", "is_true"),
    attr("vip", "is_false"),
    attr("vip", "exists"),
    attr("vip", "is_true", inverse=True),
    attr("language", "eq", "en"),
    attr("language", "in", values=["de", "fr"]),
    attr("language", "contains", "e"),
    attr("language", "exists"),
    attr("company", "exists"),
    attr("company", "starts_with", "Acme"),
    attr("company", "ends_with", "Inc"),
    attr("company", "exists", inverse=True),
    attr("signup_at", "newer_than", days=30),
    attr("signup_at", "older_than", days=60),
    attr("signup_at", "newer_than", days=7),
    attr("signup_at", "older_than", days=365),
    attr("city", "eq", "Berlin"),
    attr("city", "starts_with", "San"),
    attr("city", "contains", "o"),
    attr("city", "in", values=["Paris", "Lyon"]),
    attr("lifetime_value", "gt", 1000),
    attr("lifetime_value", "lt", 50),
    attr("lifetime_value", "between", values=[100, 500]),
    attr("lifetime_value", "exists"),
)


def _event_segments() -> tuple[Json, ...]:
    """Three per event name: performed ever, a count within a window, and one more form."""
    windows = (7, 30, 90)
    extra: tuple[Callable[[str], Json], ...] = (
        lambda name: event(name, count={"operator": "at_most", "value": 1}, within={"days": 30}),
        lambda name: event(name, count={"operator": "exactly", "value": 2}),
        lambda name: event(name, timing={"which": "last", "operator": "newer_than", "days": 14}),
        lambda name: event(name, timing={"which": "first", "operator": "older_than", "days": 60}),
        lambda name: event(name, within={"days": 30}, inverse=True),
        lambda name: event(name, filters=[{"field": "amount", "operator": "gt", "value": 100}]),
    )
    found: list[Json] = []
    for n, name in enumerate(EVENT_NAMES):
        found.append(event(name))
        found.append(event(name, **at_least(2 + n % 3, windows[n % 3])))
        found.append(extra[n % len(extra)](name))
    return tuple(found)


EVENT_SEGMENTS = _event_segments()

COMBINED_SEGMENTS: tuple[Json, ...] = (
    {"and": [attr("plan", "eq", "pro"), event("purchase", **at_least(2, 30))]},
    {"or": [attr("vip", "is_true"), attr("score", "gt", 900)]},
    {
        "and": [
            attr("country", "eq", "de"),
            {"or": [event("searched", within={"days": 7}), event("page_viewed", **at_least(5, 30))]},
        ]
    },
    {"not": {"or": [attr("plan", "eq", "free"), event("refunded")]}},
    {"and": [attr("age", "between", values=[18, 30]), event("signed_in", **at_least(3, 30))]},
    {"or": [event("purchase", **at_least(4, 90)), attr("lifetime_value", "gt", 1500)]},
    {"and": [attr("language", "eq", "fr"), attr("country", "in", values=["fr", "uk"])]},
    {
        "and": [
            event("added_to_cart", within={"days": 7}),
            event("purchase", within={"days": 7}, inverse=True),
        ]
    },
    {"or": [attr("company", "ends_with", "GmbH"), attr("city", "eq", "Berlin")]},
    {"and": [attr("signup_at", "newer_than", days=30), event("subscribed", inverse=True)]},
    {"and": [attr("plan", "in", values=["pro", "team"]), attr("score", "gte", 500), attr("vip", "is_true")]},
    {"or": [event("shared", **at_least(2, 30)), event("reviewed", **at_least(2, 30))]},
    {"not": attr("company", "exists")},
    {"and": [attr("age", "gte", 40), {"not": event("signed_out", within={"days": 30})}]},
    {
        "or": [
            {"and": [attr("plan", "eq", "team"), attr("age", "lt", 30)]},
            event("purchase", **at_least(3, 30)),
        ]
    },
    {"and": [event("page_viewed", **at_least(3, 7)), attr("city", "starts_with", "San")]},
    {"and": [attr("lifetime_value", "between", values=[500, 1500]), event("refunded", within={"days": 90})]},
    {"or": [attr("language", "in", values=["es", "pt"]), attr("country", "eq", "br")]},
    {
        "and": [
            event("signed_in", timing={"which": "last", "operator": "older_than", "days": 30}),
            attr("vip", "is_false"),
        ]
    },
    {
        "and": [
            attr("score", "lt", 200),
            event("searched", **at_least(2, 90)),
            attr("plan", "eq", "free", inverse=True),
        ]
    },
)


# The first 90 segments; the last 10 (reference_documents) use some of these.
BASE_SEGMENTS: tuple[Json, ...] = (*ATTRIBUTE_SEGMENTS, *EVENT_SEGMENTS, *COMBINED_SEGMENTS)


def reference_documents(ids: list[int]) -> list[Json]:
    """Ten conditions on membership of earlier segments (``ids``: those of BASE_SEGMENTS, in order)."""

    def seg(k: int, *, inverse: bool = False) -> Json:
        body: Json = {"id": ids[k]}
        if inverse:
            body["inverse"] = True
        return {"segment": body}

    return [
        seg(0),  # plan eq pro
        {"and": [seg(1), event("purchase", within={"days": 30})]},
        {"or": [seg(16), seg(15)]},  # vip, or score ≥ 900
        {"and": [seg(8), seg(4)]},  # in Germany and older than 30
        seg(40, inverse=True),  # never viewed a page
        {"and": [seg(70), attr("age", "lt", 35)]},  # pro with 2 purchases in 30 days, young
        {"or": [seg(71), seg(72)]},
        {"and": [seg(28), {"not": seg(43)}]},  # signed up in 30 days, never added to cart
        {"and": [seg(3), seg(12), seg(20)]},
        {"or": [seg(84), event("subscribed", **at_least(2, 90))]},
    ]


# -- the server and its workspaces ------------------------------------------------------------------------


def _create_workspace(database_url: str, name: str) -> NewWorkspace:
    db = Database(database_url)
    try:
        return db.run(lambda s: create_workspace(s, name, now=int(time.time())))
    finally:
        db.close()


def _max_person_id(database_url: str) -> int:
    db = Database(database_url)
    try:
        with db.read_session() as session:
            return int(session.scalar(select(func.max(Person.id))) or 0)
    finally:
        db.close()


def create_segments(client: httpx.Client, app_key: str) -> list[int]:
    headers = {"Authorization": f"Bearer {app_key}"}

    def create(n: int, conditions: Json) -> int:
        response = client.post(
            "/v1/segments", json={"segment": {"name": f"B4 {n}", "conditions": conditions}}, headers=headers
        )
        response.raise_for_status()
        return int(response.json()["segment"]["id"])

    ids = [create(n, document) for n, document in enumerate(BASE_SEGMENTS)]
    ids += [create(len(ids) + n, document) for n, document in enumerate(reference_documents(ids))]
    return ids


def wait_built(client: httpx.Client, app_key: str, ids: list[int]) -> None:
    headers = {"Authorization": f"Bearer {app_key}"}
    wanted = set(ids)
    deadline = time.monotonic() + BUILD_TIMEOUT_SECONDS
    while True:
        response = client.get("/v1/segments", headers=headers)
        response.raise_for_status()
        pending = [s for s in response.json()["segments"] if s["id"] in wanted and s["state"] != "finished"]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} B4 segments did not finish building")
        time.sleep(POLL_SECONDS)


# -- the measured requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latencies:
    samples: tuple[float, ...]

    def percentile(self, percent: float) -> float:
        """Nearest rank, in milliseconds."""
        ordered = sorted(self.samples)
        if not ordered:
            return 0.0
        index = min(len(ordered) - 1, max(0, math.ceil(percent / 100 * len(ordered)) - 1))
        return ordered[index] * 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples) * 1000 if self.samples else 0.0


@dataclass(frozen=True)
class B4Kind:
    kind: str
    none: Latencies
    hundred: Latencies

    @property
    def added_p50_ms(self) -> float:
        return self.hundred.p50_ms - self.none.p50_ms

    @property
    def added_p99_ms(self) -> float:
        return self.hundred.p99_ms - self.none.p99_ms


def _request(kind: str, n: int, existing: int, label: str) -> tuple[str, str, Json]:
    """Method, path and body of the n-th request of a kind."""
    if kind == "identify_new":
        body: Json = {
            "plan": PLANS[n % 3],
            "age": 18 + (n * 7) % 60,
            "country": COUNTRIES[n % len(COUNTRIES)],
        }
        return "PUT", f"/api/v1/customers/new-{label}-{n}", body
    # Existing people, spread over the workspace (a stride coprime with typical sizes).
    person = f"u{(n * 7919) % existing}"
    if kind == "identify_change":
        changes: tuple[Json, ...] = (
            {"plan": PLANS[(n // 4) % 3]},
            {"score": (n * 37) % 1001},
            {"country": COUNTRIES[(n // 4) % len(COUNTRIES)]},
            {"vip": n % 8 == 1},
        )
        return "PUT", f"/api/v1/customers/{person}", changes[n % len(changes)]
    name = EVENT_NAMES[n % len(EVENT_NAMES)]
    return "POST", f"/api/v1/customers/{person}/events", {"name": name, "data": {"amount": (n * 13) % 200}}


def measure(
    server: RunningServer,
    workspaces: tuple[NewWorkspace, NewWorkspace],
    *,
    requests: int,
    warmup: int,
    existing: int,
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Send ``warmup + requests`` rounds; each round sends every kind to both workspaces. Return the
    latencies (seconds) per kind for each workspace, and how many answers were not 200."""
    label = f"{int(time.time())}"
    samples: tuple[dict[str, list[float]], dict[str, list[float]]] = (
        {kind: [] for kind in KINDS},
        {kind: [] for kind in KINDS},
    )
    failed = 0
    auths = [(w.site_id, w.track_api_key) for w in workspaces]
    with httpx.Client(base_url=server.base_url, timeout=60, limits=httpx.Limits(max_connections=1)) as client:
        for n in range(warmup + requests):
            for kind in KINDS:
                method, path, body = _request(kind, n, existing, label)
                for which, auth in enumerate(auths):
                    started = time.perf_counter()
                    response = client.request(method, path, json=body, auth=auth)
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        failed += 1
                    if n >= warmup:
                        samples[which][kind].append(elapsed)
    return samples[0], samples[1], failed


# -- the check --------------------------------------------------------------------------------------------


def inconsistent_segments(
    database_url: str, workspace_id: int, ids: list[int], conditions: list[Json]
) -> list[int]:
    """Segments whose stored membership differs from a fresh evaluation of their condition now."""
    db = Database(database_url)
    wrong = []
    try:
        with db.read_session() as session:
            ctx = compiler.Context(workspace_id=workspace_id, now=int(time.time()))
            for segment_id, document in zip(ids, conditions, strict=True):
                expected = set(
                    session.scalars(
                        select(Person.id).where(
                            Person.workspace_id == workspace_id, compiler.predicate(parse(document), ctx)
                        )
                    )
                )
                stored = set(
                    session.scalars(
                        select(SegmentMembership.person_id).where(SegmentMembership.segment_id == segment_id)
                    )
                )
                if expected != stored:
                    wrong.append(segment_id)
    finally:
        db.close()
    return wrong


# -- the benchmark ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class B4Result:
    backend: str
    people: int
    events: int
    segments: int
    generation_seconds: float
    build_seconds: float
    requests: int
    kinds: tuple[B4Kind, ...]
    failed: int
    # Segments whose membership differed from a fresh evaluation; None when not checked (see run_b4).
    inconsistent: tuple[int, ...] | None
    load_average: str

    @property
    def worst_added_p99_ms(self) -> float:
        return max(kind.added_p99_ms for kind in self.kinds)

    @property
    def consistent(self) -> bool:
        return self.inconsistent == ()


def _print(message: str) -> None:
    print(f"  {message}", flush=True)


def run_b4(
    backend: str,
    workdir: Path,
    *,
    people: int,
    events: int,
    requests: int,
    warmup: int = 20,
    progress: Progress = _print,
) -> B4Result:
    load_at_start = machine_load()
    with ExitStack() as stack:
        url = stack.enter_context(throwaway_database(backend, workdir))
        upgrade(url)
        workspaces = (_create_workspace(url, "bench-b4-none"), _create_workspace(url, "bench-b4-hundred"))
        now = int(time.time())
        generation = 0.0
        for workspace in workspaces:
            data = Dataset(
                workspace.workspace_id,
                people,
                events,
                now=now,
                first_id=_max_person_id(url) + 1,
                event_names=EVENT_NAMES,
                attributes=functools.partial(b4_attributes, now),
            )
            progress(f"workspace {workspace.workspace_id}: {people:,} people and {events:,} events …")
            generation += generate(backend, url, data, lambda _: None)
        progress(f"generated in {generation:.1f} s; creating and building 100 segments …")
        server = start_server(url, backend, workdir, migrate_first=False)
        stack.callback(stop_server, server)
        hundred = workspaces[1]
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            started = time.perf_counter()
            ids = create_segments(client, hundred.app_api_key)
            wait_built(client, hundred.app_api_key, ids)
            build = time.perf_counter() - started
        progress(
            f"{len(ids)} segments built in {build:.1f} s; {requests:,} requests per kind and workspace …"
        )
        none_samples, hundred_samples, failed = measure(
            server, workspaces, requests=requests, warmup=warmup, existing=people
        )
        documents = [*BASE_SEGMENTS, *reference_documents(ids[: len(BASE_SEGMENTS)])]
        after_generation = time.time() - now
        # Past the margin a window edge may have passed between the writes and the check.
        inconsistent = (
            tuple(inconsistent_segments(url, hundred.workspace_id, ids, documents))
            if after_generation < MARGIN_SECONDS
            else None
        )
    kinds = tuple(
        B4Kind(kind, Latencies(tuple(none_samples[kind])), Latencies(tuple(hundred_samples[kind])))
        for kind in KINDS
    )
    for kind in kinds:
        progress(
            f"{kind.kind}: p50 {kind.none.p50_ms:.1f} → {kind.hundred.p50_ms:.1f} ms, "
            f"p99 {kind.none.p99_ms:.1f} → {kind.hundred.p99_ms:.1f} ms (added {kind.added_p99_ms:+.1f} ms)"
        )
    return B4Result(
        backend,
        people,
        events,
        len(ids),
        generation,
        build,
        requests,
        kinds,
        failed,
        inconsistent,
        load_at_start,
    )

"""B8 — LLM actions: N journeys reach an LLM action at once, and the model answers in 500 ms.

The model is the stand-in provider of the AI tests (``tests/ai/standins.py``: Anthropic's, OpenAI's and
Gemini's wire formats, reached through the official SDKs inside Tidings) in its own process (``python -m
bench.b8 standin``), so it never shares a GIL with the server; it answers every request after ``delay``
seconds, with the answer the prompt calls for, and counts the requests it is serving at once.

Each server: ``tidings serve`` (its in-process worker on) on a fresh database, with a catalogue of one
model per provider pointed at the stand-in, and ``TIDINGS_AI_CONCURRENCY`` as given (unset: the default).
N people are identified (first name, email). Then, for each provider:

1. Warm-up (not timed): a campaign without the hold runs a few journeys through the model, so the SDK is
   imported and its client built before the clock runs, as on a server that has been up a while.
2. Hold (not timed): a campaign triggered by ``bench_llm`` whose workflow is ``[delay (hold), llm, branch on
   the answer → set_journey_attributes]`` is activated, and the N events are sent through
   ``/api/v2/batch``. Once every journey waits at the hold, the campaign is paused (its journeys leave the
   due index) and the hold's time is left to pass: every journey is now overdue at the same block.
3. Measured: the clock starts, ``POST /v1/campaigns/{id}/resume`` makes every held journey due at once
   (docs/campaigns.md: overdue steps run at once), and the clock stops when every journey has finished
   (a SQL count of the campaign's journeys, polled every 50 ms). Each journey's LLM action renders its
   prompt (``{{ customer.first_name }}``, ``{{ event.text }}``), calls the model, stores the two output
   fields, and the branch sets a journey attribute from the answer.

Checked after each run: every journey completed, each with the answer for its own person and the branch's
mark; the stand-in received exactly N requests, each person's prompt exactly once, every one with the key;
every LLM action's log says one attempt; the ledger holds N entries of the model's credits. The baseline
is serial time, N x delay (500 s for 1,000 journeys at 500 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvloop
from sqlalchemy import func, select

# The AI tests' stand-in provider; the benchmark runs it in a process of its own (serve_standin).
from tests.ai.standins import Recorded, StandIn, sample

from bench.b6 import _new_workspace, _post_all, _run
from bench.load import basic_auth, machine_load
from bench.server import HelperProcess, RunningServer, start_server, stop_server, throwaway_database
from tidings.config import Settings
from tidings.db import Database
from tidings.models import CreditEntry, Journey, JourneyStep, Person
from tidings.workspaces.schemas import NewWorkspace

Json = dict[str, Any]
Progress = Callable[[str], None]

PROVIDERS = ("openai", "anthropic", "google")
KEY = "sk-bench-b8"
# One catalogue model per provider, each with its own price, so the ledger check sees which one ran.
MODELS: dict[str, Json] = {
    "openai": {"id": "b8-openai", "provider": "openai", "model": "llama3.1", "class": "quick",
               "credits": 0.5},
    "anthropic": {"id": "b8-anthropic", "provider": "anthropic", "model": "claude-haiku-4-5",
                  "class": "quick", "credits": 2},
    "google": {"id": "b8-google", "provider": "google", "model": "gemini-2.5-flash", "class": "quick",
               "credits": 1},
}  # fmt: skip
DEFAULT_CONCURRENCY: int = Settings.model_fields["ai_concurrency"].default
TRIGGER_EVENT = "bench_llm"
HOLD_BLOCK = "hold"
LLM_BLOCK = "classify"
PROMPT = "Classify the sentiment of this review by {{ customer.first_name }}: {{ event.text }}"
PROMPT_PATTERN = re.compile(r"Classify the sentiment of this review by (.*?): (.*)", re.S)
FINISHED = ("completed", "exited", "failed", "rejected")
POLL_SECONDS = 0.05
TARGET_SECONDS = 10.0
TARGET_JOURNEYS = 1_000


def _print(message: str) -> None:
    print(f"  {message}", flush=True)


# -- what each person says and what the model answers -----------------------------------------------------


def person_id(index: int) -> str:
    return f"b8-{index}"


def first_name(index: int) -> str:
    return f"Ada{index}"


def review(index: int) -> str:
    return f"I love this tea ({index})" if index % 2 == 0 else f"The parcel arrived broken ({index})"


def expected_prompt(index: int) -> str:
    return f"Classify the sentiment of this review by {first_name(index)}: {review(index)}"


def model_answer(name: str, text: str) -> Json:
    """What the stand-in model answers to a prompt by ``name`` about ``text``."""
    positive = "love" in text.lower()
    return {"sentiment": "positive" if positive else "negative", "reply": f"Thanks for writing, {name}."}


def expected_attributes(index: int) -> Json:
    answer = model_answer(first_name(index), review(index))
    return {**answer, "route": "thanks" if answer["sentiment"] == "positive" else "sorry"}


def campaign(name: str, trigger: str, model_id: str, hold_seconds: int | None) -> Json:
    hold: list[Json] = []
    if hold_seconds is not None:
        hold = [{"id": HOLD_BLOCK, "type": "delay", "duration": f"{hold_seconds}s"}]
    return {
        "name": name,
        "trigger": {"type": "event", "event": trigger},
        "steps": [
            *hold,
            {
                "id": LLM_BLOCK,
                "type": "llm",
                "model": model_id,
                "prompt": PROMPT,
                "output_fields": [
                    {
                        "name": "sentiment",
                        "type": "single_select",
                        "options": ["positive", "negative", "neutral"],
                        "description": "How the customer feels",
                    },
                    {"name": "reply", "type": "text", "description": "A one-line answer to the review"},
                ],
            },
            {
                "id": "route",
                "type": "branch",
                "condition": {"journey": {"field": "sentiment", "operator": "eq", "value": "positive"}},
                "yes": [
                    {"id": "thanks", "type": "set_journey_attributes", "attributes": {"route": "thanks"}}
                ],
                "no": [{"id": "sorry", "type": "set_journey_attributes", "attributes": {"route": "sorry"}}],
            },
        ],
    }


# -- the stand-in provider, in its own process ------------------------------------------------------------


def serve_standin(delay: float) -> None:
    """``python -m bench.b8 standin``: the stand-in on uvloop, plus a small control server (``GET /``:
    counts, ``GET /?prompts=1``: also every prompt, ``POST /clear``: forget). Prints one JSON line with both
    ports; stops when stdin reaches end of file (the benchmark that started it went away)."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    answered: list[float] = []

    def answer(request: Recorded) -> Json:
        answered.append(time.time())  # on the stand-in's event loop: one thread appends
        found = PROMPT_PATTERN.fullmatch(request.prompt_text)
        if found is None:
            data = sample(request.schema or {})
            return data if isinstance(data, dict) else {}
        return model_answer(found.group(1), found.group(2))

    llm = StandIn(api_key=KEY, delay=delay)
    llm.answer = answer
    llm.start()

    def stats(prompts: bool) -> Json:
        requests = llm.requests
        times = list(answered)
        found: Json = {
            "url": llm.url,
            "requests": len(requests),
            "by_provider": dict(Counter(r.provider for r in requests)),
            "bad_keys": sum(1 for r in requests if r.api_key != KEY),
            "served": llm.served,
            "in_flight": llm.in_flight,
            "peak": llm.peak_in_flight,
            "answers": len(times),
            "first_answer_at": min(times, default=None),
            "last_answer_at": max(times, default=None),
            "cpu_seconds": time.process_time(),
        }
        if prompts:
            found["prompts"] = [r.prompt_text for r in requests]
        return found

    class Control(BaseHTTPRequestHandler):
        def _send(self, body: Json) -> None:
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._send(stats(prompts="prompts=1" in self.path))

        def do_POST(self) -> None:
            llm.clear()
            answered.clear()
            self._send({"cleared": True})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, name="b8-control", daemon=True).start()
    sys.stdout.write(json.dumps({"port": llm.port, "control_port": control.server_address[1]}) + "\n")
    sys.stdout.flush()
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        control.shutdown()
        llm.stop()


@dataclass(frozen=True)
class StandInStats:
    requests: int
    by_provider: dict[str, int]
    bad_keys: int
    served: int
    in_flight: int
    peak: int
    answers: int
    first_answer_at: float | None
    last_answer_at: float | None
    cpu_seconds: float
    prompts: tuple[str, ...] = ()


class StandInProcess(HelperProcess):
    """``python -m bench.b8 standin`` as a child process."""

    def __init__(self, logdir: Path, *, delay: float) -> None:
        super().__init__(logdir, ["bench.b8", "standin", "--delay", str(delay)], "b8-standin", timeout=30.0)
        self.url = f"http://127.0.0.1:{int(self.ports['port'])}"
        self._control = f"http://127.0.0.1:{int(self.ports['control_port'])}"

    def stats(self, *, prompts: bool = False) -> StandInStats:
        answer = self._client.get(f"{self._control}/", params={"prompts": "1"} if prompts else None)
        answer.raise_for_status()
        found = answer.json()
        found.pop("url", None)
        found["prompts"] = tuple(found.get("prompts", ()))
        return StandInStats(**found)

    def clear(self) -> None:
        self._client.post(f"{self._control}/clear").raise_for_status()


@contextmanager
def standin(logdir: Path, *, delay: float) -> Iterator[StandInProcess]:
    process = StandInProcess(logdir, delay=delay)
    try:
        yield process
    finally:
        process.stop()


# -- the server -------------------------------------------------------------------------------------------


def server_env(standin_url: str, concurrency: int | None, credits: float = 100_000) -> dict[str, str]:
    env = {
        "TIDINGS_AI_MODELS": json.dumps(list(MODELS.values())),
        "TIDINGS_ANTHROPIC_API_KEY": KEY,
        "TIDINGS_ANTHROPIC_BASE_URL": standin_url,
        "TIDINGS_GOOGLE_API_KEY": KEY,
        "TIDINGS_GOOGLE_BASE_URL": standin_url,
        "TIDINGS_OPENAI_API_KEY": KEY,
        "TIDINGS_OPENAI_BASE_URL": f"{standin_url}/v1",
        "TIDINGS_AI_INITIAL_CREDITS": str(credits),
    }
    if concurrency is not None:
        env["TIDINGS_AI_CONCURRENCY"] = str(concurrency)
    return env


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants, in seconds (Linux /proc)."""
    total = 0.0
    pending = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").glob("*/children"):
                pending.extend(int(child) for child in task.read_text().split())
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


class Store:
    """Direct reads of the server's database: journey states, and what each run left behind."""

    def __init__(self, database_url: str) -> None:
        self.db = Database(database_url)

    def close(self) -> None:
        self.db.close()

    def states(self, campaign_id: int) -> dict[str, int]:
        """Journeys of the campaign by ``state@block`` (``state`` alone once the block is gone)."""
        with self.db.read_session() as session:
            rows = session.execute(
                select(Journey.state, Journey.block, func.count())
                .where(Journey.campaign_id == campaign_id)
                .group_by(Journey.state, Journey.block)
            )
            return {f"{state}@{block}" if block else str(state): int(n) for state, block, n in rows}

    def latest_resume_at(self, campaign_id: int) -> int:
        with self.db.read_session() as session:
            found = session.scalar(
                select(func.max(Journey.resume_at)).where(Journey.campaign_id == campaign_id)
            )
        return int(found or 0)

    def matching(self, campaign_id: int) -> int:
        """Completed journeys whose attributes are the answer for their own person, and the branch's mark."""
        with self.db.read_session() as session:
            rows = session.execute(
                select(Journey.attributes, Person.customer_id)
                .join(Person, Person.id == Journey.person_id)
                .where(Journey.campaign_id == campaign_id, Journey.state == "completed")
            ).all()
        good = 0
        for attributes, customer_id in rows:
            index = int(str(customer_id).rsplit("-", 1)[1])
            wanted = expected_attributes(index)
            if all((attributes or {}).get(k) == v for k, v in wanted.items()):
                good += 1
        return good

    def single_attempts(self, campaign_id: int) -> tuple[int, tuple[str, ...]]:
        """LLM actions whose log says one attempt and the fields set, and (up to three) entries that do
        not (a retried call: its errors say why)."""
        with self.db.read_session() as session:
            rows = session.execute(
                select(JourneyStep.outcome, JourneyStep.detail).where(
                    JourneyStep.campaign_id == campaign_id, JourneyStep.block == LLM_BLOCK
                )
            ).all()
        good = 0
        odd: list[str] = []
        for outcome, detail in rows:
            if str(outcome).startswith("calling"):
                continue
            if detail and detail.get("attempts") == 1 and detail.get("fields"):
                good += 1
            elif len(odd) < 3:
                odd.append(f"{outcome}: {json.dumps(detail)}")
        return good, tuple(odd)

    def ledger(self, campaign_id: int) -> tuple[int, float]:
        """(entries, credits spent) of the campaign."""
        with self.db.read_session() as session:
            entries, millis = session.execute(
                select(func.count(), func.coalesce(func.sum(CreditEntry.delta_millis), 0)).where(
                    CreditEntry.campaign_id == campaign_id
                )
            ).one()
        return int(entries), -int(millis) / 1000


class Api:
    def __init__(self, server: RunningServer, workspace: NewWorkspace) -> None:
        self.server, self.workspace = server, workspace
        self.app = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {workspace.app_api_key}"},
            timeout=30.0,
        )
        self.track_auth = basic_auth(workspace.site_id, workspace.track_api_key)[1]

    def close(self) -> None:
        self.app.close()

    def create_campaign(self, definition: Json) -> int:
        created = self.app.post("/v1/campaigns", json=definition)
        created.raise_for_status()
        campaign_id = int(created.json()["campaign"]["id"])
        self.state(campaign_id, "activate")
        return campaign_id

    def state(self, campaign_id: int, action: str) -> None:
        self.app.post(f"/v1/campaigns/{campaign_id}/{action}").raise_for_status()

    def batch(self, items: Sequence[Json]) -> None:
        """Through ``/api/v2/batch``, 100 items a request."""
        bodies = [{"batch": list(items[n : n + 100])} for n in range(0, len(items), 100)]
        _run(
            _post_all(
                self.server.base_url, "/api/v2/batch", bodies, concurrency=4, authorization=self.track_auth
            )
        )

    def identify(self, people: int) -> None:
        self.batch(
            [
                {
                    "type": "person",
                    "action": "identify",
                    "identifiers": {"id": person_id(n)},
                    "attributes": {"email": f"{person_id(n)}@example.com", "first_name": first_name(n)},
                }
                for n in range(people)
            ]
        )

    def events(self, name: str, people: int) -> None:
        self.batch(
            [
                {
                    "type": "person",
                    "action": "event",
                    "identifiers": {"id": person_id(n)},
                    "name": name,
                    "attributes": {"text": review(n)},
                }
                for n in range(people)
            ]
        )


def _wait_for(
    what: str, check: Callable[[], bool], timeout: float, server: RunningServer, poll: float = POLL_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if server.process.poll() is not None:
            raise RuntimeError(f"tidings serve exited:\n{_tail(server.log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"B8: {what} did not happen in {timeout:.0f} s\n{_tail(server.log_path)}")
        time.sleep(poll)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


# -- one run ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class B8Run:
    backend: str
    provider: str
    concurrency: int
    journeys: int
    delay: float
    # From just before the resume request to the poll that saw every journey finished.
    seconds: float
    # … to the poll that saw no journey left at the hold (each at its LLM action or past it).
    reached_seconds: float
    # The stand-in's first and last answer, from the same start (its clock is this machine's).
    first_answer_seconds: float
    last_answer_seconds: float
    states: dict[str, int]
    matching: int
    prompts_ok: int
    model_requests: int
    bad_keys: int
    peak_in_flight: int
    single_attempts: int
    # LLM log entries other than one attempt with the fields set (up to three).
    odd_entries: tuple[str, ...]
    ledger_entries: int
    credits_spent: float
    credits_each: float
    server_cpu_seconds: float
    standin_cpu_seconds: float
    load_average: str

    @property
    def serial_seconds(self) -> float:
        return self.journeys * self.delay

    @property
    def ratio(self) -> float:
        return self.serial_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def calls_per_second(self) -> float:
        return self.model_requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def correct(self) -> bool:
        n = self.journeys
        return (
            self.states == {"completed": n}
            and self.matching == n
            and self.prompts_ok == n
            and self.model_requests == n
            and self.bad_keys == 0
            and self.single_attempts == n
            and self.ledger_entries == n
            and math.isclose(self.credits_spent, n * self.credits_each)
        )

    def problems(self) -> str:
        n = self.journeys
        found = []
        if self.states != {"completed": n}:
            found.append(f"states {self.states}")
        for label, value in (
            ("matching answers", self.matching),
            ("prompts", self.prompts_ok),
            ("model requests", self.model_requests),
            ("single attempts", self.single_attempts),
            ("ledger entries", self.ledger_entries),
        ):
            if value != n:
                found.append(f"{label} {value}/{n}")
        found += [f"LLM log: {entry}" for entry in self.odd_entries]
        if self.bad_keys:
            found.append(f"{self.bad_keys} requests without the key")
        if not math.isclose(self.credits_spent, n * self.credits_each):
            found.append(f"credits spent {self.credits_spent:g}, expected {n * self.credits_each:g}")
        return "; ".join(found)


def announce(server: RunningServer) -> None:
    """With ``B8_READY_FILE`` set, write the server's pid there and pause a moment before the clock
    starts, so a profiler can attach for the measured part only (``py-spy record --pid``)."""
    ready = os.environ.get("B8_READY_FILE")
    if ready:
        Path(ready).write_text(str(server.process.pid))
        time.sleep(1.0)


def hold_for(journeys: int) -> int:
    """Seconds of the hold: long enough to send every event and pause before the first journey leaves it."""
    return max(3, math.ceil(2 + journeys / 200))


def warm_up(api: Api, store: Store, llm: StandInProcess, provider: str, people: int) -> None:
    """A few journeys through the model, not timed: the SDK imported, its client built."""
    trigger = f"{TRIGGER_EVENT}_warmup_{provider}"
    campaign_id = api.create_campaign(
        campaign(f"B8 warm-up {provider} {secrets.token_hex(3)}", trigger, MODELS[provider]["id"], None)
    )
    api.events(trigger, people)
    _wait_for(
        f"{provider} warm-up",
        lambda: sum(n for k, n in store.states(campaign_id).items() if k in FINISHED) == people,
        60,
        api.server,
    )
    states = store.states(campaign_id)
    api.state(campaign_id, "archive")
    if states != {"completed": people}:
        raise RuntimeError(f"B8 {provider} warm-up: {states}\n{_tail(api.server.log_path)}")
    llm.clear()


def measure(
    api: Api,
    store: Store,
    llm: StandInProcess,
    *,
    provider: str,
    concurrency: int,
    journeys: int,
    delay: float,
    hold_seconds: int,
    timeout: float,
) -> B8Run:
    server = api.server
    model = MODELS[provider]
    campaign_id = api.create_campaign(
        campaign(f"B8 {provider} {secrets.token_hex(3)}", TRIGGER_EVENT, model["id"], hold_seconds)
    )
    try:
        # Hold: every journey enters and waits at the hold; paused before the first one's time is up.
        api.events(TRIGGER_EVENT, journeys)
        waiting = f"waiting@{HOLD_BLOCK}"
        _wait_for(
            f"{journeys} journeys waiting at the hold",
            lambda: store.states(campaign_id).get(waiting, 0) >= journeys,
            hold_seconds,
            server,
            poll=0.02,
        )
        api.state(campaign_id, "pause")
        held = store.states(campaign_id)
        if held != {waiting: journeys}:
            raise RuntimeError(
                f"B8: journeys left the {hold_seconds} s hold before the pause ({held}); raise hold_seconds"
            )
        # Every hold's time passes while paused: all journeys are overdue at the same block.
        latest = store.latest_resume_at(campaign_id)
        time.sleep(max(0.0, latest + 0.3 - time.time()))
        llm.clear()
        standin_cpu = llm.stats().cpu_seconds
        announce(server)
        load_average = machine_load()
        cpu_before = process_cpu_seconds(server.process.pid)
        started = time.perf_counter()
        wall_started = time.time()
        api.state(campaign_id, "resume")
        reached: float | None = None
        deadline = started + timeout
        while True:
            states = store.states(campaign_id)
            now = time.perf_counter()
            if reached is None and not any(k.endswith(f"@{HOLD_BLOCK}") for k in states):
                reached = now - started
            if sum(n for k, n in states.items() if k in FINISHED) >= journeys or now > deadline:
                break
            if server.process.poll() is not None:
                raise RuntimeError(f"tidings serve exited:\n{_tail(server.log_path)}")
            time.sleep(POLL_SECONDS)
        seconds = now - started
        cpu = process_cpu_seconds(server.process.pid) - cpu_before
        stats = llm.stats(prompts=True)
        expected = Counter(expected_prompt(n) for n in range(journeys))
        seen = Counter(stats.prompts)
        entries, spent = store.ledger(campaign_id)
        single, odd = store.single_attempts(campaign_id)
        return B8Run(
            backend=server.backend,
            provider=provider,
            concurrency=concurrency,
            journeys=journeys,
            delay=delay,
            seconds=seconds,
            reached_seconds=reached if reached is not None else seconds,
            first_answer_seconds=(stats.first_answer_at or wall_started) - wall_started,
            last_answer_seconds=(stats.last_answer_at or wall_started) - wall_started,
            states=states,
            matching=store.matching(campaign_id),
            prompts_ok=sum(1 for prompt, n in seen.items() if n == 1 and prompt in expected),
            model_requests=stats.requests,
            bad_keys=stats.bad_keys,
            peak_in_flight=stats.peak,
            single_attempts=single,
            odd_entries=odd,
            ledger_entries=entries,
            credits_spent=spent,
            credits_each=float(model["credits"]),
            server_cpu_seconds=cpu,
            standin_cpu_seconds=stats.cpu_seconds - standin_cpu,
            load_average=load_average,
        )
    finally:
        api.state(campaign_id, "archive")


# -- the whole benchmark ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class B8Figure:
    backend: str
    provider: str
    concurrency: int
    runs: tuple[B8Run, ...]

    def _median(self, pick: Callable[[B8Run], float]) -> float:
        return statistics.median(pick(run) for run in self.runs) if self.runs else 0.0

    @property
    def seconds(self) -> float:
        return self._median(lambda run: run.seconds)

    @property
    def reached_seconds(self) -> float:
        return self._median(lambda run: run.reached_seconds)

    @property
    def last_answer_seconds(self) -> float:
        return self._median(lambda run: run.last_answer_seconds)

    @property
    def calls_per_second(self) -> float:
        return self._median(lambda run: run.calls_per_second)

    @property
    def ratio(self) -> float:
        return self._median(lambda run: run.ratio)

    @property
    def peak_in_flight(self) -> int:
        return max((run.peak_in_flight for run in self.runs), default=0)

    @property
    def server_cpu_seconds(self) -> float:
        return self._median(lambda run: run.server_cpu_seconds)

    @property
    def standin_cpu_seconds(self) -> float:
        return self._median(lambda run: run.standin_cpu_seconds)

    @property
    def correct(self) -> bool:
        return bool(self.runs) and all(run.correct for run in self.runs)


@dataclass(frozen=True)
class B8Result:
    backend: str
    journeys: int
    delay: float
    figures: tuple[B8Figure, ...]

    @property
    def correct(self) -> bool:
        return all(figure.correct for figure in self.figures)


def run_b8(
    backend: str,
    workdir: Path,
    *,
    journeys: int,
    providers: Sequence[str] = PROVIDERS,
    concurrencies: Sequence[int | None] = (None,),
    repeats: int = 1,
    delay: float = 0.5,
    hold_seconds: int | None = None,
    warmup: int = 8,
    timeout: float = 300.0,
    progress: Progress = _print,
) -> B8Result:
    """For each concurrency setting (None: the server's default), a server on a fresh database; on it, for
    each provider, a warm-up and ``repeats`` measured runs of ``journeys`` journeys."""
    hold = hold_seconds if hold_seconds is not None else hold_for(journeys)
    figures: list[B8Figure] = []
    with standin(workdir, delay=delay) as llm:
        for setting in concurrencies:
            concurrency = setting if setting is not None else DEFAULT_CONCURRENCY
            with throwaway_database(backend, workdir) as url:
                server = start_server(url, backend, workdir, env=server_env(llm.url, setting))
                store = Store(url)
                api = Api(server, _new_workspace(url))
                try:
                    api.identify(max(journeys, warmup))
                    for provider in providers:
                        warm_up(api, store, llm, provider, warmup)
                        runs = []
                        for repeat in range(repeats):
                            run = measure(
                                api,
                                store,
                                llm,
                                provider=provider,
                                concurrency=concurrency,
                                journeys=journeys,
                                delay=delay,
                                hold_seconds=hold,
                                timeout=timeout,
                            )
                            progress(
                                f"{backend} {provider} concurrency {concurrency}, "
                                f"run {repeat + 1}/{repeats}: "
                                f"{journeys:,} journeys done in {run.seconds:.2f} s (all at the LLM action "
                                f"{run.reached_seconds:.2f} s, last answer {run.last_answer_seconds:.2f} s), "
                                f"peak {run.peak_in_flight} in flight, ratio {run.ratio:.0f}, server CPU "
                                f"{run.server_cpu_seconds:.1f} s"
                                + ("" if run.correct else f"; WRONG: {run.problems()}")
                            )
                            runs.append(run)
                        figures.append(B8Figure(backend, provider, concurrency, tuple(runs)))
                finally:
                    api.close()
                    store.close()
                    stop_server(server)
    return B8Result(backend, journeys, delay, tuple(figures))


# -- report -----------------------------------------------------------------------------------------------


def _concurrency(value: int) -> str:
    return f"{value} (default)" if value == DEFAULT_CONCURRENCY else str(value)


def render_b8(results: Sequence[B8Result], stamp: str, skipped: dict[str, str]) -> str:
    first = results[0] if results else None
    journeys = first.journeys if first is not None else TARGET_JOURNEYS
    delay = first.delay if first is not None else 0.5
    serial = journeys * delay
    lines = [
        f"## B8 — LLM actions ({journeys:,} journeys reach an LLM action at once; the model answers in "
        f"{delay * 1000:.0f} ms)",
        "",
        f"{stamp}. `tidings serve` (its in-process worker) on a fresh database per concurrency setting; "
        f"the model is the AI tests' stand-in provider (tests/ai/standins.py, each provider's wire format "
        f"through its official SDK) in its own process, answering every request after the delay. Workflow:"
        f" `delay` (the hold) → `llm` (prompt with `{{{{ customer.first_name }}}}` and `{{{{ event.text "
        f"}}}}`; a single_select and a text field) → `branch` on the answer → `set_journey_attributes`, "
        f"triggered by `bench_llm` events (`/api/v2/batch`). Once every journey waits at the hold, the "
        f"campaign is paused and the hold's time passes, so all are overdue at once. Timed from `POST "
        f"…/resume` to the SQL poll (50 ms) that sees every journey finished; *at LLM*: to the poll that "
        f"sees none left at the hold; *last answer*: the stand-in's last answer. A warm-up run per "
        f"provider first (SDK import, client). Checked: every journey completed with its own person's "
        f"answer, exactly one model request per person (its own prompt), one attempt each, the ledger "
        f"charged once per journey. CPU: user + system seconds during the run. Baseline: serial time, "
        f"journeys x delay ({serial:,.0f} s). Target: all done ≤ {TARGET_SECONDS:.0f} s for "
        f"{TARGET_JOURNEYS:,} journeys. Medians of the runs.",
        "",
        "| backend | provider | `TIDINGS_AI_CONCURRENCY` | runs | all done | at LLM | last answer | "
        "calls/s | peak in flight | server CPU | stand-in CPU | ratio (serial / ours) | correct | target |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for result in results:
        for f in result.figures:
            if result.journeys >= TARGET_JOURNEYS:
                target = "met" if f.seconds <= TARGET_SECONDS else "missed"
            else:
                target = f"n/a ({result.journeys:,} journeys)"
            lines.append(
                f"| {f.backend} | {f.provider} | {_concurrency(f.concurrency)} | {len(f.runs)} | "
                f"{f.seconds:.2f} s | {f.reached_seconds:.2f} s | {f.last_answer_seconds:.2f} s | "
                f"{f.calls_per_second:,.0f} | {f.peak_in_flight} | {f.server_cpu_seconds:.1f} s | "
                f"{f.standin_cpu_seconds:.1f} s | "
                f"{f.ratio:,.0f} | {'yes' if f.correct else 'NO'} | {target} |"
            )
            if len(f.runs) > 1:
                each = ", ".join(f"{run.seconds:.2f}" for run in f.runs)
                lines.append(f"|  |  |  | each run: {each} s |  |  |  |  |  |  |  |  |  |  |")
    for backend, reason in skipped.items():
        lines.append(f"| {backend} | skipped: {reason} |  |  |  |  |  |  |  |  |  |  |  |  |")
    wrong = [
        f"- {run.backend} {run.provider} {run.concurrency}, run {n + 1}: {run.problems()}"
        for result in results
        for f in result.figures
        for n, run in enumerate(f.runs)
        if not run.correct
    ]
    if wrong:
        lines += ["", "Runs that failed a check:", "", *wrong]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.b8", description=__doc__)
    parser.add_argument("what", nargs="?", default="sqlite", help="a backend, or 'standin'")
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--journeys", type=int, default=TARGET_JOURNEYS)
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--concurrency", default="", help="comma-separated; empty: the default")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    if args.what == "standin":
        serve_standin(args.delay)
        return 0
    concurrencies: list[int | None] = [int(c) for c in args.concurrency.split(",") if c.strip()] or [None]
    result = run_b8(
        args.what,
        Path(__file__).resolve().parent / "out",
        journeys=args.journeys,
        providers=[p.strip() for p in args.providers.split(",") if p.strip()],
        concurrencies=concurrencies,
        repeats=args.repeats,
        delay=args.delay,
    )
    print(render_b8([result], f"pid {os.getpid()}", {}))
    return 0 if result.correct else 1


if __name__ == "__main__":
    sys.exit(main())

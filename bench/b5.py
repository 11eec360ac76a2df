"""B5 — event → email: how long from a Track v1 event to the campaign's email reaching an SMTP server,
while other events stream in.

Each run, on a fresh database: a ``tidings serve`` (its in-process worker on) with ``TIDINGS_SMTP_URL``
pointing at a timing SMTP sink in its own process (``python -m bench.b5 sink``: it records when each
message arrives, by subject); a workspace; N people identified; an event-triggered campaign created and
activated over the App API (trigger: event ``ping``; one email whose subject is ``{{ event.n }}``). Then a
background load of ``background_rate`` events a second of another event name (``browse``), spread over the
people, and measured ``ping`` events at a steady ``rate`` a second, each for a different person (the
campaign's re-entry is the default, once), all through ``POST /api/v1/customers/{id}/events``. Each ping's
latency runs from just before its HTTP request to the sink's receipt of the message with its subject. A
short warm-up of both loads comes first and is not counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.b6 import SinkProcess, _new_workspace, identify_people, person_id
from bench.load import basic_auth, machine_load
from bench.server import start_server, stop_server, throwaway_database

Progress = Callable[[str], None]
TRIGGER_EVENT = "ping"
BACKGROUND_EVENT = "browse"
CAMPAIGN = {
    "name": "B5 event to email",
    "trigger": {"type": "event", "event": TRIGGER_EVENT},
    "steps": [
        {
            "type": "email",
            "content": {
                "from": "b@example.com",
                "to": "{{ customer.email }}",
                "subject": "{{ event.n }}",
                "body": "<p>{{ customer.email }}</p>",
            },
        }
    ],
}
WARMUP_SECONDS = 3.0
ARRIVAL_TIMEOUT_SECONDS = 60.0
TARGET_P50_MS = 100.0
TARGET_P99_MS = 500.0


def _print(message: str) -> None:
    print(f"  {message}", flush=True)


# -- the timing SMTP sink ---------------------------------------------------------------------------------


def _subject(content: bytes) -> str:
    """The Subject header of a raw message (plain ASCII here: the subject is a number)."""
    head = content.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line[:8].lower() == b"subject:":
            return line[8:].strip().decode(errors="replace")
    return ""


async def _sink(host: str) -> None:
    received: dict[str, float] = {}

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            now = time.time()
            received.setdefault(_subject(envelope.original_content or b""), now)
            return "250 2.0.0 Accepted"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = json.dumps(received).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SMTP(Handler(), hostname="sink.b5"), host, 0)
    control = await asyncio.start_server(answer, host, 0)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ports = {
        "smtp_port": smtp.sockets[0].getsockname()[1],
        "control_port": control.sockets[0].getsockname()[1],
    }
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    # Stops on a signal or when the benchmark (holding its stdin) goes away.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def until_stdin_closes() -> None:
        while await reader.read(4096):
            pass

    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(until_stdin_closes())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    smtp.close()
    control.close()


class TimingSink(SinkProcess):
    """``python -m bench.b5 sink`` in its own process: when each message (by subject) arrived."""

    def __init__(self, logdir: Path) -> None:
        super().__init__(logdir, ["bench.b5", "sink"], "b5-sink")

    def received(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self.control().items()}


@contextmanager
def timing_sink(logdir: Path) -> Iterator[TimingSink]:
    sink = TimingSink(logdir)
    try:
        yield sink
    finally:
        sink.stop()


# -- the load ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadOutcome:
    # Measured pings: subject → time.time() just before the request.
    sent: dict[str, float]
    warmup_pings: int
    background_sent: int
    failed: int  # requests of either kind not answered 200
    seconds: float  # measured phase, first to last request scheduled
    total_seconds: float  # warm-up and measured phase


async def _drive(
    base_url: str,
    authorization: str,
    identifiers: Sequence[str],
    *,
    rate: float,
    seconds: float,
    background_rate: float,
    warmup: float,
) -> LoadOutcome:
    """Both loads on one event loop: each request is started at its own scheduled instant."""
    sent: dict[str, float] = {}
    counts = {"background": 0, "failed": 0, "warmup": 0}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers = {"Authorization": authorization, "Content-Type": "application/json"}
    schedule: list[tuple[float, str, int]] = []
    measured = int(rate * seconds)
    warm = int(rate * warmup)
    for n in range(int(background_rate * (warmup + seconds))):
        schedule.append((n / background_rate, BACKGROUND_EVENT, n))
    for n in range(warm + measured):
        schedule.append((n / rate, TRIGGER_EVENT, n))
    schedule.sort()
    tasks: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30.0) as client:

        async def post(kind: str, n: int) -> None:
            if kind == TRIGGER_EVENT:
                who = identifiers[n]
                body = json.dumps({"name": TRIGGER_EVENT, "data": {"n": str(n)}})
            else:
                who = identifiers[(n * 7919) % len(identifiers)]
                body = json.dumps({"name": BACKGROUND_EVENT, "data": {"page": f"/p/{n % 97}"}})
            started = time.time()
            try:
                answer = await client.post(f"/api/v1/customers/{who}/events", content=body)
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            if not ok:
                counts["failed"] += 1
            elif kind == TRIGGER_EVENT:
                if n < warm:
                    counts["warmup"] += 1
                else:
                    sent[str(n)] = started
            else:
                counts["background"] += 1

        loop = asyncio.get_running_loop()
        begin = loop.time()
        measured_from = begin + warmup
        for offset, kind, n in schedule:
            delay = begin + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(kind, n)))
        last = loop.time()
        await asyncio.gather(*tasks)
    return LoadOutcome(
        sent, counts["warmup"], counts["background"], counts["failed"], last - measured_from, last - begin
    )


def drive(
    base_url: str,
    authorization: str,
    identifiers: Sequence[str],
    *,
    rate: float,
    seconds: float,
    background_rate: float,
    warmup: float = WARMUP_SECONDS,
) -> LoadOutcome:
    coroutine = _drive(
        base_url,
        authorization,
        identifiers,
        rate=rate,
        seconds=seconds,
        background_rate=background_rate,
        warmup=warmup,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


# -- one run ----------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0 … 100)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class B5Run:
    pings: int  # measured pings answered 200
    received: int  # of those, messages the sink received
    latencies_ms: tuple[float, ...]
    background_sent: int
    failed: int
    seconds: float
    total_seconds: float
    load_average: str

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms, default=0.0)

    @property
    def background_rate(self) -> float:
        return self.background_sent / self.total_seconds if self.total_seconds > 0 else 0.0

    @property
    def all_received(self) -> bool:
        return self.pings > 0 and self.received == self.pings and self.failed == 0


def create_campaign(base_url: str, app_api_key: str) -> int:
    headers = {"Authorization": f"Bearer {app_api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as client:
        created = client.post("/v1/campaigns", json=CAMPAIGN)
        created.raise_for_status()
        campaign_id = int(created.json()["campaign"]["id"])
        client.post(f"/v1/campaigns/{campaign_id}/activate").raise_for_status()
    return campaign_id


def run_once(
    backend: str,
    workdir: Path,
    *,
    people: int,
    rate: float,
    seconds: float,
    background_rate: float,
    warmup: float = WARMUP_SECONDS,
    progress: Progress = _print,
) -> B5Run:
    # Each measured (and warm-up) ping goes to a person of its own.
    people = max(people, int(rate * (seconds + warmup)) + 1)
    with timing_sink(workdir) as sink, throwaway_database(backend, workdir) as url:
        server = start_server(url, backend, workdir, env={"TIDINGS_SMTP_URL": sink.url})
        try:
            workspace = _new_workspace(url)
            identifiers = [person_id("b5", n, 1) for n in range(people)]
            identify_people(server.base_url, workspace, identifiers)
            create_campaign(server.base_url, workspace.app_api_key)
            load_at_start = machine_load()
            authorization = basic_auth(workspace.site_id, workspace.track_api_key)[1]
            outcome = drive(
                server.base_url,
                authorization,
                identifiers,
                rate=rate,
                seconds=seconds,
                background_rate=background_rate,
                warmup=warmup,
            )
            deadline = time.monotonic() + ARRIVAL_TIMEOUT_SECONDS
            received = sink.received()
            while not set(outcome.sent) <= set(received) and time.monotonic() < deadline:
                time.sleep(0.2)
                received = sink.received()
        finally:
            stop_server(server)
    latencies = tuple(
        (received[subject] - started) * 1000
        for subject, started in outcome.sent.items()
        if subject in received
    )
    run = B5Run(
        len(outcome.sent),
        len(latencies),
        latencies,
        outcome.background_sent,
        outcome.failed,
        outcome.seconds,
        outcome.total_seconds,
        load_at_start,
    )
    progress(
        f"{run.received}/{run.pings} received; p50 {run.p50_ms:.0f} ms, p99 {run.p99_ms:.0f} ms, "
        f"max {run.max_ms:.0f} ms; background {run.background_rate:.0f} events/s, {run.failed} failed"
    )
    return run


@dataclass(frozen=True)
class B5Result:
    backend: str
    people: int
    rate: float
    background_rate: float
    runs: tuple[B5Run, ...]

    def _median(self, pick: Callable[[B5Run], float]) -> float:
        return statistics.median(pick(run) for run in self.runs) if self.runs else 0.0

    @property
    def p50_ms(self) -> float:
        return self._median(lambda run: run.p50_ms)

    @property
    def p99_ms(self) -> float:
        return self._median(lambda run: run.p99_ms)

    @property
    def max_ms(self) -> float:
        return self._median(lambda run: run.max_ms)

    @property
    def all_received(self) -> bool:
        return all(run.all_received for run in self.runs)


def run_b5(
    backend: str,
    workdir: Path,
    *,
    people: int,
    rate: float,
    seconds: float,
    background_rate: float,
    repeats: int,
    warmup: float = WARMUP_SECONDS,
    progress: Progress = _print,
) -> B5Result:
    runs = []
    for repeat in range(repeats):
        progress(f"{backend} run {repeat + 1}/{repeats}: {rate:g} pings/s for {seconds:g} s")
        runs.append(
            run_once(
                backend,
                workdir,
                people=people,
                rate=rate,
                seconds=seconds,
                background_rate=background_rate,
                warmup=warmup,
                progress=progress,
            )
        )
    return B5Result(backend, people, rate, background_rate, tuple(runs))


# -- report -----------------------------------------------------------------------------------------------


def render_b5(results: Sequence[B5Result], stamp: str, skipped: dict[str, str]) -> str:
    first = results[0] if results else None
    shape = (
        f"{first.rate:g} measured `ping` events/s for {first.runs[0].seconds:.0f} s under "
        f"{first.background_rate:g} background events/s"
        if first is not None and first.runs
        else "no run"
    )
    lines = [
        f"## B5 — Event → email ({shape})",
        "",
        f"{stamp}. `tidings serve` (its in-process worker) sending to a timing SMTP sink in its own process; "
        "an event-triggered campaign with one email; each measured `ping` goes to its own person through "
        "Track v1 and is timed from just before its request to the sink's receipt of its message (matched "
        "by subject). Background: another event name, spread over the people. Fresh database each run; "
        f"medians of the runs' figures. Target p50 ≤ {TARGET_P50_MS:.0f} ms, p99 ≤ {TARGET_P99_MS:.0f} ms.",
        "",
        "| backend | runs | p50 | p99 | max | received | background achieved | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ok = r.p50_ms <= TARGET_P50_MS and r.p99_ms <= TARGET_P99_MS
        received = sum(run.received for run in r.runs)
        pings = sum(run.pings for run in r.runs)
        background = statistics.median(run.background_rate for run in r.runs) if r.runs else 0.0
        lines.append(
            f"| {r.backend} | {len(r.runs)} | {r.p50_ms:,.0f} ms | {r.p99_ms:,.0f} ms | {r.max_ms:,.0f} ms | "
            f"{received}/{pings} | {background:.0f} events/s | {'met' if ok else 'missed'} |"
        )
        each = "; ".join(f"{run.p50_ms:.0f} / {run.p99_ms:.0f} / {run.max_ms:.0f}" for run in r.runs)
        lines.append(f"|  | each run (p50 / p99 / max ms): {each} |  |  |  |  |  |  |")
    for backend, reason in skipped.items():
        lines.append(f"| {backend} | skipped: {reason} |  |  |  |  |  |  |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sink"]:
        uvloop.run(_sink("127.0.0.1"))
        return 0
    backend = args[0] if args else "sqlite"
    workdir = Path(__file__).resolve().parent / "out"
    result = run_b5(backend, workdir, people=2_000, rate=10, seconds=10, background_rate=100, repeats=1)
    print(render_b5([result], f"pid {os.getpid()}", {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

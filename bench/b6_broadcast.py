"""B6 — broadcast fan-out: one ``POST /v1/campaigns/{id}/triggers`` to N people, end to end.

The same personalised order email as the rest of B6 (``bench.b6``: layout, snippet, loop over the trigger
data's items, links), sent by an API-triggered broadcast whose email block names that message. N people are
identified first through ``/api/v2/batch`` on a ``tidings serve --no-worker``; then ``tidings worker``
process(es) are started with an SMTP sink, and the broadcast is triggered. Timed from the trigger request
until the sink holds all N messages and every delivery is ``sent``: audience resolution (the trigger job),
journeys (the engine), rendering and SMTP delivery (the sender), all in the workers.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.b6 import (
    SINK_POLL_SECONDS,
    TRIGGER_NAME,
    _new_workspace,
    _tail,
    delivery_states,
    identify_people,
    install_message,
    order_data,
    smtp_sink,
    start_http_only,
    start_workers,
    stop_processes,
)
from bench.load import machine_load
from bench.server import stop_server, throwaway_database


@dataclass(frozen=True)
class BroadcastRun:
    backend: str
    workers: int
    recipients: int
    received: int
    sent: int
    seconds: float
    load_average: str

    @property
    def messages_per_second(self) -> float:
        return self.recipients / self.seconds if self.seconds > 0 else 0.0


def run_broadcast(
    backend: str,
    workdir: Path,
    *,
    recipients: int,
    workers: Sequence[int] = (1, 2),
    timeout: float | None = None,
    progress: Callable[[str], None] = print,
) -> list[BroadcastRun]:
    """One fresh database per worker count (the audience is everyone in the workspace)."""
    runs = []
    for count in workers:
        with throwaway_database(backend, workdir) as url:
            server = start_http_only(url, backend, workdir)
            try:
                workspace = _new_workspace(url)
                install_message(server.base_url, workspace)
                prefix = f"bb{secrets.token_hex(2)}"
                identifiers = [f"{prefix}-{index}" for index in range(recipients)]
                progress(f"  identifying {recipients:,} people …")
                identify_people(server.base_url, workspace, identifiers)
                headers = {"Authorization": f"Bearer {workspace.app_api_key}"}
                with httpx.Client(base_url=server.base_url, headers=headers, timeout=60.0) as client:
                    created = client.post(
                        "/v1/campaigns",
                        json={
                            "name": "Order news",
                            "trigger": {"type": "broadcast"},
                            "steps": [{"id": "news", "type": "email", "template": TRIGGER_NAME}],
                        },
                    )
                    created.raise_for_status()
                    broadcast = created.json()["campaign"]["id"]
                    client.post(f"/v1/campaigns/{broadcast}/activate").raise_for_status()
                    load_at_start = machine_load()
                    with smtp_sink(workdir) as sink:
                        running = start_workers(count, url, sink.url, workdir)
                        processes = [process for process, _ in running]
                        try:
                            time.sleep(2.0)  # the workers' start-up is not part of the fan-out
                            progress(f"  triggering to {recipients:,} with {count} worker(s) …")
                            started = time.perf_counter()
                            client.post(
                                f"/v1/campaigns/{broadcast}/triggers", json={"data": order_data(0)}
                            ).raise_for_status()
                            deadline = time.monotonic() + (timeout or 120.0 + recipients / 20)
                            stats = sink.stats()
                            while stats.messages < recipients and time.monotonic() < deadline:
                                for process, log_path in running:
                                    if process.poll() is not None:
                                        raise RuntimeError(f"a worker exited early:\n{_tail(log_path)}")
                                time.sleep(SINK_POLL_SECONDS)
                                stats = sink.stats()
                            states = delivery_states(url, workspace.workspace_id)
                            while states.get("sent", 0) < recipients and time.monotonic() < deadline:
                                time.sleep(SINK_POLL_SECONDS)
                                states = delivery_states(url, workspace.workspace_id)
                            seconds = time.perf_counter() - started
                        finally:
                            stop_processes(processes)
                runs.append(
                    BroadcastRun(
                        backend,
                        count,
                        recipients,
                        stats.messages,
                        states.get("sent", 0),
                        seconds,
                        load_at_start,
                    )
                )
                progress(f"  {runs[-1].messages_per_second:,.0f} messages/s")
            finally:
                stop_server(server)
    return runs


def render_broadcast(runs: Sequence[BroadcastRun], stamp: str, skipped: dict[str, str]) -> str:
    """The broadcast fan-out table, appended to B6's section by ``bench.run``."""
    lines = [
        "",
        f"### Broadcast fan-out ({stamp})",
        "",
        "One `POST /v1/campaigns/{id}/triggers` to every person of the workspace (the order email as the "
        "broadcast's email block), timed from the request until the SMTP sink holds every message and every "
        "delivery is `sent`: audience resolution, journeys, rendering and delivery, all in the worker(s). "
        "Target ≥ 2,000 messages/s.",
        "",
        "| backend | workers | recipients | received | sent | seconds | messages/s | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        met = "met" if run.messages_per_second >= 2000 and run.sent == run.recipients else "missed"
        lines.append(
            f"| {run.backend} | {run.workers} | {run.recipients:,} | {run.received:,} | {run.sent:,} | "
            f"{run.seconds:.1f} | {run.messages_per_second:,.0f} | {met} |"
        )
    for backend, reason in skipped.items():
        lines.append(f"| {backend} | — | — | — | — | — | — | not run: {reason} |")
    return "\n".join(lines)


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    recipients = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    workers = tuple(int(n) for n in (sys.argv[3] if len(sys.argv) > 3 else "1").split(","))
    workdir = Path(__file__).resolve().parent / "out"
    workdir.mkdir(exist_ok=True)
    for run in run_broadcast(backend, workdir, recipients=recipients, workers=workers):
        print(run, f"{run.messages_per_second:,.0f} msg/s")


if __name__ == "__main__":
    main()

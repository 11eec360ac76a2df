"""Journeys survive workers killed at any instant: the API server runs without a worker while pairs of
``tidings worker`` processes run side by side and are killed (SIGKILL) again and again mid-flight. Each
restart moves the workers' clock forward (TIDINGS_CLOCK_OFFSET_SECONDS), so delays pass without sleeping.
At the end every journey has run each block exactly once, every message was written once and reached
the SMTP server."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.campaigns.conftest import email_block, journeys
from tests.clients.test_python_track import track_client
from tests.conftest import BACKENDS, _require_postgres
from tests.harness import TIDINGS, Api, Server, launch_server, postgres_database, stop_server, stop_worker
from tests.mail import eventually
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import ok

PEOPLE = 24
ROUNDS = 6


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tidings.db'}"
        return
    _require_postgres()
    with postgres_database() as url:
        yield url


def start_worker(server: Server, sink: SmtpSink, log: Path, offset: int) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "TIDINGS_DATABASE_URL": server.database_url,
        "TIDINGS_SMTP_URL": sink.url,
        "TIDINGS_SEND_LEASE_SECONDS": "2",
        "TIDINGS_WORKER_POLL_SECONDS": "0.02",
        "TIDINGS_JOURNEY_BATCH_SIZE": "7",
        "TIDINGS_SEND_BATCH_SIZE": "5",
        "TIDINGS_PUBLIC_URL": server.base_url,
        "TIDINGS_CLOCK_OFFSET_SECONDS": str(offset),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(TIDINGS), "worker"], env=environment, stdout=out, stderr=subprocess.STDOUT
        )


def _started(log: Path) -> bool:
    return "started" in log.read_text()


def test_workers_killed_mid_journey_lose_and_repeat_nothing(database: str, tmp_path: Path) -> None:
    randomness = random.Random(7)
    with SmtpSink() as sink:
        server = launch_server(database, "crash", tmp_path, ("--no-worker",), {"TIDINGS_SMTP_URL": sink.url})
        api = Api(server, server.new_workspace())
        try:
            campaign = ok(
                api.app.post(
                    "/v1/campaigns",
                    json={
                        "name": "Crash-proof",
                        "trigger": {"type": "event", "event": "joined"},
                        "steps": [
                            email_block("first", "First {{ customer.id }}"),
                            {"id": "count", "type": "set_journey_attributes", "attributes": {"seen": "yes"}},
                            {"id": "wait", "type": "delay", "duration": "30m"},
                            {
                                "id": "tag",
                                "type": "update_person",
                                "attributes": {"stage": "{{ journey.seen }}"},
                            },
                            email_block("second", "Second {{ customer.id }} {{ customer.stage }}"),
                        ],
                    },
                )
            )["campaign"]
            ok(api.app.post(f"/v1/campaigns/{campaign['id']}/activate"))
            with track_client(api) as cio:
                for i in range(PEOPLE):
                    cio.identify(f"p{i}", email=f"p{i}@crash.example.com")
                    cio.track(f"p{i}", "joined")
            offset = 0
            for round_ in range(ROUNDS):
                offset += 600  # three rounds pass the 30-minute delay
                pair = [
                    start_worker(server, sink, tmp_path / f"worker-{round_}-{n}.log", offset)
                    for n in range(2)
                ]
                for n in range(2):
                    eventually(
                        partial(_started, tmp_path / f"worker-{round_}-{n}.log"), what="a worker to start"
                    )
                time.sleep(randomness.uniform(0.05, 0.8))
                for worker in pair:
                    worker.send_signal(signal.SIGKILL)
                    worker.wait(timeout=10)
            survivor = start_worker(server, sink, tmp_path / "worker-last.log", offset + 3 * 3600)
            try:
                done = eventually(
                    lambda: (
                        found
                        if len(found := journeys(api, campaign["id"], state="completed", limit=100)) == PEOPLE
                        else None
                    ),
                    what="every journey to complete",
                    deadline=180,
                )
                eventually(lambda: len(sink.messages) >= 2 * PEOPLE, what="every message", deadline=90)
                time.sleep(0.5)
            finally:
                stop_worker(survivor, tmp_path / "worker-last.log")
            expected: set[str] = set()
            for journey in done:
                blocks = [step["block"] for step in journey["steps"]]
                assert blocks == ["trigger", "first", "count", "wait", "wait", "tag", "second"], blocks
                assert [step["seq"] for step in journey["steps"]] == sorted(
                    {s["seq"] for s in journey["steps"]}
                )
                expected |= {step["delivery_id"] for step in journey["steps"] if step["delivery_id"]}
            assert len(expected) == 2 * PEOPLE, "one delivery per message block per journey"
            received = {item.message["X-CIO-Delivery-Id"] for item in sink.messages}
            assert received == expected, "every delivery reached the SMTP server"
            # A send whose worker died after the SMTP server took it but before it was recorded is sent
            # again under the same delivery id (the receiver's dedup key): nothing else repeats.
            ids = [item.message["X-CIO-Delivery-Id"] for item in sink.messages]
            repeats = len(ids) - len(set(ids))
            assert repeats <= ROUNDS * 2 * 5, repeats
            seconds = [
                m.message["Subject"] for m in sink.messages if m.message["Subject"].startswith("Second")
            ]
            assert all(subject.endswith(" yes") for subject in seconds)
        finally:
            api.close()
            stop_server(server)

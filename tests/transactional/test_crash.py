"""A sending worker killed mid-send loses nothing and sends nothing twice: the API server runs without a
worker, a ``tidings worker`` process claims the deliveries and is killed (SIGKILL) while the SMTP server
holds it mid-envelope; a second worker takes the deliveries over when their lease runs out."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tests.conftest import BACKENDS, _require_postgres
from tests.harness import TIDINGS, Api, Server, launch_server, postgres_database, stop_server, stop_worker
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import eventually, message, ok

LEASE_SECONDS = 2


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tidings.db'}"
        return
    _require_postgres()
    with postgres_database() as url:
        yield url


def start_worker(server: Server, sink: SmtpSink, log: Path) -> subprocess.Popen[bytes]:
    environment = {**os.environ, **worker_env(server, sink)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(TIDINGS), "worker"], env=environment, stdout=out, stderr=subprocess.STDOUT
        )


def worker_env(server: Server, sink: SmtpSink) -> dict[str, str]:
    return {
        "TIDINGS_DATABASE_URL": server.database_url,
        "TIDINGS_SMTP_URL": sink.url,
        "TIDINGS_SEND_LEASE_SECONDS": str(LEASE_SECONDS),
        "TIDINGS_WORKER_POLL_SECONDS": "0.05",
        "TIDINGS_PUBLIC_URL": server.base_url,
    }


def queue_emails(api: Api, prefix: str, count: int) -> list[str]:
    """``count`` transactional emails, queued (the server has no worker); their delivery ids."""
    return [
        ok(
            api.app.post(
                "/v1/send/email",
                json={
                    "identifiers": {"id": f"{prefix}{i}"},
                    "to": f"{prefix}{i}@example.com",
                    "from": "a@example.com",
                    "subject": f"Message {i}",
                    "body": f"<p>{i}</p>",
                },
            )
        )["delivery_id"]
        for i in range(count)
    ]


def test_a_worker_killed_mid_send_loses_and_duplicates_nothing(database: str, tmp_path: Path) -> None:
    with SmtpSink() as sink:
        sink.stall_rcpt.set()
        server = launch_server(database, "crash", tmp_path, ("--no-worker",), {"TIDINGS_SMTP_URL": sink.url})
        api = Api(server, server.new_workspace())
        try:
            ids = queue_emails(api, "c", 5)
            doomed = start_worker(server, sink, tmp_path / "worker-1.log")
            eventually(lambda: sink.stalled >= 1, what="the first worker to get stuck mid-envelope")
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=10)
            # Claimed, not sent, nothing received.
            assert {message(api, d)["state"] for d in ids} <= {"sending", "queued"}
            assert sink.messages == []

            sink.stall_rcpt.clear()
            started = time.monotonic()
            survivor = start_worker(server, sink, tmp_path / "worker-2.log")
            try:
                eventually(
                    lambda: all(message(api, d)["state"] == "sent" for d in ids),
                    what="every delivery to be sent by the second worker",
                )
            finally:
                stop_worker(survivor, tmp_path / "worker-2.log")
            # The killed worker's claims were taken over once their lease ran out, not before.
            assert time.monotonic() - started >= LEASE_SECONDS - 0.5
            received = [item.message["X-CIO-Delivery-Id"] for item in sink.messages]
            assert sorted(received) == sorted(ids), "each delivery arrives exactly once"
            for delivery_id in ids:
                mail = next(i.message for i in sink.messages if i.message["X-CIO-Delivery-Id"] == delivery_id)
                assert delivery_id in mail["Message-ID"]
        finally:
            api.close()
            stop_server(server)


def test_a_worker_stopped_mid_send_records_the_send_before_it_exits(database: str, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) asks a worker to stop after its current stage: it waits for the send under way and
    records how it went, so nothing is left claimed for another worker to send again."""
    with SmtpSink() as sink:
        sink.stall_rcpt.set()
        server = launch_server(database, "stop", tmp_path, ("--no-worker",), {"TIDINGS_SMTP_URL": sink.url})
        api = Api(server, server.new_workspace())
        try:
            [delivery] = queue_emails(api, "s", 1)
            worker = start_worker(server, sink, tmp_path / "worker.log")
            try:
                eventually(lambda: sink.stalled >= 1, what="the worker to get stuck mid-envelope")
                worker.send_signal(signal.SIGINT)
                time.sleep(0.5)
                assert worker.poll() is None, "the worker waits for the send under way"
                sink.stall_rcpt.clear()  # the server answers at last, refusing (421)
                assert worker.wait(timeout=15) == 0
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            stopped = message(api, delivery)
            assert stopped["state"] == "queued", stopped
            assert "421" in (stopped.get("failure_message") or ""), stopped
            assert "stopping on SIGINT" in (tmp_path / "worker.log").read_text()
        finally:
            api.close()
            stop_server(server)


def test_a_delivery_that_cannot_be_prepared_holds_up_nothing(database: str, tmp_path: Path) -> None:
    """The sender prepares a batch in one savepoint; when one delivery fails in a way nothing expects (here
    its stored content is not an object, as a damaged row would be), the others still go out and that one
    is put back for a later attempt, saying why."""
    with SmtpSink() as sink:
        server = launch_server(
            database, "prepare", tmp_path, ("--no-worker",), {"TIDINGS_SMTP_URL": sink.url}
        )
        api = Api(server, server.new_workspace())
        try:
            ids = queue_emails(api, "p", 4)
            damaged = ids[1]
            engine = sqlalchemy.create_engine(server.database_url)
            try:
                with engine.begin() as connection:
                    connection.execute(
                        sqlalchemy.text("UPDATE deliveries SET rendered = :r WHERE id = :id"),
                        {"r": "[1]", "id": damaged},
                    )
            finally:
                engine.dispose()
            worker = start_worker(server, sink, tmp_path / "worker.log")
            try:
                eventually(
                    lambda: all(message(api, d)["state"] == "sent" for d in ids if d != damaged),
                    what="the undamaged deliveries to be sent",
                )
                eventually(
                    lambda: "internal error" in (message(api, damaged).get("failure_message") or ""),
                    what="the damaged delivery to be put back with its reason",
                )
            finally:
                stop_worker(worker, tmp_path / "worker.log")
            assert message(api, damaged)["state"] == "queued"
            received = sorted(item.message["X-CIO-Delivery-Id"] for item in sink.messages)
            assert received == sorted(d for d in ids if d != damaged)
        finally:
            api.close()
            stop_server(server)


def test_stopping_serve_lets_its_worker_record_the_send_in_flight(database: str, tmp_path: Path) -> None:
    """`tidings serve` asked to stop while its worker waits on an SMTP server mid-send waits for that send
    and records its outcome: a send left `sending` would go out again once its lease ran out."""
    with SmtpSink() as sink:
        sink.stall_rcpt.set()
        server = launch_server(
            database,
            "graceful",
            tmp_path,
            (),
            {"TIDINGS_SMTP_URL": sink.url, "TIDINGS_WORKER_POLL_SECONDS": "0.05"},
        )
        api = Api(server, server.new_workspace())
        try:
            (delivery_id,) = queue_emails(api, "g", 1)
            eventually(lambda: sink.stalled >= 1, what="the worker to get stuck mid-envelope")
            api.close()
            server.process.send_signal(signal.SIGINT)
            time.sleep(1.0)
            assert server.process.poll() is None, "serve waits for its worker"
            sink.stall_rcpt.clear()  # the server answers (421, a temporary failure)
            assert server.process.wait(timeout=15) == 0
        finally:
            stop_server(server)
    engine = sqlalchemy.create_engine(server.database_url)
    try:
        with engine.connect() as connection:
            state, leased_by = connection.execute(
                sqlalchemy.text("SELECT state, leased_by FROM deliveries WHERE id = :id"), {"id": delivery_id}
            ).one()
    finally:
        engine.dispose()
    assert (state, leased_by) == ("queued", None), "the temporary failure recorded, the lease given back"

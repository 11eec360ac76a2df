"""The sending worker's batches: one call of ``Sender.run_due`` sends batch after batch (the next one is
claimed, rendered and built while the previous one is still being sent); a batch still sending when the
call ends is finished by the next call or by ``close``; a message that cannot be built fails alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy

from tests.harness import Api, Server, launch_server, stop_server
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import message
from tests.transactional.test_crash import database, queue_emails  # noqa: F401  (the fixture)
from tidings.config import Settings
from tidings.deliveries import sender as sender_module
from tidings.deliveries.sender import Sender
from tidings.runtime import Runtime


@dataclass
class Queued:
    api: Api
    server: Server
    sink: SmtpSink
    ids: list[str]


@pytest.fixture
def queued(database: str, tmp_path: Path) -> Iterator[Queued]:  # noqa: F811
    """12 transactional emails queued by a server that has no worker, and an SMTP server."""
    with SmtpSink() as sink:
        server = launch_server(database, "batches", tmp_path, ("--no-worker",), {})
        api = Api(server, server.new_workspace())
        try:
            yield Queued(api, server, sink, queue_emails(api, "b", 12))
        finally:
            api.close()
            stop_server(server)


def sender_for(queued: Queued) -> Sender:
    settings = Settings(
        database_url=queued.server.database_url,
        smtp_url=queued.sink.url,
        public_url=queued.server.base_url,
        send_batch_size=5,
    )
    return Sender(Runtime.from_settings(settings), "batches-test")


def received(queued: Queued) -> list[str]:
    return sorted(item.message["X-CIO-Delivery-Id"] for item in queued.sink.messages)


def test_one_call_sends_batch_after_batch_each_message_once(
    queued: Queued, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = queued.ids[7]
    engine = sqlalchemy.create_engine(queued.server.database_url)
    try:
        with engine.begin() as connection:
            stored = connection.execute(
                sqlalchemy.text("SELECT request FROM deliveries WHERE id = :id"), {"id": broken}
            ).scalar_one()
            request = stored if isinstance(stored, dict) else json.loads(stored)
            # A sender the API would have refused (a damaged row): it renders, but no email can be built.
            request.setdefault("overrides", {})["from"] = "not an address"
            connection.execute(
                sqlalchemy.text("UPDATE deliveries SET request = :r WHERE id = :id"),
                {"r": json.dumps(request), "id": broken},
            )
    finally:
        engine.dispose()
    # A burst long enough for every batch, however slow the machine.
    monkeypatch.setattr(sender_module, "SEND_BURST_SECONDS", 60.0)
    sender = sender_for(queued)
    try:
        # 12 deliveries in batches of 5: three batches in one call, and every one finished by it.
        assert sender.run_due() == 12
        states = {d: message(queued.api, d)["state"] for d in queued.ids}
        assert states == {d: "failed" if d == broken else "sent" for d in queued.ids}
        assert sender.run_due() == 0
    finally:
        sender.close()
        sender.runtime.db.close()
    assert received(queued) == sorted(d for d in queued.ids if d != broken), "every other message, once"
    failure = message(queued.api, broken)["failure_message"]
    assert "cannot build the email" in failure
    assert "from" in failure


def test_a_batch_left_sending_is_finished_by_the_next_call_or_by_close(
    queued: Queued, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No burst: each call starts one batch and returns while it is still being sent.
    monkeypatch.setattr(sender_module, "SEND_BURST_SECONDS", 0.0)
    sender = sender_for(queued)
    try:
        assert sender.run_due() == 5
        assert sender.run_due() == 5  # finishes the first batch
        first = received(queued)
        assert len(first) >= 5
        states = [message(queued.api, d)["state"] for d in queued.ids]
        assert states.count("sent") == 5
        assert states.count("queued") == 2
    finally:
        sender.close()  # finishes the second batch
        sender.runtime.db.close()
    states = [message(queued.api, d)["state"] for d in queued.ids]
    assert states.count("sent") == 10
    assert states.count("queued") == 2, "the last two were never claimed"
    assert len(received(queued)) == 10
    assert len(set(received(queued))) == 10

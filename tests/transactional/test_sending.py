"""The sending worker's batches: one call of ``Sender.run_due`` sends batch after batch (the next one is
claimed, rendered and built while the previous one is still being sent), finishes every batch it started,
and a message that cannot be built fails alone."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy

from tests.harness import Api, launch_server, stop_server
from tests.messaging.smtp_sink import SmtpSink
from tests.transactional.conftest import message
from tests.transactional.test_crash import database, queue_emails  # noqa: F401  (the fixture)
from tidings.config import Settings
from tidings.deliveries.sender import Sender
from tidings.runtime import Runtime


def test_one_call_sends_batch_after_batch_each_message_once(database: str, tmp_path: Path) -> None:  # noqa: F811
    with SmtpSink() as sink:
        server = launch_server(database, "batches", tmp_path, ("--no-worker",), {})
        api = Api(server, server.new_workspace())
        try:
            ids = queue_emails(api, "b", 12)
            broken = ids[7]
            engine = sqlalchemy.create_engine(server.database_url)
            try:
                with engine.begin() as connection:
                    stored = connection.execute(
                        sqlalchemy.text("SELECT request FROM deliveries WHERE id = :id"), {"id": broken}
                    ).scalar_one()
                    request = stored if isinstance(stored, dict) else json.loads(stored)
                    # A sender the API would have refused (a damaged row): it renders, but no email can
                    # be built from it.
                    request.setdefault("overrides", {})["from"] = "not an address"
                    connection.execute(
                        sqlalchemy.text("UPDATE deliveries SET request = :r WHERE id = :id"),
                        {"r": json.dumps(request), "id": broken},
                    )
            finally:
                engine.dispose()
            runtime = Runtime.from_settings(
                Settings(
                    database_url=server.database_url,
                    smtp_url=sink.url,
                    public_url=server.base_url,
                    send_batch_size=5,
                )
            )
            sender = Sender(runtime, "batches-test")
            try:
                # 12 deliveries in batches of 5: three batches in one call.
                assert sender.run_due() == 12
                assert sender.run_due() == 0
            finally:
                sender.close()
                runtime.db.close()
            received = sorted(item.message["X-CIO-Delivery-Id"] for item in sink.messages)
            assert received == sorted(d for d in ids if d != broken), "every other message once"
            for delivery_id in ids:
                found = message(api, delivery_id)
                if delivery_id == broken:
                    assert found["state"] == "failed"
                    assert "cannot build the email" in found["failure_message"]
                    assert "from" in found["failure_message"]
                else:
                    assert found["state"] == "sent"
        finally:
            api.close()
            stop_server(server)

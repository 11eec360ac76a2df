"""What the test packages that send mail share: a server per backend wired to a real SMTP server
(aiosmtpd) with a movable clock and a fast-polling worker, addresses unique to a test, waiting for mail,
moving the clock, and polling until something holds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import serve
from tests.harness import Api, Server
from tests.messaging.smtp_sink import Received, SmtpSink

Json = dict[str, Any]


def serve_with_mail(backend: str, workdir: Path, sink: SmtpSink, **env: str) -> Iterator[Server]:
    """``tests.conftest.serve`` with email going to ``sink``, clock control on and a fast worker."""
    yield from serve(
        backend,
        workdir,
        TIDINGS_SMTP_URL=sink.url,
        TIDINGS_WORKER_POLL_SECONDS="0.05",
        TIDINGS_CLOCK_CONTROL="true",
        **env,
    )


def unique_addresses() -> Callable[[str], str]:
    """Addresses unique to the test, so a shared SMTP server's mail can be told apart."""
    tag = uuid.uuid4().hex[:10]
    return lambda name: f"{name}-{tag}@example.com"


def ok(response: httpx.Response) -> Json:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    body: Json = response.json()
    return body


def mails_to(sink: SmtpSink, address: str) -> list[Received]:
    return [m for m in list(sink.messages) if address in m.rcpt_tos]


def mail_to(sink: SmtpSink, address: str, count: int = 1, timeout: float = 20) -> list[Received]:
    """Wait until ``count`` messages to ``address`` have arrived; return them (oldest first)."""
    end = time.monotonic() + timeout
    while True:
        found = mails_to(sink, address)
        if len(found) >= count:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"expected {count} message(s) to {address}, got {len(found)}")
        time.sleep(0.05)


def no_mail_to(sink: SmtpSink, address: str, expected: int = 0, settle: float = 1.0) -> None:
    """Give the worker a moment, then check that no more than ``expected`` messages reached ``address``."""
    time.sleep(settle)
    found = mails_to(sink, address)
    assert len(found) == expected, f"{address} got {len(found)} messages, expected {expected}"


def advance(api: Api, seconds: float) -> int:
    """Move the server's clock forward; returns its new now (``advance(api, 0)`` reads it)."""
    moved: int = ok(api.app.post("/_tidings/clock", json={"advance": seconds}))["now"]
    return moved


def eventually(check: Callable[[], Any], *, what: str, deadline: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)

"""A local HTTP endpoint for reporting-webhook tests: records each post's raw body and headers, and can be
told to answer an error status to the next N posts.

Every receiver has its own random path prefix and only records posts under it. Ports are reused by the
OS, so a webhook left over from an earlier test (still retrying on the shared server) may reach a later
test's receiver; it is answered 410 and not recorded.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEADLINE_SECONDS = 15.0


@dataclass(frozen=True)
class Received:
    path: str
    # Header names lower-cased.
    headers: dict[str, str]
    body: bytes
    # What the receiver answered.
    status: int

    @property
    def name(self) -> str:
        """The endpoint name, the last path segment (see :meth:`Receiver.endpoint`)."""
        return self.path.rsplit("/", 1)[-1]

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    def __init__(self) -> None:
        self.prefix = f"/{secrets.token_hex(6)}/"
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._answers: deque[int] = deque()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()

    def endpoint(self, name: str = "hook") -> str:
        return f"{self.base_url}{self.prefix}{name}"

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer ``status`` to the next ``count`` posts (2xx again afterwards)."""
        with self._lock:
            self._answers.extend([status] * count)

    def received(self, name: str | None = None) -> list[Received]:
        with self._lock:
            posts = list(self._received)
        return [post for post in posts if name is None or post.name == name]

    def wait_for(
        self, count: int, name: str | None = None, timeout: float = DEADLINE_SECONDS
    ) -> list[Received]:
        """Poll until at least ``count`` posts arrived (to ``name``); return them all."""
        deadline = time.monotonic() + timeout
        while True:
            posts = self.received(name)
            if len(posts) >= count:
                return posts
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {count} posts"
                    f"{f' to {name}' if name else ''}; got {len(posts)}: {[p.body for p in posts]}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        if not path.startswith(self.prefix):
            return 410
        with self._lock:
            status = self._answers.popleft() if self._answers else 200
            self._received.append(Received(path, headers, body, status))
        return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver._answer(self.path, headers, body)
                answer = b'{"ok":true}' if status < 300 else b'{"error":"receiver told to fail"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: pytest shows failures, not every request."""

        return Handler

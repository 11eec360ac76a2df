"""Outside calls a journey makes (the webhook action, the LLM action): made after the step that asked
for them committed, outside any transaction, under the journey's lease.

A call is a function returning the answer as a dict. A blocking one runs on the engine's small thread
pool; an ``async`` one runs on this process's background event loop, where a thousand of them waiting on a
slow model hold no thread each (model calls must never hold up other journeys or workers).

A call is at least once: if the worker dies before the answer is stored, the lease runs out and another
worker makes it again, with the same idempotency key, so a receiver that honours the key does the work
once.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import httpx

from tidings.messaging import outbound

Call = Callable[[], dict[str, Any]] | Callable[[], Awaitable[dict[str, Any]]]

_loop: list[asyncio.AbstractEventLoop] = []
_loop_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's event loop for async calls, started on first use in a daemon thread."""
    with _loop_lock:
        if not _loop:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="tidings-async-calls", daemon=True).start()
            _loop.append(loop)
        return _loop[0]


def submit(call: Callable[[], Awaitable[dict[str, Any]]]) -> Future[dict[str, Any]]:
    async def run() -> dict[str, Any]:
        return await call()

    return asyncio.run_coroutine_threadsafe(run(), background_loop())


# Set by the engine from settings: whether user-given URLs may reach private addresses.
ALLOW_PRIVATE = {"value": False}
MAX_RESPONSE_BYTES = 1_000_000


def http_call(request: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    def call() -> dict[str, Any]:
        body = request.get("body")
        headers = {"Idempotency-Key": request["idempotency_key"], **(request.get("headers") or {})}
        content: bytes | None = None
        if isinstance(body, dict | list):
            content = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str) and body:
            content = body.encode()
        try:
            with outbound.http_client(
                allow_private=ALLOW_PRIVATE["value"], timeout=float(request.get("timeout", 10))
            ) as client:
                response = client.request(request["method"], request["url"], content=content, headers=headers)
        except (httpx.HTTPError, outbound.OutboundRefused, ValueError, TypeError) as exc:
            return {"error": str(exc) or type(exc).__name__}
        text = response.text[:MAX_RESPONSE_BYTES]
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = None
        return {"status": response.status_code, "json": parsed, "text": text}

    return call


def pick(document: Any, text: str | None, path: str) -> Any:
    """The value at a dotted path (``data.items.0.id``) of a JSON response; "" is the whole response."""
    if path == "":
        return document if document is not None else text
    current = document
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif (
            isinstance(current, list)
            and part.lstrip("-").isdigit()
            and -len(current) <= int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return None
    return current

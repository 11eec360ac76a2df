"""``/mcp``: the MCP server over streamable HTTP, for agents that connect by URL.

Authenticated like the App API (``Authorization: Bearer <App API key>``): a missing, invalid or revoked
key is answered 401 before any MCP handling. Stateless JSON mode: every request stands alone, so any
API process can answer it and no session state lives in memory.

The MCP SDK and what it pulls in (about 220 modules: pydantic models of the protocol, jsonschema, httpx,
sse-starlette, cryptography) cost some 35 MB of resident memory, so they load on the first request to
``/mcp`` rather than at start: a server nobody points an agent at keeps its idle footprint.
"""

from __future__ import annotations

import json

import anyio
from anyio.abc import TaskGroup
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.errors import TidingsError
from tidings.runtime import Runtime

PATH = "/mcp"


class _KeyGuard:
    """Answers 401 (in the App API's envelope) unless the request carries a live App API key."""

    def __init__(self, inner: ASGIApp, app: FastAPI) -> None:
        self.inner = inner
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            runtime: Runtime = self.app.state.runtime
            try:
                if scheme.lower() != "bearer" or not token.strip():
                    raise TidingsError("missing Bearer App API key")
                await self.app.state.gatekeeper.verify(runtime, "app", token.strip(), None)
            except TidingsError as exc:
                body = json.dumps({"errors": [{"detail": exc.message, "status": "401"}]}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="tidings-mcp"'),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.inner(scope, receive, send)


class _LazyServer:
    """The MCP server's ASGI app, built and its session manager started on the first request.

    The session manager's task group must outlive every request and be entered and left by one task, so
    it runs in a task of ``app.state.background``: the lifespan's task group, cancelled when the app
    stops."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.inner: ASGIApp | None = None
        self.lock = anyio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.inner is None:
            async with self.lock:
                if self.inner is None:
                    self.inner = await self._start()
        await self.inner(scope, receive, send)

    async def _start(self) -> ASGIApp:
        from mcp.server.streamable_http_manager import (  # noqa: PLC0415  (loaded on first use)
            StreamableHTTPASGIApp,
            StreamableHTTPSessionManager,
        )

        from tidings.agents import mcp_server  # noqa: PLC0415

        server = mcp_server.build(mcp_server.http_toolboxes(self.app), per_request=True)
        sessions = StreamableHTTPSessionManager(app=server, stateless=True, json_response=True)
        running = anyio.Event()

        async def host() -> None:
            async with sessions.run():
                running.set()
                await anyio.sleep_forever()

        background: TaskGroup = self.app.state.background
        background.start_soon(host, name="tidings-mcp-sessions")
        await running.wait()
        return StreamableHTTPASGIApp(sessions)


def mount(app: FastAPI) -> None:
    """Serve ``/mcp`` on ``app``; the server starts on first use, in ``app.state.background``."""
    guarded = _KeyGuard(_LazyServer(app), app)
    # An ASGI app instance as the endpoint: Starlette serves it as it is (no /mcp/ redirect, as a Mount has).
    app.add_route(PATH, guarded, methods=["GET", "POST", "DELETE"], include_in_schema=False)  # type: ignore[arg-type]

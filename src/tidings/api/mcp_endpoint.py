"""``/mcp``: the MCP server over streamable HTTP, for agents that connect by URL.

Authenticated like the App API (``Authorization: Bearer <App API key>``): a missing, invalid or revoked
key is answered 401 before any MCP handling. Stateless JSON mode: every request stands alone, so any
API process can answer it and no session state lives in memory.
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.agents import mcp_server
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


def mount(app: FastAPI) -> None:
    """Serve ``/mcp`` on ``app``; its session manager goes in ``app.state.mcp_sessions`` for the lifespan."""
    server = mcp_server.build(mcp_server.http_toolboxes(app), per_request=True)
    sessions = StreamableHTTPSessionManager(app=server, stateless=True, json_response=True)
    app.state.mcp_sessions = sessions
    guarded = _KeyGuard(StreamableHTTPASGIApp(sessions), app)
    # An ASGI app instance as the endpoint: Starlette serves it as it is (no /mcp/ redirect, as a Mount has).
    app.add_route(PATH, guarded, methods=["GET", "POST", "DELETE"], include_in_schema=False)  # type: ignore[arg-type]

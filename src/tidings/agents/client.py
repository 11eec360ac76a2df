"""The one client agent tools use: Tidings' public HTTP APIs (Track and App), or Customer.io's.

Tools never reach into Tidings' database: every read and change goes over the same HTTP APIs a
Customer.io integration uses, with configurable base URLs and keys, so the same tools run against a
Tidings server or Customer.io's hosted APIs (US or EU) for the endpoints Customer.io has.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Backend = Literal["tidings", "customerio"]
CUSTOMERIO_HOSTS = {
    "us": ("https://api.customer.io", "https://track.customer.io"),
    "eu": ("https://api-eu.customer.io", "https://track-eu.customer.io"),
}


@dataclass(frozen=True)
class Connection:
    """Where the APIs are and the keys to use. Only the App key is required; tools that change people
    and events need the site id and Track key, and say so when they are missing."""

    backend: Backend
    app_url: str
    track_url: str
    app_key: str
    site_id: str | None = None
    track_key: str | None = None

    @staticmethod
    def tidings(
        base_url: str, app_key: str, *, site_id: str | None = None, track_key: str | None = None
    ) -> Connection:
        base = base_url.rstrip("/")
        return Connection("tidings", base, base, app_key, site_id, track_key)

    @staticmethod
    def customerio(
        region: str, app_key: str, *, site_id: str | None = None, track_key: str | None = None
    ) -> Connection:
        app, track = CUSTOMERIO_HOSTS[region]
        return Connection("customerio", app, track, app_key, site_id, track_key)

    @staticmethod
    def from_environment(environ: dict[str, str] | None = None) -> Connection:
        """``TIDINGS_MCP_*``: BACKEND (tidings, customerio-us or customerio for the US region, customerio-eu),
        URL, APP_KEY, SITE_ID,
        TRACK_KEY."""
        env = dict(os.environ if environ is None else environ)
        backend = env.get("TIDINGS_MCP_BACKEND", "tidings")
        app_key = env.get("TIDINGS_MCP_APP_KEY", "")
        keys = {
            "site_id": env.get("TIDINGS_MCP_SITE_ID") or None,
            "track_key": env.get("TIDINGS_MCP_TRACK_KEY") or None,
        }
        # Exact names only: a typo must not send a workspace's data to the wrong region.
        regions = {f"customerio-{region}": region for region in CUSTOMERIO_HOSTS} | {"customerio": "us"}
        if backend in regions:
            return Connection.customerio(regions[backend], app_key, **keys)
        if backend != "tidings":
            raise ValueError("TIDINGS_MCP_BACKEND must be tidings, customerio-us or customerio-eu")
        return Connection.tidings(env.get("TIDINGS_MCP_URL", "http://127.0.0.1:8080"), app_key, **keys)


class ApiError(Exception):
    """An API answered with an error; ``detail`` is its message from the endpoint's envelope."""

    def __init__(self, status: int, detail: str, *, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class MissingCredentials(Exception):
    pass


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("detail") or errors[0].get("message") or errors[0])
        meta = body.get("meta")
        if isinstance(meta, dict) and meta.get("error"):
            return str(meta["error"])
    return str(body)[:500]


@dataclass
class ApiClient:
    connection: Connection
    # In-process use (the MCP endpoint mounted on a Tidings server) passes the app's ASGI transport.
    transport: httpx.AsyncBaseTransport | None = None
    timeout: float = 30.0
    _http: httpx.AsyncClient | None = field(default=None, init=False, repr=False)

    @property
    def backend(self) -> Backend:
        return self.connection.backend

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(transport=self.transport, timeout=self.timeout)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _send(
        self,
        method: str,
        url: str,
        *,
        auth: httpx.Auth | tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
        dry_run: bool = False,
    ) -> Any:
        headers = dict(headers or {})
        if dry_run:
            if self.backend != "tidings":
                # Customer.io has no dry runs: show the request that would be made, and make none.
                return {"method": method, "url": url, "params": params or {}, "body": json}
            headers["X-Tidings-Dry-Run"] = "true"
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._client().request(method, url, params=clean, json=json, headers=headers, auth=auth)
        # A task of its own: in-process (ASGI) calls run the server's handlers in the caller's task, and
        # what they set in context variables (a dry run) must not leak into the caller's later calls.
        response = await asyncio.create_task(request)
        if response.status_code >= 400:
            raise ApiError(
                response.status_code, _detail(response), retry_after=response.headers.get("retry-after")
            )
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {"text": response.text}

    async def app(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        dry_run: bool = False,
    ) -> Any:
        return await self._send(
            method,
            f"{self.connection.app_url}{path}",
            headers={"Authorization": f"Bearer {self.connection.app_key}"},
            params=params,
            json=json,
            dry_run=dry_run,
        )

    async def track(self, method: str, path: str, *, json: Any = None, dry_run: bool = False) -> Any:
        c = self.connection
        if not (c.site_id and c.track_key):
            raise MissingCredentials(
                "this tool needs Track API credentials: configure the site id and Track API key "
                "(TIDINGS_MCP_SITE_ID and TIDINGS_MCP_TRACK_KEY, or the X-Tidings-Site-Id and "
                "X-Tidings-Track-Key headers on the MCP endpoint)"
            )
        return await self._send(
            method, f"{c.track_url}{path}", auth=(c.site_id, c.track_key), json=json, dry_run=dry_run
        )

    @property
    def has_track(self) -> bool:
        return bool(self.connection.site_id and self.connection.track_key)

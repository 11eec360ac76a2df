"""Credentials on the wire: Track (Basic site_id:api_key), App (Bearer), Pipelines (Basic key:).

Verified credentials are cached for ``auth_cache_seconds`` so the hot path does not read the credential
table on every request; revocation elsewhere takes effect within that time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import time
from dataclasses import dataclass, field

from starlette.requests import Request

from tidings.db.database import DRY_RUN
from tidings.errors import Forbidden, RateLimited, Unauthorized
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import WorkspaceContext


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def decode_basic(header: str | None) -> tuple[str, str]:
    """Decode HTTP Basic credentials in either base64 alphabet (go-customerio uses the URL-safe one)."""
    if not header or not header.lower().startswith("basic "):
        raise Unauthorized("missing Basic credentials")
    token = header[6:].strip().replace("-", "+").replace("_", "/")
    token += "=" * (-len(token) % 4)
    try:
        decoded = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("malformed Basic credentials") from exc
    user, _, password = decoded.partition(":")
    return user, password


def bearer_token(header: str | None) -> str:
    if not header or not header.lower().startswith("bearer "):
        raise Unauthorized("missing Bearer token")
    return header[7:].strip()


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class Gatekeeper:
    """Credential cache and per-workspace, per-surface token buckets (in this process)."""

    cache_seconds: float
    _cache: dict[tuple[str, str, str], tuple[WorkspaceContext, float]] = field(default_factory=dict)
    _buckets: dict[tuple[int, str], _Bucket] = field(default_factory=dict)
    _pending: dict[tuple[str, str, str], asyncio.Future[WorkspaceContext]] = field(default_factory=dict)

    async def verify(self, runtime: Runtime, kind: str, secret: str, site_id: str | None) -> WorkspaceContext:
        key = (kind, site_id or "", secret)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        # One lookup per key at a time: when a cached entry expires under load, the requests that
        # arrive meanwhile wait for that lookup instead of each reading the credential table.
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        lookup = asyncio.ensure_future(
            runtime.db.read(lambda session: workspaces.authenticate(session, kind, secret, site_id=site_id))
        )
        self._pending[key] = lookup
        try:
            ctx = await lookup
        finally:
            self._pending.pop(key, None)
        if self.cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (ctx, time.monotonic() + self.cache_seconds)
        return ctx

    def throttle(self, ctx: WorkspaceContext, surface: str) -> None:
        rate = float(getattr(ctx.settings.rate_limits, surface))
        if rate <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get((ctx.workspace_id, surface))
        if bucket is None:
            bucket = self._buckets[(ctx.workspace_id, surface)] = _Bucket(tokens=rate, updated=now)
        bucket.tokens = min(rate, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = max(1, math.ceil((1 - bucket.tokens) / rate))
            raise RateLimited(f"rate limited to {rate:g} requests per 1s", retry_after=wait)
        bucket.tokens -= 1


def dry_run_requested(request: Request) -> bool:
    """Whether a write asks to be rehearsed only (``X-Tidings-Dry-Run: true`` or ``?dry_run=true``)."""
    if request.method in ("GET", "HEAD"):
        return False
    flag = request.headers.get("x-tidings-dry-run") or ""
    # Most requests have no query string: skip parsing one (it is on every ingestion request's path).
    if not flag and request.scope.get("query_string"):
        flag = request.query_params.get("dry_run") or ""
    return flag.lower() in ("1", "true", "yes")


def _start_dry_run(request: Request) -> bool:
    """Mark the request's writes as rehearsals (tidings.db.database.DRY_RUN); the route echoes it."""
    if dry_run_requested(request):
        DRY_RUN.set(True)
        return True
    return False


def gatekeeper_of(request: Request) -> Gatekeeper:
    gatekeeper: Gatekeeper = request.app.state.gatekeeper
    return gatekeeper


async def track_workspace(request: Request) -> WorkspaceContext:
    """Track API: Basic auth with the Site ID as user and the Track API key as password."""
    site_id, key = decode_basic(request.headers.get("authorization"))
    gatekeeper = gatekeeper_of(request)
    ctx = await gatekeeper.verify(runtime_of(request), "track", key, site_id)
    gatekeeper.throttle(ctx, "track")
    _start_dry_run(request)
    return ctx


async def optional_track_workspace(request: Request) -> WorkspaceContext | None:
    """Track credentials when sent; endpoints Customer.io leaves open (metrics) accept none."""
    if not request.headers.get("authorization"):
        return None
    return await track_workspace(request)


# POSTs that only read (searches, renderings): a key with the read permission alone may make them.
# The assistant and the segment builder are judged call by call (each tool call under the key's
# permissions), so reading is all it takes to ask.
READ_POSTS = frozenset(
    {
        "/v1/customers",
        "/v1/customers/attributes",
        "/v1/ai/llm/processed_prompt",
        "/v1/assistant",
        "/v1/ai/segment_builder",
    }
)


# What any key may do, whatever its permissions: learn its own permissions and the AI settings that
# govern it, and record its agent calls in the audit log.
ANY_KEY = frozenset({("GET", "/v1/api_key"), ("GET", "/v1/ai/settings"), ("POST", "/v1/audit_log")})


async def app_workspace(request: Request) -> WorkspaceContext:
    """App API: ``Authorization: Bearer <App API key>``; reads need the key's read permission, changes
    its write permission (read_pii and write_live are judged by the agent tools, which know what a call
    means)."""
    token = bearer_token(request.headers.get("authorization"))
    gatekeeper = gatekeeper_of(request)
    ctx = await gatekeeper.verify(runtime_of(request), "app", token, None)
    # A dry run changes nothing, so reading is all it needs.
    rehearsal = _start_dry_run(request)
    if (request.method, request.url.path) not in ANY_KEY:
        reading = request.method in ("GET", "HEAD") or request.url.path in READ_POSTS or rehearsal
        needed = "read" if reading else "write"
        if needed not in ctx.permissions:
            raise Forbidden(f"this API key does not have the {needed} permission")
    gatekeeper.throttle(ctx, "app")
    return ctx


async def pipelines_workspace(request: Request) -> WorkspaceContext:
    """Pipelines API: Basic auth with the write key as user and an empty password."""
    key, _ = decode_basic(request.headers.get("authorization"))
    gatekeeper = gatekeeper_of(request)
    ctx = await gatekeeper.verify(runtime_of(request), "pipelines", key, None)
    gatekeeper.throttle(ctx, "pipelines")
    _start_dry_run(request)
    return ctx

"""The ASGI application: every API on one port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.responses import Response

from tidings import __version__
from tidings.api import (
    app_v1,
    clock_control,
    mcp_endpoint,
    pipelines,
    track_v1,
    track_v2,
    tracking,
    unsubscribe,
)
from tidings.api.auth import Gatekeeper
from tidings.api.fast_lane import FastLane, build_lanes
from tidings.api.paths import EncodedSlashMiddleware
from tidings.api.route_index import index_routes
from tidings.api.surfaces import AppRoute, json_response
from tidings.campaigns import triggers as _triggers  # noqa: F401  (registers campaign triggers)
from tidings.config import get_settings
from tidings.runtime import Runtime, freeze_startup_heap


def create_app(runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime.from_settings(get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.db.start()
        freeze_startup_heap()
        # Tasks that live as long as the app serves (the MCP session manager, started on first use).
        async with anyio.create_task_group() as background:
            app.state.background = background
            yield
            background.cancel_scope.cancel()
        runtime.db.close()

    app = FastAPI(
        title="Tidings",
        version=__version__,
        summary="Self-hosted customer engagement, wire-compatible with Customer.io.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        lifespan=lifespan,
        telemetry=_telemetry(runtime.settings.opentelemetry),
    )
    app.state.runtime = runtime
    app.state.gatekeeper = Gatekeeper(cache_seconds=runtime.settings.auth_cache_seconds)

    app.include_router(operations)
    app.include_router(track_v1.router)
    app.include_router(track_v2.router)
    app.include_router(unsubscribe.router)
    app.include_router(tracking.router)
    for router in app_v1.routers:
        app.include_router(router)
    app.include_router(pipelines.router)
    mcp_endpoint.mount(app)
    if runtime.settings.clock_control:
        app.include_router(clock_control.router)
    index_routes(app)
    if not runtime.settings.opentelemetry:
        app.add_middleware(FastLane, lanes=build_lanes(app))
    # Added last, so it runs first: the lane and the router both see the identifiers' slashes carried.
    app.add_middleware(EncodedSlashMiddleware)
    return app


# A router of its own, so the no-op takes the same path through the server as the ingestion routes
# (tidings.api.fast_lane): the benchmarks measure ingestion against it.
operations = APIRouter(route_class=AppRoute, tags=["Operations"])


@operations.get("/healthz", summary="Liveness; also the benchmarks' no-op baseline")
async def healthz() -> Response:
    return json_response({"status": "ok"})


def _telemetry(enabled: bool) -> TelemetryConfig:
    """FastAPI's native OpenTelemetry instrumentation; when enabled, providers and exporters are configured
    the standard OpenTelemetry way (``OTEL_*`` variables, ``FASTAPI_OTEL_AUTO_CONFIGURE``)."""
    return {"tracing": enabled, "metrics": enabled, "logs": enabled, "operation_spans": enabled}

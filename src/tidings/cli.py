"""The ``tidings`` command: serve, worker, migrate, workspaces and keys."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import time
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from tidings.app import create_app
from tidings.config import Settings, get_settings
from tidings.db import migrate
from tidings.errors import TidingsError
from tidings.runtime import Runtime
from tidings.worker.loop import Worker
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import NewWorkspace

app = typer.Typer(
    help="Tidings: self-hosted customer engagement, wire-compatible with Customer.io.", no_args_is_help=True
)
workspace_app = typer.Typer(help="Create, list and configure workspaces.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list, rotate and revoke API keys.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
app.add_typer(keys_app, name="keys")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or get_settings()
    migrate.upgrade(settings.database_url)
    return Runtime.from_settings(settings)


def _now() -> int:
    return int(time.time())


def _print_credentials(created: NewWorkspace, settings: Settings) -> None:
    base = settings.base_url
    console.print(f"[bold]Workspace[/bold] {created.name} (id {created.workspace_id})")
    console.print(
        f"  Track API      {base}/api/v1   Basic  site_id={created.site_id}  api_key={created.track_api_key}"
    )
    console.print(f"  App API        {base}/v1       Bearer {created.app_api_key}")
    console.print(f"  Pipelines API  {base}/v1       Basic  write_key={created.pipelines_write_key}")
    console.print(f"  Webhook signing key  {created.webhook_signing_key}")
    console.print("  Keep these: secrets are stored hashed and cannot be shown again.")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port for every API.")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Serve HTTP only; run workers separately.")
    ] = False,
) -> None:
    """Run every API on one port, plus the worker and scheduler unless --no-worker."""
    settings = get_settings()
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=updates)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    runtime = _runtime(settings)
    with runtime.db.session() as session:
        first = workspaces.count_workspaces(session) == 0
        created = workspaces.create_workspace(session, "Default", now=_now()) if first else None
    base = settings.base_url
    console.print(f"[bold green]Tidings[/bold green] on {base}  (database: {_redact(settings.database_url)})")
    console.print(f"  API docs  {base}/docs   OpenAPI  {base}/openapi.json")
    if created is not None:
        _print_credentials(created, settings)
    else:
        console.print(
            "  Credentials: `tidings workspace list` and `tidings keys create WORKSPACE --kind track`."
        )
    worker = None if no_worker else Worker(runtime)
    if worker is not None:
        worker.start_thread()
    try:
        uvicorn.run(
            create_app(runtime),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            loop="uvloop",
            http="httptools",
        )
    finally:
        if worker is not None:
            worker.stop()


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@app.command()
def worker() -> None:
    """Run a worker (and scheduler) without HTTP. Run as many as you like against PostgreSQL."""
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    runtime = _runtime(settings)
    instance = Worker(runtime)
    signal.signal(signal.SIGTERM, lambda *_: instance.stop())
    console.print(f"Tidings worker {instance.worker_id} started")
    try:
        instance.run_forever()
    except KeyboardInterrupt:
        instance.stop()


@app.command(name="migrate")
def migrate_command() -> None:
    """Bring the database schema up to date."""
    settings = get_settings()
    migrate.upgrade(settings.database_url)
    console.print("database is up to date")


@workspace_app.command("create")
def workspace_create(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the credentials as JSON.")] = False,
) -> None:
    """Create a workspace with a key of every kind."""
    runtime = _runtime()
    with runtime.db.session() as session:
        created = workspaces.create_workspace(session, name, now=_now())
    if as_json:
        payload = {
            "workspace_id": created.workspace_id,
            "site_id": created.site_id,
            "track_api_key": created.track_api_key,
            "app_api_key": created.app_api_key,
            "pipelines_write_key": created.pipelines_write_key,
            "webhook_signing_key": created.webhook_signing_key,
        }
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        _print_credentials(created, runtime.settings)


@workspace_app.command("list")
def workspace_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List workspaces."""
    runtime = _runtime()
    with runtime.db.read_session() as session:
        rows = workspaces.list_workspaces(session)
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table("id", "name", "site_id", "people", "objects")
    for row in rows:
        table.add_row(str(row["id"]), row["name"], row["site_id"], str(row["people"]), str(row["objects"]))
    console.print(table)


@workspace_app.command("configure")
def workspace_configure(
    workspace: str,
    settings_: Annotated[
        list[str],
        typer.Option(
            "--set", help="SETTING=VALUE, e.g. limits.max_attribute_value_bytes=2000 or rate_limits.track=100"
        ),
    ],
) -> None:
    """Change a workspace's limits or rate limits."""
    changes: dict[str, Any] = {}
    for item in settings_:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected SETTING=VALUE, got {item!r}")
        try:
            changes[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key.strip()] = raw
    runtime = _runtime()
    with runtime.db.session() as session:
        updated = workspaces.update_settings(session, workspaces.get_workspace(session, workspace), changes)
    sys.stdout.write(updated.model_dump_json(indent=2) + "\n")


def _key_dict(info: Any) -> dict[str, Any]:
    return dataclasses.asdict(info)


@keys_app.command("create")
def keys_create(
    workspace: str,
    kind: Annotated[str, typer.Option(help="track, app, pipelines or webhook_signing")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a key. The secret is printed once."""
    runtime = _runtime()
    with runtime.db.session() as session:
        created = workspaces.create_key(session, workspace, kind, name=name, now=_now())
        site_id = workspaces.get_workspace(session, workspace).site_id
    payload = {**_key_dict(created.info), "secret": created.secret, "site_id": site_id}
    sys.stdout.write(json.dumps(payload) + "\n") if as_json else console.print(payload)


@keys_app.command("list")
def keys_list(workspace: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List a workspace's keys (hints only; secrets are never shown again)."""
    runtime = _runtime()
    with runtime.db.read_session() as session:
        rows = [_key_dict(info) for info in workspaces.list_keys(session, workspace)]
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table("id", "kind", "name", "hint", "created_at", "revoked_at")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("id", "kind", "name", "hint", "created_at", "revoked_at")))
    console.print(table)


@keys_app.command("rotate")
def keys_rotate(key_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Replace a key with a new one of the same kind; the old one stops working."""
    runtime = _runtime()
    with runtime.db.session() as session:
        created = workspaces.rotate_key(session, key_id, now=_now())
    payload = {**_key_dict(created.info), "secret": created.secret}
    sys.stdout.write(json.dumps(payload) + "\n") if as_json else console.print(payload)


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke a key."""
    runtime = _runtime()
    with runtime.db.session() as session:
        info = workspaces.revoke_key(session, key_id, now=_now())
    console.print(f"key {info.id} ({info.kind}) revoked")


def main() -> None:
    try:
        app()
    except Exception as exc:  # the CLI's last word: a message, not a traceback
        if isinstance(exc, TidingsError):
            err.print(f"[red]error:[/red] {exc.message}")
            raise SystemExit(2) from exc
        raise

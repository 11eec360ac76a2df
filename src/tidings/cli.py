"""The ``tidings`` command: serve, worker, migrate, workspaces, keys, segments, messages, campaigns,
AI settings and credits, and the audit log."""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import typer
import uvicorn
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.agents.client import Connection
from tidings.ai import credits as ai_credits
from tidings.ai import settings as ai_settings
from tidings.ai.catalogue import catalogue
from tidings.api.http_protocol import HttpProtocol
from tidings.app import create_app
from tidings.audit import service as audit_service
from tidings.campaigns import service as campaign_service
from tidings.config import Settings, get_settings
from tidings.db import migrate
from tidings.errors import NotFound, TidingsError
from tidings.messaging import files as message_files
from tidings.messaging import templates
from tidings.models import Account
from tidings.runtime import Runtime, freeze_startup_heap
from tidings.segments import service as segments
from tidings.segments.conditions import parse as parse_conditions
from tidings.worker.loop import Worker
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import NewWorkspace

log = logging.getLogger("tidings.worker")

app = typer.Typer(
    help="Tidings: self-hosted customer engagement, wire-compatible with Customer.io.", no_args_is_help=True
)
workspace_app = typer.Typer(help="Create, list and configure workspaces.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list, rotate and revoke API keys.", no_args_is_help=True)
segments_app = typer.Typer(
    help="Apply segment definitions from files, and list segments.", no_args_is_help=True
)
app.add_typer(workspace_app, name="workspace")
app.add_typer(keys_app, name="keys")
messages_app = typer.Typer(
    help="Apply transactional messages, layouts and snippets from files, and list messages.",
    no_args_is_help=True,
)
app.add_typer(segments_app, name="segments")
app.add_typer(messages_app, name="messages")
campaigns_app = typer.Typer(
    help="Campaigns and broadcasts: apply definitions from files, list them.", no_args_is_help=True
)
app.add_typer(campaigns_app, name="campaigns")
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


# How long `serve` waits, once asked to stop, for its worker thread to finish the round it is in.
SHUTDOWN_SECONDS = 30.0


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
    thread = worker.start_thread() if worker is not None else None
    try:
        uvicorn.run(
            create_app(runtime),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            loop="uvloop",
            http=HttpProtocol,
        )
    finally:
        if worker is not None and thread is not None:
            worker.stop()
            # Let it finish what it started (the outcomes of a batch of sends), so nothing it sent is
            # sent again by the next worker once the lease runs out.
            thread.join(timeout=SHUTDOWN_SECONDS)


SECRET_SETTINGS = frozenset({"auth_token", "private_key", "service_account"})


def _masked(value: Any, key: str = "") -> Any:
    """Settings as printed: provider secrets hidden (terminals and CI logs keep what they show)."""
    if isinstance(value, dict):
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if value is not None and key in SECRET_SETTINGS:
        return "***"
    if isinstance(value, str) and key.endswith("_url"):
        return _redact(value)
    return value


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

    def stop(signum: int, _frame: object) -> None:
        # Ctrl-C or SIGTERM asks the loop to stop after its current stage, so the sends under way are
        # recorded (a KeyboardInterrupt raised mid-stage would leave them to be sent again once their
        # lease ran out). A second signal stops at once.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log.info("stopping on %s", signal.Signals(signum).name)
        instance.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # `kill -USR1` prints every thread's stack to stderr: what a worker that will not stop is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    console.print(f"Tidings worker {instance.worker_id} started")
    freeze_startup_heap()
    instance.run_forever()
    log.info("stopped")


@app.command(name="migrate")
def migrate_command() -> None:
    """Bring the database schema up to date."""
    settings = get_settings()
    migrate.upgrade(settings.database_url)
    console.print("database is up to date")


@app.command(name="mcp")
def mcp_command() -> None:
    """Serve the agent tools over MCP on stdio (for Claude Desktop, Cursor and other MCP clients).

    Configured by the environment: TIDINGS_MCP_APP_KEY (required), TIDINGS_MCP_URL (default
    http://127.0.0.1:8080), TIDINGS_MCP_SITE_ID and TIDINGS_MCP_TRACK_KEY (for tools that change people
    and events), TIDINGS_MCP_BACKEND (tidings, customerio-us or customerio-eu); against Customer.io also
    TIDINGS_MCP_PERMISSIONS (default read) and TIDINGS_MCP_AUDIT_FILE (default ~/.tidings/mcp-audit.jsonl)."""
    try:
        connection = Connection.from_environment()
    except ValueError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if not connection.app_key:
        err.print("[red]error:[/red] set TIDINGS_MCP_APP_KEY to an App API key")
        raise typer.Exit(2)
    # Imported here: the MCP SDK is heavy, and `serve` and `worker` never need it at start.
    from tidings.agents import mcp_server  # noqa: PLC0415

    anyio.run(mcp_server.run_stdio, connection)


@app.command(name="ask")
def ask_command(
    instruction: str,
    model: Annotated[str | None, typer.Option(help="A model id from `tidings ai models`")] = None,
    max_steps: Annotated[int, typer.Option(min=1, max=20)] = 10,
    conversation: Annotated[
        str | None, typer.Option(help="Continue this conversation (its id, printed by an earlier ask)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask the assistant (POST /v1/assistant on the server at TIDINGS_MCP_URL, as TIDINGS_MCP_APP_KEY;
    TIDINGS_MCP_SITE_ID and TIDINGS_MCP_TRACK_KEY let it change people). Prints the conversation's id:
    pass it as --conversation to follow up."""
    connection = Connection.from_environment()
    if not connection.app_key:
        err.print("[red]error:[/red] set TIDINGS_MCP_APP_KEY to an App API key")
        raise typer.Exit(2)
    headers = {"Authorization": f"Bearer {connection.app_key}"}
    if connection.site_id and connection.track_key:
        headers |= {"X-Tidings-Site-Id": connection.site_id, "X-Tidings-Track-Key": connection.track_key}
    body: dict[str, Any] = {"instruction": instruction, "max_steps": max_steps}
    if model:
        body["model"] = model
    if conversation:
        body["conversation_id"] = conversation
    try:
        response = httpx.post(f"{connection.app_url}/v1/assistant", json=body, headers=headers, timeout=600)
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if response.status_code != 200:
        err.print(f"[red]error:[/red] HTTP {response.status_code}: {escape(response.text)}")
        raise typer.Exit(2)
    reply = response.json()
    if as_json:
        sys.stdout.write(json.dumps(reply) + "\n")
        return
    for made in reply["calls"]:
        mark = "ok" if made["ok"] else "refused/failed"
        err.print(f"[dim]→ {escape(made['tool'])} ({mark}{', dry run' if made['dry_run'] else ''})[/dim]")
    console.print(reply["answer"])
    err.print(f"[dim]conversation {reply['conversation_id']} (follow up with --conversation)[/dim]")


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
    sys.stdout.write(json.dumps(_masked(updated.model_dump()), indent=2) + "\n")


def _key_dict(info: Any) -> dict[str, Any]:
    return dataclasses.asdict(info)


@keys_app.command("create")
def keys_create(
    workspace: str,
    kind: Annotated[str, typer.Option(help="track, app, pipelines or webhook_signing")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    role: Annotated[
        str, typer.Option(help="member, or admin (may change admin-only account settings and credits)")
    ] = "member",
    permissions: Annotated[
        str, typer.Option(help="comma-separated: read, read_pii, write, write_live (default: all)")
    ] = "read,read_pii,write,write_live",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a key. The secret is printed once."""
    runtime = _runtime()
    granted = [p.strip() for p in permissions.split(",") if p.strip()]
    with runtime.db.session() as session:
        created = workspaces.create_key(
            session, workspace, kind, name=name, now=_now(), role=role, permissions=granted
        )
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
    columns = ("id", "kind", "name", "role", "permissions", "hint", "created_at", "revoked_at")
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
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


# -- segments ---------------------------------------------------------------------------------------------

SEGMENT_KEYS = ("name", "description", "tags", "conditions")


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: ``2024-01-01`` stays the string a condition document expects."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _ApplyError(Exception):
    """A segment file that cannot be applied; the message says where."""


def _read_document(file: str) -> Any:
    """A YAML or JSON file (by extension; ``-`` reads YAML from stdin) as JSON-compatible data."""
    try:
        if file == "-":
            text, as_json = sys.stdin.read(), False
        else:
            text, as_json = Path(file).read_text(encoding="utf-8"), file.lower().endswith(".json")
    except (OSError, UnicodeDecodeError) as exc:
        raise _ApplyError(f"cannot read {file}: {exc}") from exc
    try:
        loaded = json.loads(text) if as_json else yaml.load(text, Loader=_Loader)
        # Only what JSON can hold goes in (no YAML sets, binary or non-string keys).
        return json.loads(json.dumps(loaded, allow_nan=False))
    except json.JSONDecodeError as exc:
        raise _ApplyError(f"{file} is not valid JSON: {exc}") from exc
    except yaml.YAMLError as exc:
        raise _ApplyError(f"{file} is not valid YAML: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise _ApplyError(f"{file} holds something JSON cannot: {exc}") from exc


def _segment_documents(file: str) -> tuple[list[Any], str]:
    """The segments a file holds and the path prefix of its items (``segments[i]`` or ``segment``)."""
    document = _read_document(file)
    if isinstance(document, list):
        return document, "segments"
    if isinstance(document, dict):
        return [document], ""
    raise _ApplyError(f"{file} must hold a segment {{name, conditions, ...}} or a list of them")


def _apply_segments(
    session: Session, workspace_ref: str, documents: list[Any], prefix: str, *, now: int
) -> list[dict[str, Any]]:
    """Create or update every segment of a file, matched to existing segments by name."""
    workspace_id = workspaces.get_workspace(session, workspace_ref).id
    existing: dict[str, list[dict[str, Any]]] = {}
    for view in segments.list_segments(session, workspace_id):
        existing.setdefault(view["name"], []).append(view)
    seen: dict[str, str] = {}
    results = []
    for index, spec in enumerate(documents):
        where = f"{prefix}[{index}]" if prefix else "segment"
        if not isinstance(spec, dict):
            raise _ApplyError(f"{where} must be an object {{name, description, tags, conditions}}")
        unknown = sorted(set(spec) - set(SEGMENT_KEYS))
        if unknown:
            raise _ApplyError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(SEGMENT_KEYS)})")
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _ApplyError(f"{where}.name must be a non-empty string")
        name = name.strip()
        if name in seen:
            raise _ApplyError(f"{where}.name: {name!r} is also the name of {seen[name]}")
        seen[name] = where
        if spec.get("conditions") is not None:
            parse_conditions(spec["conditions"], f"{where}.conditions")
        matches = existing.get(name, [])
        if len(matches) > 1:
            ids = ", ".join(str(view["id"]) for view in matches)
            raise _ApplyError(f"{where}.name: {len(matches)} segments are named {name!r} ({ids})")
        body = {"segment": {**spec, "name": name}}
        try:
            if not matches:
                view, action = segments.create_segment(session, workspace_id, body, now=now), "created"
            elif _differs(matches[0], spec):
                view = segments.update_segment(session, workspace_id, matches[0]["id"], body, now=now)
                action = "updated"
            else:
                view, action = matches[0], "unchanged"
        except TidingsError as exc:
            raise _ApplyError(_located(exc.message, where)) from exc
        results.append({"action": action, **{k: view[k] for k in ("id", "name", "type", "state")}})
    return results


def _differs(current: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether applying ``spec`` changes anything; keys the file leaves out keep their stored values."""
    if "description" in spec and (spec["description"] or "") != (current["description"] or ""):
        return True
    if "tags" in spec and spec["tags"] != current["tags"]:
        return True
    return spec.get("conditions") is not None and spec["conditions"] != current.get("conditions")


def _located(message: str, where: str) -> str:
    """A service error about ``segment.…`` re-addressed to the file's item."""
    if message.startswith("segment."):
        return where + message[len("segment") :]
    return f"{where}: {message}"


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(1)


@segments_app.command("apply")
def segments_apply(
    file: Annotated[
        str,
        typer.Argument(help="A YAML or JSON file (by extension) of one segment or a list; - reads stdin."),
    ],
    workspace: Annotated[str, typer.Option("--workspace", help="Workspace id, site id or name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Create or update segments from a file, matched by name: all of the file is applied, or none of it."""
    try:
        documents, prefix = _segment_documents(file)
        runtime = _runtime()
        now = runtime.clock.now_int()
        with runtime.db.session() as session:
            results = _apply_segments(session, workspace, documents, prefix, now=now)
    except _ApplyError as exc:
        raise _fail(str(exc)) from exc
    except TidingsError as exc:
        raise _fail(exc.message) from exc
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
        return
    for row in results:
        sys.stdout.write(f"{row['action']:<9} {row['id']:>6}  {row['state']:<12}  {row['name']}\n")


@segments_app.command("list")
def segments_list(
    workspace: Annotated[str, typer.Option("--workspace", help="Workspace id, site id or name.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List a workspace's segments with their build state and member count."""
    try:
        runtime = _runtime()
        with runtime.db.read_session() as session:
            workspace_id = workspaces.get_workspace(session, workspace).id
            rows = [
                {**view, "members": segments.customer_count(session, workspace_id, view["id"])}
                for view in segments.list_segments(session, workspace_id)
            ]
    except TidingsError as exc:
        raise _fail(exc.message) from exc
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table("id", "name", "type", "state", "members")
    for row in rows:
        state = row["state"] if row["progress"] is None else f"{row['state']} ({row['progress']}%)"
        table.add_row(str(row["id"]), escape(row["name"]), row["type"], state, str(row["members"]))
    console.print(table)


# -- messages ---------------------------------------------------------------------------------------------


@messages_app.command("apply")
def messages_apply(
    file: Annotated[
        str,
        typer.Argument(help="A YAML or JSON file of layouts, snippets and messages (docs/messaging.md)."),
    ],
    workspace: Annotated[str, typer.Option("--workspace", help="Workspace id, site id or name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Create or update layouts, snippets and transactional messages from a file: all of it, or none."""
    try:
        document = _read_document(file)
        runtime = _runtime()
        now = runtime.clock.now_int()
        base = Path(file).parent if file != "-" else Path.cwd()
        with runtime.db.session() as session:
            workspace_id = workspaces.get_workspace(session, workspace).id
            results = message_files.apply(session, workspace_id, document, base=base, now=now)
    except _ApplyError as exc:
        raise _fail(str(exc)) from exc
    except TidingsError as exc:
        raise _fail(exc.message) from exc
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
        return
    for row in results:
        ident = "" if row["id"] is None else row["id"]
        sys.stdout.write(f"{row['action']:<9} {row['kind']:<8} {ident!s:>6}  {row['name']}\n")


@messages_app.command("list")
def messages_list(
    workspace: Annotated[str, typer.Option("--workspace", help="Workspace id, site id or name.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List a workspace's transactional messages."""
    try:
        runtime = _runtime()
        with runtime.db.read_session() as session:
            rows = templates.list_templates(session, workspaces.get_workspace(session, workspace).id)
    except TidingsError as exc:
        raise _fail(exc.message) from exc
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table("id", "name", "trigger", "type")
    for row in rows:
        table.add_row(str(row["id"]), escape(row["name"]), escape(row["trigger_name"] or ""), row["type"])
    console.print(table)


# -- campaigns --------------------------------------------------------------------------------------------


@campaigns_app.command("apply")
def campaigns_apply(
    file: Annotated[str, typer.Argument(help="A YAML or JSON campaign definition, or {campaigns: [...]}.")],
    workspace: Annotated[str, typer.Option("--workspace", help="Workspace id, site id or name.")],
    activate: Annotated[bool, typer.Option("--activate", help="Start draft campaigns once saved.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Create campaigns, or save a new version of those with the same name: all of the file, or none."""
    try:
        document = _read_document(file)
        items = (
            document["campaigns"] if isinstance(document, dict) and "campaigns" in document else [document]
        )
        if not isinstance(items, list):
            raise _fail("campaigns must be a list of definitions")
        runtime = _runtime()
        now = runtime.clock.now_int()
        results = []
        with runtime.db.session() as session:
            workspace_id = workspaces.get_workspace(session, workspace).id
            for item in items:
                results.append(
                    campaign_service.apply(session, workspace_id, item, activate=activate, now=now)
                )
    except TidingsError as exc:
        raise _fail(exc.message) from exc
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
        return
    for row in results:
        sys.stdout.write(
            f"{row['action']:<9} {row['id']!s:>6}  v{row['version']}  {row['state']:<8} {row['name']}\n"
        )


@campaigns_app.command("list")
def campaigns_list(
    workspace: Annotated[str, typer.Option("--workspace", help="Workspace id, site id or name.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List a workspace's campaigns and broadcasts with their journeys by state."""
    try:
        runtime = _runtime()
        with runtime.db.read_session() as session:
            workspace_id = workspaces.get_workspace(session, workspace).id
            rows = [
                {**view, "journeys": campaign_service.journey_counts(session, view["id"])}
                for kind in ("campaign", "broadcast")
                for view in campaign_service.list_campaigns(session, workspace_id, kind=kind)
            ]
    except TidingsError as exc:
        raise _fail(exc.message) from exc
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table("id", "name", "type", "state", "version", "journeys")
    for row in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(row["journeys"].items()))
        table.add_row(
            str(row["id"]), escape(row["name"]), row["type"], row["status"], str(row["version"]), counts
        )
    console.print(table)


# -- AI settings, credits and the audit log ---------------------------------------------------------------

ai_app = typer.Typer(
    help="AI settings, business context, the model catalogue and AI credits of the account.",
    no_args_is_help=True,
)
app.add_typer(ai_app, name="ai")

WorkspaceOption = Annotated[
    str | None,
    typer.Option(
        "--workspace",
        help="Act on this workspace's account (id, site id or name); default: the first account.",
    ),
]


def _refused(exc: TidingsError) -> typer.Exit:
    """A service's refusal, printed as ``main`` prints it (exit code 2), but escaped: values a user typed
    (a prompt, a note) may hold text rich would read as markup."""
    err.print(f"[red]error:[/red] {escape(exc.message)}")
    return typer.Exit(2)


def _account_id(session: Session, workspace: str | None) -> int:
    """The account a command acts on: the workspace's, or the first one (a server normally has one)."""
    if workspace is not None:
        return workspaces.get_workspace(session, workspace).account_id
    account_id = session.scalar(select(Account.id).order_by(Account.id).limit(1))
    if account_id is None:
        raise NotFound("there is no account yet: create a workspace first (tidings workspace create NAME)")
    return account_id


def _setting_changes(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items as the changes ``ai_settings.update`` takes: values are JSON where they parse
    (``false``, ``null``), text otherwise; ``safety.CATEGORY=THRESHOLD`` sets one safety category."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, dot, tail = key.partition(".")
        # The compliance prompt is text: `compliance_prompt=42` means the words "42", not a number.
        if head == "compliance_prompt" and not isinstance(value, str):
            value = raw
        if not dot:
            changes[key] = value
            continue
        nested = changes.setdefault(head, {})
        if not isinstance(nested, dict):
            raise typer.BadParameter(f"{head} is set both whole and by part in {item!r}", param_hint="--set")
        nested[tail] = value
    return changes


def _settings_rows(view: dict[str, Any]) -> list[tuple[str, Any]]:
    """One row per setting; each safety category on its own row, as ``--set`` addresses it."""
    rows: list[tuple[str, Any]] = []
    for key, value in view.items():
        if key == "safety":
            rows.extend((f"safety.{category}", threshold) for category, threshold in value.items())
        else:
            rows.append((key, value))
    return rows


@ai_app.command("settings")
def ai_settings_command(
    workspace: WorkspaceOption = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE (repeatable), e.g. ai_enabled=false, safety.harassment=block_low_and_above "
            "(null: the provider's default), compliance_prompt='Never promise refunds.'",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the account's AI settings, or change them with --set (every change is audited as "cli")."""
    changes = _setting_changes(set_ or [])
    try:
        runtime = _runtime()
        if changes:
            now = runtime.clock.now_int()
            with runtime.db.session() as session:
                account_id = _account_id(session, workspace)
                view = ai_settings.update(session, account_id, changes, actor=ai_settings.CLI, now=now).view()
        else:
            with runtime.db.read_session() as session:
                view = ai_settings.read(session, _account_id(session, workspace)).view()
    except TidingsError as exc:
        raise _refused(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(view) + "\n")
        return
    table = Table("setting", "value")
    for key, value in _settings_rows(view):
        shown = "(provider default)" if value is None else json.dumps(value, ensure_ascii=False)
        table.add_row(key, escape(shown))
    console.print(table)


@ai_app.command("context")
def ai_context_command(
    workspace: Annotated[str, typer.Argument(help="Workspace id, site id or name.")],
    company: Annotated[str | None, typer.Option(help="What the company is and does.")] = None,
    product: Annotated[str | None, typer.Option(help="The product AI generations write about.")] = None,
    audience: Annotated[str | None, typer.Option(help="Who the messages are for.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a workspace's business context for AI generations, or change parts of it (audited)."""
    # An empty value clears that part, so only options left out keep their stored text.
    changes = {
        key: value
        for key, value in {"company": company, "product": product, "audience": audience}.items()
        if value is not None
    }
    try:
        runtime = _runtime()
        if changes:
            now = runtime.clock.now_int()
            with runtime.db.session() as session:
                workspace_id = workspaces.get_workspace(session, workspace).id
                context = ai_settings.update_business_context(
                    session, workspace_id, changes, actor=ai_settings.CLI, now=now
                )
        else:
            with runtime.db.read_session() as session:
                context = ai_settings.business_context(
                    session, workspaces.get_workspace(session, workspace).id
                )
    except TidingsError as exc:
        raise _refused(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(context) + "\n")
        return
    table = Table("key", "value")
    for key, value in context.items():
        table.add_row(key, escape(value))
    console.print(table)


@ai_app.command("models")
def ai_models_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the model catalogue: provider, class, credits per call and availability (never the keys).

    The catalogue is TIDINGS_AI_MODELS, or the built-in list; a model is available once its provider has a
    key (or, for openai, a base URL)."""
    try:
        models = catalogue().views()
    except (ValueError, OSError) as exc:
        # A broken TIDINGS_AI_MODELS is a configuration mistake to name, not a traceback to show.
        err.print(f"[red]error:[/red] the model catalogue cannot be read: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if as_json:
        sys.stdout.write(json.dumps(models) + "\n")
        return
    table = Table("id", "provider", "model", "class", "credits", "available", "label")
    for model in models:
        table.add_row(
            escape(model["id"]),
            model["provider"],
            escape(model["model"]),
            model["class"],
            f"{model['credits']:g}",
            "yes" if model["available"] else "no",
            escape(model["label"]),
        )
    console.print(table)


@ai_app.command("credits")
def ai_credits_command(
    workspace: WorkspaceOption = None,
    add: Annotated[float | None, typer.Option("--add", help="Add this many credits (audited).")] = None,
    note: Annotated[str, typer.Option(help="Why credits were added, kept in the ledger.")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the account's AI credit balance and usage by kind and model; --add grants credits."""
    if note and add is None:
        raise typer.BadParameter("--note describes credits added with --add", param_hint="--note")
    try:
        runtime = _runtime()
        if add is not None:
            now = runtime.clock.now_int()
            with runtime.db.session() as session:
                account_id = _account_id(session, workspace)
                ai_credits.grant(session, account_id, add, actor=ai_settings.CLI, note=note, now=now)
                found = ai_credits.summary(session, account_id)
        else:
            with runtime.db.read_session() as session:
                found = ai_credits.summary(session, _account_id(session, workspace))
    except TidingsError as exc:
        raise _refused(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(found) + "\n")
        return
    console.print(f"[bold]Balance[/bold] {found['balance']:g} credits   used {found['used']:g}")
    for title, bucket in (("kind", found["by_kind"]), ("model", found["by_model"])):
        if not bucket:
            continue
        table = Table(title, "calls", "credits")
        for name, usage in sorted(bucket.items()):
            table.add_row(escape(name or "-"), str(usage["calls"]), f"{usage['credits']:g}")
        console.print(table)


def _when(at: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


@ai_app.command("ledger")
def ai_ledger_command(
    workspace: WorkspaceOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many entries.")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every movement of the account's AI credits, newest first: grants and what each call spent."""
    try:
        runtime = _runtime()
        with runtime.db.read_session() as session:
            found = ai_credits.ledger(session, _account_id(session, workspace), limit=limit)
    except TidingsError as exc:
        raise _refused(exc) from exc
    if as_json:
        # The App API's shape ({entries, next}), so scripts read either the same way.
        sys.stdout.write(json.dumps(found) + "\n")
        return
    table = Table("id", "at (UTC)", "kind", "credits", "balance", "model", "actor", "note")
    for entry in found["entries"]:
        table.add_row(
            str(entry["id"]),
            _when(entry["at"]),
            entry["kind"],
            f"{entry['credits']:+g}",
            f"{entry['balance']:g}",
            escape(entry["model"] or ""),
            escape(entry["actor"] or ""),
            escape(entry["note"] or ""),
        )
    console.print(table)


@app.command("audit")
def audit_command(
    workspace: WorkspaceOption = None,
    action: Annotated[
        str | None, typer.Option(help="Only actions starting with this, e.g. ai_settings or ai_credits.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many entries.")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The account's audit log, newest first: who changed what, with old and new values."""
    try:
        runtime = _runtime()
        with runtime.db.read_session() as session:
            found = audit_service.entries(
                session, _account_id(session, workspace), limit=limit, action=action
            )
    except TidingsError as exc:
        raise _refused(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(found) + "\n")
        return
    table = Table("id", "at (UTC)", "actor", "action", "target", "old", "new")
    for entry in found["entries"]:
        table.add_row(
            str(entry["id"]),
            _when(entry["at"]),
            escape(entry["actor"]),
            escape(entry["action"]),
            escape(entry["target"]),
            escape(json.dumps(entry["old"], ensure_ascii=False)),
            escape(json.dumps(entry["new"], ensure_ascii=False)),
        )
    console.print(table)


def main() -> None:
    try:
        app()
    except Exception as exc:  # the CLI's last word: a message, not a traceback
        if isinstance(exc, TidingsError):
            err.print(f"[red]error:[/red] {exc.message}")
            raise SystemExit(2) from exc
        raise

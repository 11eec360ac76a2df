"""Workspaces and credentials: creation, rotation, revocation and verification."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.ai import settings as ai_settings
from tidings.errors import InvalidInput, NotFound, Unauthorized
from tidings.ids import hash_secret, new_secret, new_site_id
from tidings.models import Account, Credential, Person, Workspace
from tidings.models.object import Object, ObjectType
from tidings.models.workspace import PERMISSIONS
from tidings.workspaces.limits import WorkspaceSettings
from tidings.workspaces.schemas import KEY_KINDS, ROLES, KeyInfo, NewKey, NewWorkspace, WorkspaceContext

_PREFIXES = {"track": "trk_", "app": "app_", "pipelines": "cdp_", "webhook_signing": "whsec_"}


def create_workspace(
    session: Session, name: str, *, now: int, account_name: str | None = None
) -> NewWorkspace:
    account = session.scalar(select(Account).order_by(Account.id).limit(1))
    if account is None:
        account = Account(name=account_name or "Tidings", created_at=now)
        session.add(account)
        session.flush()
        # The account's AI settings and starting credits exist from the start, so concurrent first uses
        # never race to create them.
        ai_settings.account_row(session, account.id, now=now)
    workspace = Workspace(
        account_id=account.id, name=name, site_id=new_site_id(), settings={}, created_at=now
    )
    session.add(workspace)
    session.flush()
    # Whoever creates a workspace administers it: its first keys are admin keys.
    keys = {
        kind: _add_key(session, workspace.id, kind, name="default", now=now, role="admin").secret
        for kind in KEY_KINDS
    }
    return NewWorkspace(
        workspace_id=workspace.id,
        name=workspace.name,
        site_id=workspace.site_id,
        track_api_key=keys["track"],
        app_api_key=keys["app"],
        pipelines_write_key=keys["pipelines"],
        webhook_signing_key=keys["webhook_signing"],
    )


def count_workspaces(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Workspace)) or 0


def list_workspaces(session: Session, *, workspace_id: int | None = None) -> list[dict[str, Any]]:
    """Workspaces with the counts ``GET /v1/workspaces`` reports."""
    query = select(Workspace).order_by(Workspace.id)
    if workspace_id is not None:
        query = query.where(Workspace.id == workspace_id)
    rows = []
    for workspace in session.scalars(query):
        people = session.scalar(select(func.count()).where(Person.workspace_id == workspace.id)) or 0
        objects = session.scalar(select(func.count()).where(Object.workspace_id == workspace.id)) or 0
        types = session.scalar(select(func.count()).where(ObjectType.workspace_id == workspace.id)) or 0
        rows.append(
            {
                "id": workspace.id,
                "name": workspace.name,
                "site_id": workspace.site_id,
                "messages_sent": 0,
                "billable_messages_sent": 0,
                "people": people,
                "object_types": types,
                "objects": objects,
                "created_at": workspace.created_at,
            }
        )
    return rows


def get_workspace(session: Session, workspace_ref: str) -> Workspace:
    """Find a workspace by id, site id or name (CLI convenience)."""
    query = select(Workspace).where((Workspace.site_id == workspace_ref) | (Workspace.name == workspace_ref))
    if workspace_ref.isdigit():
        query = select(Workspace).where(Workspace.id == int(workspace_ref))
    workspace = session.scalars(query.order_by(Workspace.id)).first()
    if workspace is None:
        raise NotFound(f"no workspace {workspace_ref!r}")
    return workspace


def update_settings(session: Session, workspace: Workspace, changes: dict[str, Any]) -> WorkspaceSettings:
    merged = WorkspaceSettings.from_stored(workspace.settings).model_dump()
    for dotted, value in changes.items():
        target = merged
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(target.get(part), dict):
                raise InvalidInput(f"unknown setting {dotted!r}")
            target = target[part]
        if leaf not in target:
            raise InvalidInput(f"unknown setting {dotted!r}")
        target[leaf] = value
    try:
        validated = WorkspaceSettings.model_validate(merged)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    workspace.settings = validated.model_dump()
    session.flush()
    return validated


# -- keys --------------------------------------------------------------------------------------------


def _add_key(
    session: Session,
    workspace_id: int,
    kind: str,
    *,
    name: str,
    now: int,
    role: str = "member",
    permissions: Sequence[str] = PERMISSIONS,
) -> NewKey:
    if kind not in KEY_KINDS:
        raise InvalidInput(f"key kind must be one of {', '.join(KEY_KINDS)}")
    if role not in ROLES:
        raise InvalidInput(f"key role must be one of {', '.join(ROLES)}")
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown:
        raise InvalidInput(f"unknown permission {unknown[0]!r}; expected {', '.join(PERMISSIONS)}")
    secret = new_secret(_PREFIXES[kind])
    credential = Credential(
        workspace_id=workspace_id,
        kind=kind,
        name=name,
        secret_hash=hash_secret(secret),
        secret_plain=secret if kind == "webhook_signing" else None,
        hint=secret[: len(_PREFIXES[kind]) + 4],
        role=role,
        permissions=[p for p in PERMISSIONS if p in permissions],
        created_at=now,
    )
    session.add(credential)
    session.flush()
    return NewKey(info=_key_info(credential), secret=secret)


def create_key(
    session: Session,
    workspace_ref: str,
    kind: str,
    *,
    name: str,
    now: int,
    role: str = "member",
    permissions: Sequence[str] = PERMISSIONS,
) -> NewKey:
    workspace = get_workspace(session, workspace_ref)
    return _add_key(session, workspace.id, kind, name=name, now=now, role=role, permissions=permissions)


def list_keys(session: Session, workspace_ref: str) -> list[KeyInfo]:
    workspace = get_workspace(session, workspace_ref)
    rows = session.scalars(
        select(Credential).where(Credential.workspace_id == workspace.id).order_by(Credential.id)
    )
    return [_key_info(row) for row in rows]


def revoke_key(session: Session, key_id: int, *, now: int) -> KeyInfo:
    credential = session.get(Credential, key_id)
    if credential is None:
        raise NotFound(f"no key {key_id}")
    if credential.revoked_at is None:
        credential.revoked_at = now
    session.flush()
    return _key_info(credential)


def rotate_key(session: Session, key_id: int, *, now: int) -> NewKey:
    """Issue a new key of the same kind and revoke the old one."""
    old = revoke_key(session, key_id, now=now)
    return _add_key(
        session,
        old.workspace_id,
        old.kind,
        name=old.name,
        now=now,
        role=old.role,
        permissions=old.permissions,
    )


def webhook_signing_key(session: Session, workspace_id: int) -> str | None:
    return session.scalar(
        select(Credential.secret_plain)
        .where(
            Credential.workspace_id == workspace_id,
            Credential.kind == "webhook_signing",
            Credential.revoked_at.is_(None),
        )
        .order_by(Credential.id.desc())
        .limit(1)
    )


def _key_info(credential: Credential) -> KeyInfo:
    return KeyInfo(
        id=credential.id,
        workspace_id=credential.workspace_id,
        kind=credential.kind,
        name=credential.name,
        hint=credential.hint,
        role=credential.role,
        permissions=list(credential.permissions or []),
        created_at=credential.created_at,
        revoked_at=credential.revoked_at,
    )


# -- verification ----------------------------------------------------------------------------------


def authenticate(session: Session, kind: str, secret: str, *, site_id: str | None = None) -> WorkspaceContext:
    """Find the live credential of ``kind`` whose secret is ``secret`` (and whose workspace has
    ``site_id`` when given). Hashes are compared in constant time."""
    if not secret:
        raise Unauthorized("missing credentials")
    wanted = hash_secret(secret)
    query = (
        select(Credential, Workspace)
        .join(Workspace, Workspace.id == Credential.workspace_id)
        .where(Credential.kind == kind, Credential.revoked_at.is_(None), Credential.secret_hash == wanted)
    )
    for credential, workspace in session.execute(query):
        site_ok = site_id is None or hmac.compare_digest(workspace.site_id.encode(), site_id.encode())
        if site_ok and hmac.compare_digest(credential.secret_hash.encode(), wanted.encode()):
            return WorkspaceContext(
                workspace_id=workspace.id,
                site_id=workspace.site_id,
                name=workspace.name,
                settings=WorkspaceSettings.from_stored(workspace.settings),
                credential_id=credential.id,
                account_id=workspace.account_id,
                role=credential.role,
                permissions=frozenset(credential.permissions or ()),
            )
    raise Unauthorized("invalid credentials")

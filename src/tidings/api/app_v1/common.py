"""What every App API module shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from tidings.api.auth import app_workspace
from tidings.db.database import DRY_RUN
from tidings.errors import InvalidInput
from tidings.workspaces.schemas import WorkspaceContext

Workspace = Annotated[WorkspaceContext, Depends(app_workspace)]
IdType = Annotated[str, Query(pattern="^(id|email|cio_id)$", description="How to read the identifier")]
Start = Annotated[str | None, Query(description="Cursor from a previous page's next")]
MAX_BODY = 1_000_000


def refuse_dry_run() -> None:
    """For endpoints that call a model: a model call cannot be rolled back, so a "dry" one would be a
    free one."""
    if DRY_RUN.get():
        raise InvalidInput("dry_run is not available here: it calls a model", field="dry_run")

"""App API (``/v1``, Bearer key): one module per resource."""

from fastapi import APIRouter

from tidings.api.app_v1 import customers, objects, segments, workspaces

router = APIRouter()
for module in (customers, objects, segments, workspaces):
    router.include_router(module.router)

__all__ = ["router"]

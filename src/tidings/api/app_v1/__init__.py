"""App API (``/v1``, Bearer key): one module per resource."""

from fastapi import APIRouter

from tidings.api.app_v1 import (
    ai,
    assistant,
    broadcasts,
    campaign_metrics,
    campaigns,
    content,
    customers,
    messages,
    newsletters,
    objects,
    reporting_webhooks,
    segments,
    senders,
    subscriptions,
    transactional,
    workspaces,
)

router = APIRouter()
for module in (
    ai,
    assistant,
    broadcasts,
    campaign_metrics,
    campaigns,
    content,
    customers,
    messages,
    newsletters,
    objects,
    reporting_webhooks,
    segments,
    senders,
    subscriptions,
    transactional,
    workspaces,
):
    router.include_router(module.router)
router.include_router(transactional.send_router)

__all__ = ["router"]

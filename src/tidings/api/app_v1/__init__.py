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

# Included one by one into the app (not through one parent router), so that each is indexed by its own
# paths (see tidings.api.route_index).
routers: tuple[APIRouter, ...] = (
    *(
        module.router
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
        )
    ),
    transactional.send_router,
)

__all__ = ["routers"]

"""The dashboard: server-rendered pages (Jinja templates + htmx) and their server-sent event streams.

One module per page; each has its own `APIRouter`, joined here into `router`, which `api.app` includes. Pages
authorise like the API (a manager sees their markets, a vendor its own devices) and degrade when a service they
read is not running on this instance (`ctx.services` lacks it): the page says so instead of failing.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.dashboard import (
    admin,
    alerts,
    cameras,
    device,
    fleet,
    labels,
    ledger,
    live,
    ota,
    overview,
    prices,
    reports,
    signin,
)

router = APIRouter(include_in_schema=False)
for _module in (signin, overview, fleet, device, alerts, ota, prices, labels, ledger, cameras, reports, admin, live):
    router.include_router(_module.router)

__all__ = ["router"]

"""OTA campaigns with per-wave progress bars, and pause / resume / abort.

Reads the firmware service (`ctx.services["firmware"]`: `campaigns.list()`, `campaigns.progress(id)`,
`campaigns.pause/resume/cancel(id)`); the firmware package is imported by nobody here, so the dashboard runs on an
instance without it and the page then says OTA is not running.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from accounts.permissions import Permission
from api.auth import ContextDep
from api.dashboard.viewer import ViewerDep, forbidden_page, may_see_campaigns, render
from fleet.errors import MarketFleetError

router = APIRouter()
log = logging.getLogger(__name__)
SHOWN = 50


async def _campaigns(service: Any, markets: frozenset[str] | None) -> list[Any]:
    _total, campaigns = await service.campaigns.list(limit=SHOWN, markets=markets)
    return [await service.campaigns.progress(c.id) for c in campaigns]


@router.get("/ota")
async def ota_page(request: Request, viewer: ViewerDep, ctx: ContextDep) -> Response:
    if not viewer.may(may_see_campaigns):
        return forbidden_page(request, viewer)
    service = ctx.services.get("firmware")
    context: dict[str, Any] = {"running": service is not None, "campaigns": [], "message": None, "error": False}
    if service is not None:
        context["campaigns"] = await _campaigns(service, viewer.principal.markets)
    return render(request, viewer, "ota.html", context, section="ota")


@router.post("/ota/{campaign_id}/{action}")
async def campaign_action(
    request: Request, viewer: ViewerDep, ctx: ContextDep, campaign_id: int,
    action: Literal["pause", "resume", "abort"],
) -> Response:
    if not viewer.principal.can(Permission.FIRMWARE_WRITE):
        return forbidden_page(request, viewer)
    service = ctx.services.get("firmware")
    if service is None:
        return render(request, viewer, "not_running.html", {"feature": "firmware"}, status_code=503)
    t = viewer.t
    try:
        await service.campaigns.ensure_owned(campaign_id, viewer.principal.markets)
        if action == "pause":
            await service.campaigns.pause(campaign_id, f"paused by {viewer.principal.actor}")
        elif action == "resume":
            await service.campaigns.resume(campaign_id)
        else:
            await service.campaigns.cancel(campaign_id, f"aborted by {viewer.principal.actor}")
        message, error, code = t(f"ota.done.{action}", id=campaign_id), False, 200
    except MarketFleetError as err:  # the firmware package's errors derive from the fleet hierarchy
        message, error, code = t("ota.failed", reason=str(err)), True, 409
    # The whole page: the buttons inherit `hx-select="#campaigns"` from the polling container, which picks it out.
    campaigns = await _campaigns(service, viewer.principal.markets)
    return render(request, viewer, "ota.html",
                  {"running": True, "campaigns": campaigns, "message": message, "error": error},
                  section="ota", status_code=code)

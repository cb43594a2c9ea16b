"""The overview page of one market (or of every market the viewer sees).

Devices by kind and state (online, offline, alarming = with an active alert, updating = in an OTA campaign when
the firmware service runs), active alerts by severity, today's transactions and passenger flow, and the
data-quality score. Presence counts come from one GROUP BY (queries.presence_summary); after that the page moves
them itself from /events/presence, so nothing reloads. The alert, today and quality panels are an htmx fragment
(`/overview/panels`) that the page refreshes when an alert event arrives and every 30 s.
"""

from __future__ import annotations

import time as monotonic
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.auth import ContextDep, RegistryDep
from api.dashboard import fleet
from api.dashboard.queries import alert_summary, presence_summary, updating_by_kind, visible_markets
from api.dashboard.today import today_in_market
from api.dashboard.viewer import Viewer, ViewerDep, forbidden_page, may_read_alerts, may_read_fleet, render
from api.i18n import DEFAULT_TIMEZONE, zone
from fleet.models import Market

router = APIRouter()
QUALITY_CACHE_S = 60.0
_quality_cache: dict[str, tuple[float, dict[str, Any]]] = {}


@router.get("/")
async def home(request: Request, viewer: ViewerDep, registry: RegistryDep, ctx: ContextDep) -> Response:
    # Links from the first dashboard (`/?kind=scale`) pointed at the fleet table, which then lived at `/`.
    if set(request.query_params) & fleet.FILTER_PARAMS:
        return await fleet.fleet_page(request, viewer, registry, **fleet.filters_from(request.query_params))
    return await overview_page(request, viewer, registry, ctx)


async def data_quality(market: Market) -> dict[str, Any]:
    """Share of the market's devices that reported today (BJ 6.2.2's silent devices are the misses), with the
    day's dead letters and sequence gaps; kept a minute per market."""
    from rules.reports import build_data_quality_report

    cached = _quality_cache.get(market.code)
    if cached is not None and monotonic.monotonic() - cached[0] < QUALITY_CACHE_S:
        return cached[1]
    day = datetime.now(UTC).astimezone(zone(market.timezone)).date()
    report = await build_data_quality_report(market.code, day, timezone=market.timezone)
    summary = report.summary
    devices = report.devices
    score = round(100.0 * (devices - len(report.silent)) / devices) if devices else None
    result = {"score": score, "devices": devices, "silent": len(report.silent),
              "dead_letters": summary.get("dead letters", 0), "gaps": summary.get("missing sequence numbers", 0),
              "day": day}
    _quality_cache[market.code] = (monotonic.monotonic(), result)
    return result


async def _selected(registry: RegistryDep, viewer: Viewer, market: str) -> tuple[list[Market], Market | None]:
    principal = viewer.principal
    markets = await visible_markets(registry, principal.markets, principal.vendor_id)
    by_code = {m.code: m for m in markets}
    selected = by_code.get(market)
    if selected is None and not market and len(markets) == 1:
        selected = markets[0]  # one market in scope: that is the overview
    return markets, selected


async def panels_context(ctx: ContextDep, viewer: Viewer, selected: Market | None) -> dict[str, Any]:
    principal = viewer.principal
    code = selected.code if selected else None
    alerts = None
    if viewer.runs("rules") and viewer.may(may_read_alerts):
        alerts = await alert_summary(markets=principal.markets, market=code)
    today = quality = None
    store = ctx.services.get("store")
    if selected is not None and principal.vendor_id is None:
        if store is not None:
            today = await today_in_market(store, selected.code, selected.timezone)
        quality = await data_quality(selected)
    return {"alerts": alerts, "today": today, "quality": quality, "has_store": store is not None,
            "selected": selected, "timezone": selected.timezone if selected else DEFAULT_TIMEZONE,
            "now": datetime.now(UTC)}


@router.get("/overview")
async def overview_page(
    request: Request, viewer: ViewerDep, registry: RegistryDep, ctx: ContextDep,
    market: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    if not viewer.may(may_read_fleet):
        return forbidden_page(request, viewer)
    principal = viewer.principal
    markets, selected = await _selected(registry, viewer, market)
    summary = await presence_summary(
        markets=principal.markets, vendor_id=principal.vendor_id, market=selected.code if selected else None
    )
    live_query = urlencode({"market": selected.code}) if selected else ""
    context = await panels_context(ctx, viewer, selected)
    updating = None
    if viewer.runs("firmware"):
        updating = await updating_by_kind(markets=principal.markets, vendor_id=principal.vendor_id,
                                          market=selected.code if selected else None)
    return render(
        request, viewer, "overview.html",
        {
            **context,
            "markets": markets,
            "market_names": {m.code: m.name for m in markets},
            "summary": summary,
            "updating": updating,
            "live_url": "/events/presence" + (f"?{live_query}" if live_query else ""),
            "alerts_live_url": ("/events/alerts" + (f"?{live_query}" if live_query else ""))
            if context["alerts"] is not None else "",
            "panels_url": "/overview/panels" + (f"?{live_query}" if live_query else ""),
        },
        section="overview",
    )


@router.get("/overview/panels")
async def overview_panels(
    request: Request, viewer: ViewerDep, registry: RegistryDep, ctx: ContextDep,
    market: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """The alert, today and data-quality panels alone (htmx swaps them in place)."""
    if not viewer.may(may_read_fleet):
        return forbidden_page(request, viewer)
    _markets, selected = await _selected(registry, viewer, market)
    context = await panels_context(ctx, viewer, selected)
    return render(request, viewer, "overview_panels.html", context)

"""Reports of one market: the standards scorecard (compliance/) and the daily data-quality report (BJ 6.2.2,
rules/reports.py), on screen, printable (the print style sheet drops the navigation), and as CSV downloads.

Both are computed from the registry and telemetry directly, so they work whether or not the rules engine runs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.auth import ContextDep, RegistryDep
from api.dashboard.queries import visible_markets
from api.dashboard.viewer import Viewer, ViewerDep, forbidden_page, may_read_reports, not_found_page, render
from api.i18n import zone
from compliance.export import scorecard_csv
from compliance.report import top_gains
from compliance.service import ComplianceService
from compliance.service import setup as setup_compliance
from fleet.models import Market
from rules.reports import build_data_quality_report, report_csv

router = APIRouter()


def _compliance(ctx: ContextDep) -> ComplianceService:
    service = ctx.services.get("compliance")
    if isinstance(service, ComplianceService):
        return service
    return setup_compliance(telemetry=ctx.services.get("store"))


async def _market(viewer: Viewer, registry: RegistryDep, code: str) -> tuple[list[Market], Market | None]:
    principal = viewer.principal
    markets = await visible_markets(registry, principal.markets, principal.vendor_id)
    chosen = next((m for m in markets if m.code == code), None)
    if chosen is None and not code and markets:
        chosen = markets[0]
    return markets, chosen


def _day(market: Market, day: date | None) -> date:
    # Default: yesterday in the market's time zone, the last complete day.
    return day or (datetime.now(UTC).astimezone(zone(market.timezone)).date() - timedelta(days=1))


@router.get("/reports")
async def reports_page(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep,
    market: Annotated[str, Query(max_length=32)] = "", day: date | None = None,
) -> Response:
    if not viewer.may(may_read_reports):
        return forbidden_page(request, viewer)
    markets, chosen = await _market(viewer, registry, market)
    context: dict[str, Any] = {"markets": markets, "market": chosen, "day": None, "card": None, "quality": None}
    if chosen is not None:
        report_day = _day(chosen, day)
        context.update(
            day=report_day,
            card=(card := await _compliance(ctx).scorecard(chosen.code, viewer.principal.markets)),
            gains=top_gains(card),
            quality=await build_data_quality_report(chosen.code, report_day, timezone=chosen.timezone),
            timezone=chosen.timezone,
        )
    return render(request, viewer, "reports.html", context, section="reports")


@router.get("/reports/{code}/scorecard.csv")
async def scorecard_download(request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep,
                             code: str) -> Response:
    if not viewer.may(may_read_reports):
        return forbidden_page(request, viewer)
    _markets, chosen = await _market(viewer, registry, code)
    if chosen is None or chosen.code != code:
        return not_found_page(request, viewer)
    card = await _compliance(ctx).scorecard(code, viewer.principal.markets)
    return Response(scorecard_csv(card), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{code}-scorecard.csv"'})


@router.get("/reports/{code}/data-quality.csv")
async def data_quality_download(request: Request, viewer: ViewerDep, registry: RegistryDep, code: str,
                                day: date | None = None) -> Response:
    if not viewer.may(may_read_reports):
        return forbidden_page(request, viewer)
    _markets, chosen = await _market(viewer, registry, code)
    if chosen is None or chosen.code != code:
        return not_found_page(request, viewer)
    report_day = _day(chosen, day)
    report = await build_data_quality_report(code, report_day, timezone=chosen.timezone)
    return Response(report_csv(report), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{code}-{report_day}-data-quality.csv"'})

"""A market's scale ledger per stall and day, with the abnormal orders flagged, and the scales' metrology list.

Reads the retail service like /api/v1/retail/transactions (`reports:read`) and /metrology/due (`fleet:read`),
within the viewer's markets: the day's totals per stall, the sales themselves (newest first, abnormal ones
marked with what the checks found, retail/anomalies.py), and scales whose verification is overdue or due soon,
grouped per owner (SJZ table 4). The metrology list downloads as CSV (`/ledger/{market}/metrology.csv`), one row
per scale, for the metrology office.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from accounts.permissions import Permission
from api.auth import ContextDep, RegistryDep
from api.dashboard.prices import choose_market, retail_service
from api.dashboard.viewer import ViewerDep, forbidden_page, may_read_reports, not_found_page, render
from api.i18n import zone
from fleet.models import Stall
from retail.anomalies import CODES
from retail.ledger import LedgerQuery

router = APIRouter()
SHOWN = 200


@router.get("/ledger")
async def ledger_page(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep,
    view: Literal["transactions", "metrology"] = "transactions",
    market: Annotated[str, Query(max_length=32)] = "",
    stall: Annotated[str, Query(max_length=32)] = "",
    day: date | None = None,
    flagged: bool = False,
    within_days: Annotated[int, Query(ge=0, le=366)] = 30,
) -> Response:
    principal = viewer.principal
    if not viewer.may(may_read_reports) or not principal.can(Permission.FLEET_READ):
        return forbidden_page(request, viewer)
    markets, chosen = await choose_market(viewer, registry, market)
    service = retail_service(ctx)
    local_today = datetime.now(UTC).astimezone(zone(chosen.timezone if chosen else None)).date()
    context: dict[str, Any] = {
        "markets": markets, "market": chosen, "running": service is not None, "view": view, "codes": CODES,
        "filters": {"market": chosen.code if chosen else "", "stall": stall, "day": day or local_today,
                    "flagged": flagged, "within_days": within_days},
        "timezone": chosen.timezone if chosen else None, "stalls": [], "items": [], "totals": None,
        "by_stall": [], "due": None,
    }
    if service is not None and chosen is not None:
        if view == "transactions":
            query = LedgerQuery(market=chosen.code, stall_no=stall or None, day=day or local_today,
                                flagged=True if flagged else None, markets=principal.markets)
            items, totals = await service.ledger.list(query, limit=SHOWN)
            by_day = LedgerQuery(market=chosen.code, day=day or local_today, markets=principal.markets)
            flagged_by_stall = {row["stall"]: row["count"] for row in await service.ledger.summary(
                LedgerQuery(market=chosen.code, day=day or local_today, flagged=True, markets=principal.markets),
                "stall")}
            context.update(items=items, totals=totals, flagged_by_stall=flagged_by_stall,
                           by_stall=await service.ledger.summary(by_day, "stall"),
                           stalls=await Stall.filter(market_id=chosen.code).order_by("number"))
        else:
            context["due"] = await service.scales.metrology_due(within_days, chosen.code, principal.markets)
    return render(request, viewer, "ledger.html", context, section="prices")


METROLOGY_COLUMNS = ("status", "owner", "device_id", "name", "market", "stall_no", "certificate_no", "due_on",
                     "days_left")


@router.get("/ledger/{code}/metrology.csv")
async def metrology_download(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep, code: str,
    within_days: Annotated[int, Query(ge=0, le=366)] = 30,
) -> Response:
    """The metrology list as CSV: overdue scales first, then those due within `within_days`, per owner."""
    principal = viewer.principal
    if not viewer.may(may_read_reports) or not principal.can(Permission.FLEET_READ):
        return forbidden_page(request, viewer)
    _markets, chosen = await choose_market(viewer, registry, code)
    if chosen is None or chosen.code != code:
        return not_found_page(request, viewer)
    service = retail_service(ctx)
    if service is None:
        return render(request, viewer, "not_running.html", {"feature": "retail"}, status_code=503)
    due = await service.scales.metrology_due(within_days, chosen.code, principal.markets)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(METROLOGY_COLUMNS)
    for status in ("overdue", "due_soon"):
        for group in due[status]:
            for scale in group["scales"]:
                writer.writerow([status, *(scale[c] for c in METROLOGY_COLUMNS[1:])])
    filename = f"{chosen.code}-{due['today']}-metrology.csv"
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})

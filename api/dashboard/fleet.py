"""The fleet table: search, filters, server-side paging; each row follows its device's presence live.

One page costs the registry's indexed count plus one LIMIT/OFFSET query (`Registry.list_devices`); market and
vendor names come from their (small) tables, never per row. Rows carry `data-device`, which the page's script
matches against /events/presence to turn a row red (offline) or green (online) without reloading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.auth import RegistryDep
from api.dashboard.queries import visible_markets
from api.dashboard.viewer import ViewerDep, forbidden_page, may_read_fleet, render
from api.i18n import DEFAULT_TIMEZONE
from fleet.errors import InvalidRequest
from fleet.kinds import DeviceKind
from fleet.models import DeviceStatus
from fleet.schemas import DeviceFilter

router = APIRouter()
PAGE_SIZE = 50
FILTER_PARAMS = frozenset({"kind", "market", "status", "online", "q", "label", "page"})


def filters_from(params: Mapping[str, str]) -> dict[str, Any]:
    """Query parameters of a legacy `/?kind=…` link as keyword arguments of `fleet_page`."""
    found: dict[str, Any] = {k: params[k][:100] for k in FILTER_PARAMS - {"page"} if k in params}
    page = params.get("page", "1")
    found["page"] = max(1, int(page)) if page.isdigit() else 1
    return found


def page_window(page: int, pages: int, width: int = 2) -> list[int | None]:
    """Page numbers to link: first, last, and `width` around the current one; None marks a gap."""
    shown = sorted({1, pages, *range(max(1, page - width), min(pages, page + width) + 1)})
    out: list[int | None] = []
    for number in shown:
        if out and out[-1] is not None and number - out[-1] > 1:  # type: ignore[operator]
            out.append(None)
        out.append(number)
    return out


@router.get("/fleet")
async def fleet_page(
    request: Request,
    viewer: ViewerDep,
    registry: RegistryDep,
    kind: Annotated[str, Query(max_length=32)] = "",
    market: Annotated[str, Query(max_length=32)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
    online: Annotated[str, Query(max_length=3)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
    label: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    if not viewer.may(may_read_fleet):
        return forbidden_page(request, viewer)
    principal = viewer.principal
    flt = DeviceFilter(
        kind=DeviceKind(kind) if kind in DeviceKind._value2member_map_ else None,
        market=market or None,
        status=DeviceStatus(status) if status in DeviceStatus._value2member_map_ else None,
        online={"yes": True, "no": False}.get(online),
        q=q.strip() or None,
        label=label.strip() or None,
        vendor_id=principal.vendor_id,  # a vendor sees only its own devices
    )
    error: str | None = None
    try:
        total, devices = await registry.list_devices(
            flt, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, markets=principal.markets
        )
    except InvalidRequest as err:
        error, total, devices = str(err), 0, []
    pages = max(1, -(-total // PAGE_SIZE))
    if page > pages and total:
        # A stale link past the end (devices were retired meanwhile): show the last page instead.
        page = pages
        total, devices = await registry.list_devices(
            flt, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, markets=principal.markets
        )
    markets = await visible_markets(registry, principal.markets, principal.vendor_id)
    timezones = {m.code: m.timezone for m in markets}
    vendors = {} if principal.vendor_id is not None else {v.id: v for v in await registry.list_vendors()}
    live_query = f"?market={flt.market}" if flt.market else ""
    return render(
        request, viewer, "fleet.html",
        {
            "devices": devices,
            "total": total,
            "page": page,
            "pages": pages,
            "window": page_window(page, pages),
            "kinds": list(DeviceKind),
            "markets": markets,
            "market_names": {m.code: m.name for m in markets},
            "timezones": timezones,
            "default_timezone": DEFAULT_TIMEZONE,
            "vendors": vendors,
            "statuses": list(DeviceStatus),
            "filters": {"kind": kind, "market": market, "status": status, "online": online, "q": q,
                        "label": label},
            "error": error,
            "live_url": "/events/presence" + live_query,
        },
        section="fleet",
    )

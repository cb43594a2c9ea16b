"""Products and prices of a market's stalls: search, set a price, schedule a promotion, the price history.

Everything goes through the retail service (`ctx.services["retail"]`, `retail.service.RetailService`), exactly
as `/api/v1/retail` does: the same permissions (`fleet:read` to look, `prices:write` to change), the same market
scope (another market's product answers 404), and the same effects — a price set here is recorded with source
`dashboard`, re-rendered on every bound label and sent in the stall's PLU table to its scales. The table is an
htmx fragment (`/prices/rows`); each action answers the refreshed fragment with a line saying what happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError
from tortoise.expressions import Q
from tortoise.functions import Max

from accounts.permissions import Permission
from api.auth import ContextDep, RegistryDep
from api.dashboard.actions import Rows, page_action
from api.dashboard.queries import visible_markets
from api.dashboard.viewer import Viewer, ViewerDep, forbidden_page, may_read_prices, render
from api.i18n import Translator, zone
from fleet.errors import InvalidRequest, NotFound
from fleet.models import Market, Stall
from retail.models import PriceChange, PriceSource, Product, ScheduledPrice, ScheduleState
from retail.schemas import Price
from retail.service import RetailService

router = APIRouter()
SHOWN = 200
PRICE = TypeAdapter(Price)


def retail_service(ctx: ContextDep) -> RetailService | None:
    service = ctx.services.get("retail")
    return service if isinstance(service, RetailService) else None


async def choose_market(viewer: Viewer, registry: RegistryDep, code: str) -> tuple[list[Market], Market | None]:
    """The markets the viewer may see and the one asked for (the first when none was named)."""
    principal = viewer.principal
    markets = await visible_markets(registry, principal.markets, principal.vendor_id)
    chosen = next((m for m in markets if m.code == code), None)
    if chosen is None and not code and markets:
        chosen = markets[0]
    return markets, chosen


def parse_price(raw: str, t: Translator, field: str = "price") -> Decimal:
    """A price typed by a person: a number of yuan, 0 ≤ p < 10,000, at most 2 decimals (what a label shows)."""
    text = raw.strip().replace("，", ".").replace(",", ".").removeprefix("¥").strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidRequest(t("prices.error.not_number", field=t(f"prices.{field}"), value=raw[:20])) from None
    if not value.is_finite():
        raise InvalidRequest(t("prices.error.not_number", field=t(f"prices.{field}"), value=raw[:20]))
    try:
        return PRICE.validate_python(value)
    except ValidationError:
        raise InvalidRequest(t("prices.error.range", field=t(f"prices.{field}"), value=raw[:20])) from None


def parse_local_time(raw: str, timezone: str | None, t: Translator, field: str) -> datetime:
    """A `datetime-local` value, read as wall time in the market's zone (what the stall's clock says)."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidRequest(t("prices.error.time", field=t(f"prices.{field}"), value=raw[:30])) from None
    return value.replace(tzinfo=zone(timezone)) if value.tzinfo is None else value


async def _last_changes(ids: list[int]) -> dict[int, PriceChange]:
    if not ids:
        return {}
    newest = await (PriceChange.filter(product_id__in=ids).annotate(last=Max("id")).group_by("product_id")
                    .values_list("last", flat=True))
    return {c.product_id: c for c in await PriceChange.filter(id__in=list(newest))}  # type: ignore[attr-defined]


async def _rows_context(market: Market | None, stall: str, q: str) -> dict[str, Any]:
    if market is None:
        return {"products": [], "total": 0, "last": {}, "schedules": {}, "stall_names": {}}
    query = Product.filter(market_id=market.code)
    if stall:
        query = query.filter(stall__number=stall)
    if q.strip():
        query = query.filter(Q(name__icontains=q.strip()) | Q(code__icontains=q.strip()))
    total = await query.count()
    products = await query.order_by("stall_id", "code").limit(SHOWN)
    ids = [p.id for p in products]
    schedules: dict[int, list[ScheduledPrice]] = {}
    for item in await ScheduledPrice.filter(product_id__in=ids, state=ScheduleState.PENDING).order_by("at"):
        schedules.setdefault(item.product_id, []).append(item)  # type: ignore[attr-defined]
    stalls = {s.id: s for s in await Stall.filter(market_id=market.code)}
    return {"products": products, "total": total, "last": await _last_changes(ids), "schedules": schedules,
            "stall_names": {i: s.number for i, s in stalls.items()}}


def _filters(market: Market | None, stall: str, q: str) -> dict[str, str]:
    return {"market": market.code if market else "", "stall": stall, "q": q}


@router.get("/prices")
async def prices_page(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep,
    market: Annotated[str, Query(max_length=32)] = "",
    stall: Annotated[str, Query(max_length=32)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    if not viewer.may(may_read_prices):
        return forbidden_page(request, viewer)
    markets, chosen = await choose_market(viewer, registry, market)
    stalls = await Stall.filter(market_id=chosen.code).order_by("number") if chosen else []
    context: dict[str, Any] = {
        "markets": markets, "market": chosen, "stalls": stalls, "filters": _filters(chosen, stall, q),
        "running": retail_service(ctx) is not None, "may_write": viewer.principal.can(Permission.PRICES_WRITE),
        "timezone": chosen.timezone if chosen else None, "message": None, "error": False,
    }
    context.update(await _rows_context(chosen, stall, q))
    return render(request, viewer, "prices.html", context, section="prices")


@router.get("/prices/rows")
async def price_rows(
    request: Request, viewer: ViewerDep, registry: RegistryDep,
    market: Annotated[str, Query(max_length=32)] = "",
    stall: Annotated[str, Query(max_length=32)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    if not viewer.may(may_read_prices):
        return forbidden_page(request, viewer)
    _markets, chosen = await choose_market(viewer, registry, market)
    return await _render_rows(request, viewer, chosen, stall, q, None)


async def _render_rows(request: Request, viewer: Viewer, market: Market | None, stall: str, q: str,
                       message: str | None, *, error: bool = False, status_code: int = 200) -> Response:
    context = await _rows_context(market, stall, q)
    return render(request, viewer, "price_rows.html", {
        **context, "filters": _filters(market, stall, q), "may_write": viewer.principal.can(Permission.PRICES_WRITE),
        "timezone": market.timezone if market else None, "message": message, "error": error,
    }, status_code=status_code)


Change = Callable[[RetailService, Product, Market], Awaitable[str]]


def _rows(request: Request, viewer: Viewer, registry: RegistryDep, market: str, stall: str, q: str) -> Rows:
    async def rows(message: str | None, *, error: bool = False, status_code: int = 200) -> Response:
        _markets, chosen = await choose_market(viewer, registry, market)
        return await _render_rows(request, viewer, chosen, stall, q, message, error=error, status_code=status_code)

    return rows


async def _action(request: Request, viewer: Viewer, ctx: ContextDep, registry: RegistryDep, product_id: int,
                  market: str, stall: str, q: str, change: Change) -> Response:
    """Run one change on a product the viewer may change; answer the refreshed rows, or why not."""

    async def work(service: RetailService) -> str:
        product = await service.prices.get(product_id, viewer.principal.markets)
        where = await Market.get(code=product.market_id)  # type: ignore[attr-defined]
        return await change(service, product, where)

    return await page_action(request, viewer, permission=Permission.PRICES_WRITE, service=retail_service(ctx),
                             feature="retail", work=work, rows=_rows(request, viewer, registry, market, stall, q),
                             failed="prices.failed")


@router.post("/prices/{product_id}/price")
async def set_price(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep, product_id: int,
    price: Annotated[str, Form(max_length=40)] = "",
    market: Annotated[str, Form(max_length=32)] = "",
    stall: Annotated[str, Form(max_length=32)] = "",
    q: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    t = viewer.t

    async def work(service: RetailService, product: Product, _market: Market) -> str:
        value = parse_price(price, t)
        await service.prices.update(product, {"price": value}, viewer.principal.actor, PriceSource.DASHBOARD)
        return t("prices.done.price", name=product.name, price=f"{value:.2f}")

    return await _action(request, viewer, ctx, registry, product_id, market, stall, q, work)


@router.post("/prices/{product_id}/promotion")
async def schedule_promotion(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep, product_id: int,
    promo_price: Annotated[str, Form(max_length=40)] = "",
    promo_text: Annotated[str, Form(max_length=100)] = "",
    start: Annotated[str, Form(max_length=40)] = "",
    end: Annotated[str, Form(max_length=40)] = "",
    market: Annotated[str, Form(max_length=32)] = "",
    stall: Annotated[str, Form(max_length=32)] = "",
    q: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """A promotion is two timed changes: at `start` the promotional price, at `end` (optional) back to the
    list price as it is now. Labels get both ahead of time and switch on their own clocks (docs/retail.md)."""
    t = viewer.t

    async def work(service: RetailService, product: Product, where: Market) -> str:
        promo = parse_price(promo_price, t, "promo_price")
        begins = parse_local_time(start, where.timezone, t, "start")
        ends = parse_local_time(end, where.timezone, t, "end") if end.strip() else None
        if ends is not None and ends <= begins:
            raise InvalidRequest(t("prices.error.end_before_start"))
        actor = viewer.principal.actor
        await service.prices.schedule(product, begins, product.price, promo, promo_text.strip(), actor)
        if ends is not None:
            await service.prices.schedule(product, ends, product.price, None, "", actor)
        return t("prices.done.promotion", name=product.name, price=f"{promo:.2f}")

    return await _action(request, viewer, ctx, registry, product_id, market, stall, q, work)


@router.post("/prices/schedules/{schedule_id}/cancel")
async def cancel_schedule(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep, schedule_id: int,
    market: Annotated[str, Form(max_length=32)] = "",
    stall: Annotated[str, Form(max_length=32)] = "",
    q: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    async def work(service: RetailService) -> str:
        await service.prices.cancel(schedule_id, viewer.principal.markets)
        return viewer.t("prices.done.cancelled", id=schedule_id)

    return await page_action(request, viewer, permission=Permission.PRICES_WRITE, service=retail_service(ctx),
                             feature="retail", work=work, rows=_rows(request, viewer, registry, market, stall, q),
                             failed="prices.failed")


@router.get("/prices/{product_id}/history")
async def price_history(request: Request, viewer: ViewerDep, ctx: ContextDep, product_id: int) -> Response:
    """Every price change of one product: when, from what to what, who, from where, accepted or refused."""
    if not viewer.may(may_read_prices):
        return forbidden_page(request, viewer)
    service = retail_service(ctx)
    if service is None:
        return render(request, viewer, "not_running.html", {"feature": "retail"}, status_code=503)
    try:
        product = await service.prices.get(product_id, viewer.principal.markets)
    except NotFound:
        return render(request, viewer, "price_history.html", {"product": None}, status_code=404)
    market = await Market.get_or_none(code=product.market_id)  # type: ignore[attr-defined]
    return render(request, viewer, "price_history.html", {
        "product": product, "changes": (await service.prices.history(product))[:100],
        "timezone": market.timezone if market else None,
    })

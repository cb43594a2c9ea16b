"""Retail: products and prices, timed changes, shelf labels, the scale ledger, calibration grants, metrology.

Thin: parse, authorise (one permission per operation), call `retail.service.RetailService`, shape the answer.
People scoped to markets see and change only those markets (404 elsewhere). docs/retail.md.
"""

from __future__ import annotations

import io
from datetime import date
from typing import Annotated

import segno
from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import Response

from accounts.permissions import Permission, Principal
from api.audit import audit_before
from api.auth import SESSION_COOKIE, ContextDep, FleetRead, require
from fleet.errors import InvalidRequest, NotFound
from retail.ledger import LedgerQuery
from retail.models import PriceSource, Product, ScheduledPrice, ShelfLabel
from retail.schemas import (
    BindingIn,
    CalibrationPublic,
    FlashIn,
    GrantIn,
    GrantPublic,
    IntegrityPublic,
    LabelPublic,
    MetrologyDue,
    PageIn,
    PriceChangePublic,
    PriceListIn,
    PriceListResult,
    ProductCreate,
    ProductPublic,
    ProductUpdate,
    Receipt,
    ScheduleCreate,
    SchedulePublic,
    TransactionPage,
    TransactionPublic,
)
from retail.service import RetailService

router = APIRouter(prefix="/api/v1/retail", tags=["retail"])

PricesWrite = Annotated[Principal, require(Permission.PRICES_WRITE)]
ReportsRead = Annotated[Principal, require(Permission.REPORTS_READ)]
CalibrationGrantDep = Annotated[Principal, require(Permission.CALIBRATION_GRANT)]


async def get_retail(ctx: ContextDep) -> RetailService:  # async: no thread hop per request
    service = ctx.services.get("retail")
    if not isinstance(service, RetailService):
        raise NotFound("retail is not running in this process")
    return service


RetailDep = Annotated[RetailService, Depends(get_retail)]


def _source(request: Request) -> PriceSource:
    """Changes made in the dashboard (signed in with its cookie) and through the API are told apart in the history."""
    if request.cookies.get(SESSION_COOKIE) and not request.headers.get("authorization"):
        return PriceSource.DASHBOARD
    return PriceSource.API


def _market_visible(who: Principal, market: str | None) -> None:
    if market is not None and not who.sees_market(market):
        raise NotFound(f"no market {market!r}")


# ---------------------------------------------------------------- products and prices


@router.get("/products", response_model=list[ProductPublic])
async def list_products(who: FleetRead, market: str | None = None, stall_no: str | None = None,
                        code: str | None = None) -> list[Product]:
    query = Product.all()
    if market:
        _market_visible(who, market)
        query = query.filter(market_id=market)
    elif who.markets is not None:
        query = query.filter(market_id__in=list(who.markets))
    if stall_no:
        query = query.filter(stall__number=stall_no)
    if code:
        query = query.filter(code=code)
    return await query.order_by("market_id", "code").limit(5000)


@router.post("/products", status_code=status.HTTP_201_CREATED, response_model=ProductPublic)
async def create_product(data: ProductCreate, request: Request, who: PricesWrite, retail: RetailDep) -> Product:
    _market_visible(who, data.market)
    fields = data.model_dump(exclude={"market"})
    return await retail.prices.create_product(data.market, fields, who.actor, _source(request))


@router.get("/products/{product_id}", response_model=ProductPublic)
async def get_product(product_id: int, who: FleetRead, retail: RetailDep) -> Product:
    return await retail.prices.get(product_id, who.markets)


@router.patch("/products/{product_id}", response_model=ProductPublic)
async def update_product(product_id: int, data: ProductUpdate, request: Request, who: PricesWrite,
                         retail: RetailDep) -> Product:
    """Change a product. A new price or promotion is recorded in its history and shown on its labels and scales."""
    product = await retail.prices.get(product_id, who.markets)
    audit_before(request, ProductPublic.model_validate(product))
    return await retail.prices.update(product, data.changes(), who.actor, _source(request))


@router.post("/price-lists", response_model=PriceListResult)
async def apply_price_list(data: PriceListIn, request: Request, who: PricesWrite, retail: RetailDep) -> dict[str, int]:
    """Many price changes at once (the morning's price list): the fast path for bulk updates (docs/retail.md)."""
    ids = [item.product_id for item in data.items]
    if len(set(ids)) != len(ids):
        raise InvalidRequest("items: each product may appear once in a price list")
    products = {p.id: p for p in await Product.filter(id__in=ids)}
    missing = [i for i in ids if i not in products or not who.sees_market(products[i].market_id)]  # type: ignore[attr-defined]
    if missing:
        raise NotFound(f"no products {missing[:10]}")
    items = [(products[item.product_id], item.changes()) for item in data.items]
    await retail.prices.update_many(items, who.actor, _source(request))
    labels = await ShelfLabel.filter(product_id__in=ids).count()
    return {"updated": len(items), "labels": labels}


@router.get("/products/{product_id}/prices", response_model=list[PriceChangePublic])
async def price_history(product_id: int, who: FleetRead, retail: RetailDep) -> list[object]:
    """Every price change: who, when, from where (dashboard, api, scale, schedule), accepted or refused."""
    return await retail.prices.history(await retail.prices.get(product_id, who.markets))


@router.post("/products/{product_id}/schedules", status_code=status.HTTP_201_CREATED, response_model=SchedulePublic)
async def schedule_price(product_id: int, data: ScheduleCreate, who: PricesWrite, retail: RetailDep) -> ScheduledPrice:
    """A timed change (promotion): sent to the labels ahead, so they switch at `at` even when offline then."""
    product = await retail.prices.get(product_id, who.markets)
    return await retail.prices.schedule(product, data.at, data.price, data.promo_price, data.promo_text, who.actor)


@router.get("/products/{product_id}/schedules", response_model=list[SchedulePublic])
async def list_schedules(product_id: int, who: FleetRead, retail: RetailDep) -> list[ScheduledPrice]:
    product = await retail.prices.get(product_id, who.markets)
    return await ScheduledPrice.filter(product=product).order_by("at")


@router.delete("/schedules/{schedule_id}", response_model=SchedulePublic)
async def cancel_schedule(schedule_id: int, who: PricesWrite, retail: RetailDep) -> ScheduledPrice:
    return await retail.prices.cancel(schedule_id, who.markets)


# ---------------------------------------------------------------- shelf labels


async def _label(retail: RetailService, label_id: str, who: Principal) -> ShelfLabel:
    label = await retail.labels.get(label_id)
    if not who.sees_market(label.market_id):
        raise NotFound(f"shelf label {label_id!r} is not bound and has never been seen")
    return label


@router.get("/labels", response_model=list[LabelPublic])
async def list_labels(who: FleetRead, market: str | None = None, product_id: int | None = None,
                      pending: bool | None = None) -> list[ShelfLabel]:
    query = ShelfLabel.all()
    if market:
        _market_visible(who, market)
        query = query.filter(market_id=market)
    elif who.markets is not None:
        query = query.filter(market_id__in=list(who.markets))
    if product_id is not None:
        query = query.filter(product_id=product_id)
    if pending is not None:
        query = query.filter(pending_sha256__isnull=not pending)
    return await query.order_by("device_id").limit(5000)


@router.get("/labels/{label_id}", response_model=LabelPublic)
async def get_label(label_id: str, who: FleetRead, retail: RetailDep) -> ShelfLabel:
    return await _label(retail, label_id, who)


@router.put("/labels/{label_id}/binding", response_model=LabelPublic)
async def bind_label(label_id: str, data: BindingIn, who: PricesWrite, retail: RetailDep) -> ShelfLabel:
    """Bind a label to a product; it is rendered and sent through the label's base station at once."""
    product = await retail.prices.get(data.product_id, who.markets)
    return await retail.labels.bind(label_id, product, actor=who.actor)


@router.delete("/labels/{label_id}/binding", response_model=LabelPublic)
async def unbind_label(label_id: str, who: PricesWrite, retail: RetailDep) -> ShelfLabel:
    await _label(retail, label_id, who)
    return await retail.labels.unbind(label_id)


@router.post("/labels/{label_id}/flash", status_code=status.HTTP_202_ACCEPTED)
async def flash_label(label_id: str, data: FlashIn, who: PricesWrite, retail: RetailDep) -> dict[str, str]:
    """Flash the label's LED (order picking)."""
    await _label(retail, label_id, who)
    await retail.labels.flash(label_id, data.colour, data.seconds)
    return {"status": "sent"}


@router.post("/labels/{label_id}/page", response_model=LabelPublic)
async def show_label_page(label_id: str, data: PageIn, who: PricesWrite, retail: RetailDep) -> ShelfLabel:
    await _label(retail, label_id, who)
    return await retail.labels.switch_page(label_id, data.page)


@router.get("/labels/{label_id}/image.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def label_image(label_id: str, who: FleetRead, retail: RetailDep,
                      page: Annotated[int, Query(ge=0, le=7)] = 0) -> Response:
    """What the label's page shows for its product now, as the platform renders it (for the dashboard)."""
    label = await _label(retail, label_id, who)
    if label.product_id is None:  # type: ignore[attr-defined]
        raise NotFound(f"label {label_id} is not bound to a product")
    from retail.labels import content_for

    image = retail.labels.render(label, await content_for(await label.product), page)
    buffer = io.BytesIO()
    image.to_pil().save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")


# ---------------------------------------------------------------- the ledger


def _ledger_query(who: Principal, market: str | None, stall_no: str | None, day: date | None,
                  product_code: str | None, scale_id: str | None, flagged: bool | None) -> LedgerQuery:
    return LedgerQuery(market=market, stall_no=stall_no, day=day, product_code=product_code, scale_id=scale_id,
                       flagged=flagged, markets=who.markets)


@router.get("/transactions", response_model=TransactionPage)
async def list_transactions(
    who: ReportsRead, retail: RetailDep, market: str | None = None, stall_no: str | None = None,
    day: date | None = None, product_code: str | None = None, scale_id: str | None = None, flagged: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, object]:
    """Scale transactions, newest first, with the totals of everything the filters match."""
    query = _ledger_query(who, market, stall_no, day, product_code, scale_id, flagged)
    items, totals = await retail.ledger.list(query, limit=limit, offset=offset)
    return {"items": items, "totals": totals}


@router.get("/transactions/summary")
async def transaction_summary(
    who: ReportsRead, retail: RetailDep, by: Annotated[str, Query(pattern="^(stall|product|scale|day)$")] = "stall",
    market: str | None = None, stall_no: str | None = None, day: date | None = None, product_code: str | None = None,
    scale_id: str | None = None, flagged: bool | None = None,
) -> list[dict[str, object]]:
    """Count, weight and amount grouped by stall, product, scale or day."""
    return await retail.ledger.summary(_ledger_query(who, market, stall_no, day, product_code, scale_id, flagged), by)


@router.get("/transactions/{transaction_id}", response_model=TransactionPublic)
async def get_transaction(transaction_id: int, who: ReportsRead, retail: RetailDep) -> object:
    return await retail.ledger.get(transaction_id, who.markets)


@router.get("/transactions/{transaction_id}/receipt", response_model=Receipt)
async def transaction_receipt(transaction_id: int, who: ReportsRead, retail: RetailDep) -> dict[str, object]:
    return await retail.ledger.receipt(await retail.ledger.get(transaction_id, who.markets))


@router.get("/transactions/{transaction_id}/qr.svg", response_class=Response,
            responses={200: {"content": {"image/svg+xml": {}}}})
async def transaction_qr(transaction_id: int, who: ReportsRead, retail: RetailDep) -> Response:
    """The receipt's traceability QR code."""
    row = await retail.ledger.get(transaction_id, who.markets)
    buffer = io.BytesIO()
    segno.make(retail.ledger.trace_payload(row), error="m").save(buffer, kind="svg", scale=4)
    return Response(buffer.getvalue(), media_type="image/svg+xml")


# ---------------------------------------------------------------- scales: calibration, integrity, metrology


@router.post("/scales/{scale_id}/calibration-grants", status_code=status.HTTP_201_CREATED, response_model=GrantPublic)
async def grant_calibration(scale_id: str, data: GrantIn, who: CalibrationGrantDep, retail: RetailDep) -> object:
    """Authorise one calibration of this scale within `minutes` (SZ 6.2.7); single use, sent to the scale."""
    return await retail.scales.grant_calibration(scale_id, data.minutes, who.actor, data.reason, who.markets)


@router.get("/scales/{scale_id}/calibration-grants", response_model=list[GrantPublic])
async def list_grants(scale_id: str, who: FleetRead, retail: RetailDep) -> list[object]:
    return await retail.scales.grants(scale_id, who.markets)


@router.get("/scales/{scale_id}/calibrations", response_model=list[CalibrationPublic])
async def list_calibrations(scale_id: str, who: FleetRead, retail: RetailDep) -> list[object]:
    """Every calibration the scale reported, accepted or refused (and why)."""
    return await retail.scales.calibrations(scale_id, who.markets)


@router.get("/scales/{scale_id}/integrity", response_model=IntegrityPublic)
async def scale_integrity(scale_id: str, who: FleetRead, retail: RetailDep) -> dict[str, object]:
    """Self-check and anti-cheat reports (BJ 4.2.4), newest first."""
    return await retail.scales.integrity_log(scale_id, who.markets)


@router.get("/metrology/due", response_model=MetrologyDue)
async def metrology_due(who: FleetRead, retail: RetailDep, market: str | None = None,
                        within_days: Annotated[int, Query(ge=0, le=366)] = 30) -> dict[str, object]:
    """Scales overdue for verification, or due within `within_days`, per owner (SJZ table 4 items 7–8, 15)."""
    return await retail.scales.metrology_due(within_days, market, who.markets)

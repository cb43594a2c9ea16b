"""Shelf labels of a market: binding, base station, battery and signal, online, what each label shows.

Through the retail service like /api/v1/retail/labels: bind / unbind (rendered and sent through the label's base
station at once), LED flash (order picking), and switching the page the label shows. The preview is the page as
the platform renders it for the label's panel (`LabelDispatcher.render`, the image the label is sent), with a
note whether the label has confirmed showing it. Reading needs `fleet:read`, changing `prices:write`, both within
the viewer's markets.
"""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from tortoise.expressions import Subquery

from accounts.permissions import Permission
from api.auth import ContextDep, RegistryDep
from api.dashboard.actions import page_action
from api.dashboard.prices import choose_market, retail_service
from api.dashboard.viewer import Viewer, ViewerDep, forbidden_page, may_read_prices, render
from fleet.errors import InvalidRequest, NotFound
from fleet.models import Device, Market, Stall
from retail.labels import content_for
from retail.models import Product, ShelfLabel
from retail.render import PAGES
from retail.schemas import FlashIn
from retail.service import RetailService

router = APIRouter()
SHOWN = 50
BIND_CHOICES = 1000
COLOURS = ("green", "red", "blue", "white")
Bound = Literal["", "yes", "no"]


async def _rows_context(market: Market | None, q: str, bound: str, page_no: int) -> dict[str, Any]:
    empty: dict[str, Any] = {"rows": [], "total": 0, "products": [], "page": 1, "pages": 1}
    if market is None:
        return empty
    query = Device.filter(kind="esl", market_id=market.code)
    if q.strip():
        query = query.filter(id__icontains=q.strip())
    # A subquery, not a list of ids: a market may have tens of thousands of labels.
    bound_ids = Subquery(ShelfLabel.filter(market_id=market.code, product_id__not_isnull=True).values("device_id"))
    if bound == "yes":
        query = query.filter(id__in=bound_ids)
    elif bound == "no":
        query = query.exclude(id__in=bound_ids)
    total = await query.count()
    pages = max(1, (total + SHOWN - 1) // SHOWN)
    page_no = min(max(1, page_no), pages)
    devices = await query.order_by("id").offset((page_no - 1) * SHOWN).limit(SHOWN)
    labels = {row.device_id: row for row in await ShelfLabel.filter(device_id__in=[d.id for d in devices])}
    product_ids = {row.product_id for row in labels.values() if row.product_id is not None}  # type: ignore[attr-defined]
    bound_to = {p.id: p for p in await Product.filter(id__in=list(product_ids))} if product_ids else {}
    rows = []
    for device in devices:
        label = labels.get(device.id)
        product = bound_to.get(label.product_id) if label is not None else None  # type: ignore[attr-defined]
        rows.append({"device": device, "label": label, "product": product, "state": _display_state(label)})
    stalls = {s.id: s.number for s in await Stall.filter(market_id=market.code)}
    products = [(p, stalls.get(p.stall_id, "")) for p in  # type: ignore[attr-defined]
                await Product.filter(market_id=market.code).order_by("stall_id", "code").limit(BIND_CHOICES)]
    return {"rows": rows, "total": total, "products": products, "page": page_no, "pages": pages}


def _waiting(rows: list[dict[str, Any]]) -> bool:
    """Whether a label on the page has not confirmed what it was sent (the table then refreshes itself)."""
    return any(row["state"] in ("pending", "no_route") for row in rows)


def _display_state(label: ShelfLabel | None) -> str:
    """unbound, no_route (never heard by a base station), pending (sent, not confirmed), shown (confirmed)."""
    if label is None or label.product_id is None:  # type: ignore[attr-defined]
        return "unbound"
    if not label.base_station_id:
        return "no_route"
    if label.pending_sha256:
        return "pending"
    return "shown" if str(label.page) in label.shown else "pending"


def _filters(market: Market | None, q: str, bound: str, page_no: int = 1) -> dict[str, Any]:
    return {"market": market.code if market else "", "q": q, "bound": bound, "page": page_no}


def _base(viewer: Viewer) -> dict[str, Any]:
    return {"may_write": viewer.principal.can(Permission.PRICES_WRITE), "pages_named": list(PAGES),
            "colours": COLOURS}


@router.get("/labels")
async def labels_page(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep,
    market: Annotated[str, Query(max_length=32)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
    bound: Bound = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    if not viewer.may(may_read_prices):
        return forbidden_page(request, viewer)
    markets, chosen = await choose_market(viewer, registry, market)
    context = await _rows_context(chosen, q, bound, page)
    context.update(_base(viewer), markets=markets, market=chosen, filters=_filters(chosen, q, bound, context["page"]),
                   running=retail_service(ctx) is not None, timezone=chosen.timezone if chosen else None,
                   message=None, error=False, polling=_waiting(context["rows"]))
    return render(request, viewer, "labels.html", context, section="labels")


@router.get("/labels/rows")
async def label_rows(
    request: Request, viewer: ViewerDep, registry: RegistryDep,
    market: Annotated[str, Query(max_length=32)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
    bound: Bound = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """The table alone: the page polls it while a label has not confirmed what it was sent."""
    if not viewer.may(may_read_prices):
        return forbidden_page(request, viewer)
    _markets, chosen = await choose_market(viewer, registry, market)
    return await _render_rows(request, viewer, chosen, q, bound, page, None)


async def _render_rows(request: Request, viewer: Viewer, market: Market | None, q: str, bound: str, page_no: int,
                       message: str | None, *, error: bool = False, status_code: int = 200) -> Response:
    context = await _rows_context(market, q, bound, page_no)
    context.update(_base(viewer), filters=_filters(market, q, bound, context["page"]), message=message, error=error,
                   timezone=market.timezone if market else None, polling=_waiting(context["rows"]))
    return render(request, viewer, "label_rows.html", context, status_code=status_code)


async def _visible_label(service: RetailService, viewer: Viewer, label_id: str) -> ShelfLabel:
    label = await service.labels.get(label_id)
    if not viewer.principal.sees_market(label.market_id):
        raise NotFound(f"shelf label {label_id!r} is not bound and has never been seen")
    return label


@router.post("/labels/{label_id}/{action}")
async def label_action(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep, label_id: str,
    action: Literal["bind", "unbind", "flash", "page"],
    product_id: Annotated[str, Form(max_length=20)] = "",
    colour: Annotated[str, Form(max_length=10)] = "green",
    show_page: Annotated[str, Form(max_length=4)] = "0",
    market: Annotated[str, Form(max_length=32)] = "",
    q: Annotated[str, Form(max_length=100)] = "",
    bound: Annotated[Bound, Form()] = "",
    page: Annotated[int, Form(ge=1, le=100_000)] = 1,
) -> Response:
    """One change to a label; answers the refreshed rows with a line saying what happened (or why not)."""
    t, scope = viewer.t, viewer.principal.markets

    async def work(service: RetailService) -> str:
        if action == "bind":
            if not product_id.strip().isdigit():
                raise InvalidRequest(t("labels.need_product"))
            product = await service.prices.get(int(product_id), scope)
            device = await Device.get_or_none(id=label_id)
            if device is None or not viewer.principal.sees_market(device.market_id):  # type: ignore[attr-defined]
                raise NotFound(f"no device {label_id!r}")
            await service.labels.bind(label_id, product, actor=viewer.principal.actor)
            return t("labels.done.bind", label=label_id, name=product.name)
        await _visible_label(service, viewer, label_id)
        if action == "unbind":
            await service.labels.unbind(label_id)
            return t("labels.done.unbind", label=label_id)
        if action == "flash":
            try:
                flash = FlashIn(colour=colour, seconds=30)  # type: ignore[arg-type]
            except ValidationError:
                raise InvalidRequest(t("labels.bad_colour", colour=colour[:10])) from None
            await service.labels.flash(label_id, flash.colour, flash.seconds)
            return t("labels.done.flash", label=label_id, colour=t("labels.colour." + flash.colour))
        number = int(show_page) if show_page.isdigit() and int(show_page) < len(PAGES) else -1
        if number < 0:
            raise InvalidRequest(t("labels.bad_page", page=show_page[:4]))
        await service.labels.switch_page(label_id, number)
        return t("labels.done.page", label=label_id, page=t("labels.page." + list(PAGES)[number]))

    async def rows(message: str | None, *, error: bool = False, status_code: int = 200) -> Response:
        _markets, chosen = await choose_market(viewer, registry, market)
        return await _render_rows(request, viewer, chosen, q, bound, page, message, error=error,
                                  status_code=status_code)

    return await page_action(request, viewer, permission=Permission.PRICES_WRITE, service=retail_service(ctx),
                             feature="retail", work=work, rows=rows, failed="labels.failed")


@router.get("/labels/{label_id}/image.png")
async def label_image(request: Request, viewer: ViewerDep, ctx: ContextDep, label_id: str,
                      page: Annotated[int, Query(ge=0, le=len(PAGES) - 1)] = 0,
                      v: Annotated[str, Query(max_length=100)] = "") -> Response:
    """One page of what the label is sent for its product, rendered for its panel (size and colours).

    `v` names the product's and panel's version (the table sets it): such a URL always shows the same picture,
    so the browser may keep it and the table's refreshes cost no rendering."""
    if not viewer.may(may_read_prices):
        return Response("this role may not see shelf labels", status_code=403, media_type="text/plain")
    service = retail_service(ctx)
    if service is None:
        return Response("retail is not running on this instance", status_code=503, media_type="text/plain")
    try:
        label = await _visible_label(service, viewer, label_id)
    except NotFound as err:
        return Response(str(err), status_code=404, media_type="text/plain")
    if label.product_id is None:  # type: ignore[attr-defined]
        return Response(f"label {label_id} is not bound to a product", status_code=404, media_type="text/plain")
    image = service.labels.render(label, await content_for(await label.product), page)
    buffer = io.BytesIO()
    image.to_pil().save(buffer, format="PNG")
    cache = "private, max-age=600" if v else "no-store"
    return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": cache})
